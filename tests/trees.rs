//! Restores write only where they are told and give back trees as they were: symlinks planted
//! in the target are replaced, never followed; hard links, sparse files, extended attributes,
//! names that are not UTF-8 or hold newlines, and symlink times come back.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{stderr, Env};

/// Everything about a tree that a restore must give back, by path bytes.
fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for e in walkdir(root) {
        let md = std::fs::symlink_metadata(&e).unwrap();
        let rel = e.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let kind = if md.is_dir() {
            "dir".to_string()
        } else if md.file_type().is_symlink() {
            format!("link->{:?}", std::fs::read_link(&e).unwrap())
        } else {
            let data = std::fs::read(&e).unwrap();
            let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone()).clone();
            format!(
                "file {} bytes, hash {}, same inode as {:?}",
                data.len(),
                blake3_hex(&data),
                String::from_utf8_lossy(&first)
            )
        };
        let mut xattrs = Vec::new();
        if let Ok(names) = xattr_names(&e) {
            for n in names {
                if n.starts_with("user.") || n.starts_with("system.posix_acl") || n.starts_with("security.") {
                    xattrs.push(n);
                }
            }
        }
        let mtime = if md.is_dir() {
            0
        } else {
            md.mtime() * 1_000_000_000 + md.mtime_nsec()
        };
        out.insert(
            rel,
            format!(
                "{kind} mode {:o} uid {} gid {} mtime {mtime} xattrs {xattrs:?}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ),
        );
    }
    out
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut kids: Vec<PathBuf> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

fn blake3_hex(d: &[u8]) -> String {
    // A cheap stable digest is enough to compare contents.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in d {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn xattr_names(p: &Path) -> std::io::Result<Vec<String>> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "--absolute-names"])
        .arg(p)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.to_string())
        .collect())
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

#[test]
fn trees_come_back_as_they_were() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    support::write(&src.join("sub/a.txt"), b"alpha");
    std::fs::hard_link(src.join("sub/a.txt"), src.join("a-link.txt")).unwrap();
    std::fs::hard_link(src.join("sub/a.txt"), src.join("sub/deeper/a-again")).unwrap();
    // A sparse file: 64 MiB apparent, a few KiB of data.
    let sparse = src.join("sparse.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    sh(&format!(
        "printf 'middle' | dd of={} bs=1 seek=33554432 conv=notrunc status=none",
        sparse.display()
    ));
    // Names that are not UTF-8, and one with a newline.
    let weird = src.join(OsStr::from_bytes(b"caf\xe9-latin1.txt"));
    std::fs::write(&weird, b"latin-1 name").unwrap();
    std::fs::write(src.join("two\nlines.txt"), b"newline name").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"target-\xff"), src.join("odd-link")).unwrap();
    std::os::unix::fs::symlink("sub/a.txt", src.join("good-link")).unwrap();
    // Extended attributes and a POSIX ACL, where the tools exist.
    let have_attr = Command::new("setfattr").arg("--version").output().is_ok();
    let have_acl = Command::new("setfacl").arg("--version").output().is_ok();
    if have_attr {
        sh(&format!(
            "setfattr -n user.note -v 'kept' {}",
            src.join("sub/a.txt").display()
        ));
        sh(&format!(
            "setfattr -n user.dir -v 'on a dir' {}",
            src.join("sub").display()
        ));
    }
    if have_attr && support::is_root() {
        // The security namespace (where SELinux keeps its labels) is root's to set.
        sh(&format!(
            "setfattr -n security.cairn-test -v 'label' {}",
            src.join("sub/a.txt").display()
        ));
    }
    if have_acl {
        sh(&format!("setfacl -m u:nobody:r {}", src.join("sub/deeper").display()));
        sh(&format!("setfacl -d -m u:nobody:rx {}", src.join("sub").display()));
    }
    std::fs::set_permissions(
        src.join("sub/a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    sh(&format!(
        "touch -h -d '2020-02-03 04:05:06.123456789' {}",
        src.join("good-link").display()
    ));
    sh(&format!("touch -d '2021-01-01 00:00:00.5' {}", weird.display()));

    env.ok(&["backup", "--name", "t", src.to_str().unwrap()]);
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", target.to_str().unwrap()]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    let (want, got) = (describe(&src), describe(&restored));
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{:?}", String::from_utf8_lossy(k));
    }
    assert_eq!(want.len(), got.len());
    if have_attr && support::is_root() {
        let attrs = xattr_names(&restored.join("sub/a.txt")).unwrap();
        assert!(attrs.iter().any(|a| a.starts_with("security.cairn-test=")), "{attrs:?}");
    }
    let blocks = std::fs::metadata(restored.join("sparse.img")).unwrap().blocks();
    assert!(blocks < 1024, "the sparse file was restored with {blocks} blocks");
    assert!(
        have_attr || std::env::var("CI").is_err(),
        "CI must have setfattr (package attr)"
    );
    assert!(
        have_acl || std::env::var("CI").is_err(),
        "CI must have setfacl (package acl)"
    );
    // A second restore over the first, forced, gives the same tree.
    env.ok(&["restore", "t", "--target", target.to_str().unwrap(), "--force"]);
    assert_eq!(describe(&restored), want);
}

/// A target with symlinks planted where the restore will write, pointing outside it.
#[test]
fn a_restore_never_writes_outside_its_target() {
    let env = Env::new();
    let src = env.path("src");
    support::write(&src.join("dir/file.txt"), b"from the snapshot");
    support::write(&src.join("top.txt"), b"top");
    std::fs::set_permissions(src.join("top.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    env.ok(&["backup", "--name", "t", src.to_str().unwrap()]);
    env.backup_bytes("s", "streams/one", b"stream data");

    let outside = env.path("outside");
    support::write(&outside.join("victim.txt"), b"must not change");
    std::fs::set_permissions(
        outside.join("victim.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let before = describe(&outside);

    let target = env.path("target");
    let root = target.join(src.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&root).unwrap();
    // A directory of the tree is a symlink out; a file of the tree is a symlink to a victim.
    std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.txt"), root.join("top.txt")).unwrap();
    env.ok(&["restore", "t", "--target", target.to_str().unwrap(), "--force"]);
    assert_eq!(describe(&outside), before, "the restore wrote outside its target");
    assert!(root.join("dir").symlink_metadata().unwrap().is_dir());
    assert_eq!(std::fs::read(root.join("dir/file.txt")).unwrap(), b"from the snapshot");
    assert_eq!(std::fs::read(root.join("top.txt")).unwrap(), b"top");

    // A stream item whose parent directory in the target is a symlink out.
    let t2 = env.path("target2");
    std::fs::create_dir_all(&t2).unwrap();
    std::os::unix::fs::symlink(&outside, t2.join("streams")).unwrap();
    env.ok(&["restore", "s", "--target", t2.to_str().unwrap(), "--force"]);
    assert_eq!(describe(&outside), before, "a stream was written outside its target");
    assert_eq!(std::fs::read(t2.join("streams/one")).unwrap(), b"stream data");
}

#[test]
fn item_names_that_could_escape_are_refused_at_backup() {
    let env = Env::new();
    for bad in ["../../x", "/abs", "a/../b", "a//b", "./a"] {
        let o = env
            .cmd(&["backup", "--name", &format!("n{}", bad.len()), "--stdin", bad])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{bad}");
        assert!(stderr(&o).contains("relative path"), "{bad}: {}", stderr(&o));
    }
    // A path that climbs is named by its absolute form.
    let src = env.path("src");
    support::write(&src.join("f"), b"x");
    let o = env
        .cmd(&["backup", "--name", "climb", "../src"])
        .current_dir(env.path("src"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let show = env.ok(&["show", "climb"]);
    assert!(
        show.contains(src.strip_prefix("/").unwrap().to_str().unwrap()),
        "{show}"
    );
}

/// The files plugin restores a certificate directory in which a symlink to elsewhere was planted.
#[test]
fn a_system_restore_of_files_does_not_follow_planted_symlinks() {
    let env = Env::new();
    let certs = env.path("certs");
    support::write(&certs.join("server.pem"), b"CERT");
    support::write(&certs.join("private/key.pem"), b"KEY");
    let cfg = env.path("cairn.toml");
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\ncache_dir = \"{}\"\nstate_dir = \"{}\"\nwork_dir = \"{}\"\n\
             [files.certificates]\npaths = [\"{}\"]\n",
            env.repo.display(),
            env.path("password").display(),
            env.cache.display(),
            env.path("state").display(),
            env.dir.path().display(),
            certs.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    env.ok(&["--config", c, "backup", "--system", "--name", "sys"]);
    let outside = env.path("elsewhere");
    support::write(&outside.join("key.pem"), b"not yours");
    let before = describe(&outside);
    std::fs::remove_dir_all(certs.join("private")).unwrap();
    std::os::unix::fs::symlink(&outside, certs.join("private")).unwrap();
    std::fs::remove_file(certs.join("server.pem")).unwrap();
    std::os::unix::fs::symlink(outside.join("key.pem"), certs.join("server.pem")).unwrap();
    let o = env
        .cmd(&["--config", c, "restore", "sys", "--no-safety-snapshot"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        describe(&outside),
        before,
        "the restore wrote outside the certificate directory"
    );
    assert_eq!(std::fs::read(certs.join("private/key.pem")).unwrap(), b"KEY");
    assert_eq!(std::fs::read(certs.join("server.pem")).unwrap(), b"CERT");
}
