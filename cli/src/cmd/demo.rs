use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cairn_store::{
    BackupOptions, CheckOptions, Credentials, InitOptions, NewKey, ReadData, Repository, RestoreOptions,
};

use crate::common::{bytes, GlobalOpts};

/// Show Cairn end to end on a local repository: back up a sample database dump and a directory
/// twice (the second time after a small change), restore, verify and check.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Working directory for the demo (repository, sample data, restore); must not exist yet.
    #[arg(long, default_value = "cairn-demo")]
    pub dir: PathBuf,
    /// Size of the sample dump in MiB.
    #[arg(long, default_value_t = 64)]
    pub size_mib: u64,
}

/// A deterministic SQL dump: `rows` INSERT lines; rows whose number is in `changed` differ.
fn sample_dump(rows: u64, day: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((rows * 200) as usize);
    out.extend_from_slice(
        b"-- sample dump\nCREATE TABLE sbtest1 (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60));\n",
    );
    for id in 0..rows {
        // Day `day` updates about one row in two thousand.
        let version = if day > 0 && mix(id ^ day.wrapping_mul(0x9e37)).is_multiple_of(2000) {
            day
        } else {
            0
        };
        let mut x = mix(id.wrapping_mul(31).wrapping_add(version));
        let mut field = |n: usize| -> String {
            (0..n)
                .map(|i| {
                    x = mix(x + i as u64);
                    if i % 12 == 11 {
                        '-'
                    } else {
                        (b'0' + (x % 10) as u8) as char
                    }
                })
                .collect()
        };
        let (c, pad) = (field(119), field(59));
        out.extend_from_slice(
            format!(
                "INSERT INTO sbtest1 VALUES ({id},{},'{c}','{pad}');\n",
                mix(id) % 100_000
            )
            .as_bytes(),
        );
    }
    out
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write_tree(dir: &Path, day: u64) -> Result<()> {
    std::fs::create_dir_all(dir.join("certs"))?;
    std::fs::write(
        dir.join("certs/server.pem"),
        format!("-----BEGIN CERTIFICATE-----\nday {day}\n-----END CERTIFICATE-----\n"),
    )?;
    std::fs::write(dir.join("passwords.enc"), b"encrypted-password-blob")?;
    std::os::unix::fs::symlink("certs/server.pem", dir.join("current.pem")).ok();
    Ok(())
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    if a.dir.exists() {
        bail!("{} already exists; remove it or pass --dir", a.dir.display());
    }
    let repo_path = a.dir.join("repo");
    let data = a.dir.join("data");
    std::fs::create_dir_all(&data)?;
    let passphrase = crate::secrets::password().unwrap_or_else(|| "demo".into());
    let opts = cairn_store::OpenOptions {
        cache_dir: a.dir.join("cache"),
        ..g.open_options()
    };
    let key = NewKey::Passphrase {
        passphrase: passphrase.clone().into(),
        log_n: g.scrypt_log_n,
    };
    Repository::init(&repo_path.clone().into(), &key, &InitOptions::default(), opts.clone())?;
    println!(
        "1. created an encrypted repository at {} (passphrase {:?})",
        repo_path.display(),
        passphrase
    );
    let repo = Repository::open(
        &repo_path.clone().into(),
        &Credentials::Passphrase(passphrase.into()),
        opts,
    )?;

    let rows = a.size_mib * 1024 * 1024 / 205;
    let mut snaps = Vec::new();
    for day in 0..2u64 {
        let dump = sample_dump(rows, day);
        write_tree(&data.join("etc"), day)?;
        let name = format!("demo-day{day}");
        let b = repo.backup(
            BackupOptions {
                name: Some(name.clone()),
                ..Default::default()
            },
            g.progress(),
        )?;
        b.add_stream("mariadb.sql", &dump[..])?;
        b.add_tree("etc", &data.join("etc"))?;
        let s = b.commit()?;
        println!(
            "{}. backed up {:?}: {} in {:.2} s ({:.0} MiB/s), added {} to the repository ({} of {} chunks new, {} of them as deltas)",
            day + 2,
            name,
            bytes(s.size()),
            s.duration_secs,
            s.size() as f64 / 1048576.0 / s.duration_secs.max(1e-3),
            bytes(s.stats.bytes_added),
            s.stats.chunks_new,
            s.stats.chunks,
            s.stats.chunks_delta
        );
        snaps.push((s, dump));
    }

    let target = a.dir.join("restore");
    let start = std::time::Instant::now();
    repo.restore("demo-day1", &target, &RestoreOptions::default(), g.progress().as_ref())?;
    let restored = std::fs::read(target.join("mariadb.sql")).context("reading the restored dump")?;
    if restored != snaps[1].1 {
        bail!("the restored dump differs from what was backed up");
    }
    if std::fs::read(target.join("etc/certs/server.pem"))? != std::fs::read(data.join("etc/certs/server.pem"))? {
        bail!("the restored certificate differs");
    }
    println!(
        "4. restored demo-day1 into {} in {:.2} s: byte-identical",
        target.display(),
        start.elapsed().as_secs_f64()
    );
    let report = repo.check(
        &CheckOptions {
            read_data: ReadData::All,
        },
        &cairn_store::NoProgress,
    )?;
    if !report.ok() {
        bail!("check found errors: {:?}", report.errors);
    }
    println!(
        "5. check --read-data: {} blobs in {} packs verified, no errors",
        report.blobs_verified, report.packs
    );
    let (d0, d1) = (&snaps[0].0, &snaps[1].0);
    println!(
        "=> the second backup read {} but added only {} ({:.1}% of the first backup's {}).",
        bytes(d1.size()),
        bytes(d1.stats.bytes_added),
        100.0 * d1.stats.bytes_added as f64 / d0.stats.bytes_added.max(1) as f64,
        bytes(d0.stats.bytes_added)
    );
    Ok(ExitCode::SUCCESS)
}
