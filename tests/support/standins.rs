//! Loopback stand-ins for the databases no Debian package provides (Cassandra,
//! Elasticsearch, ArangoDB): `tests/standins/*.py`, each speaking exactly the surface Cairn's
//! plugin uses. A stand-in process is killed when its handle is dropped.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/standins")
        .join(format!("{name}.py"))
        .canonicalize()
        .unwrap()
}

/// A running stand-in server.
pub struct Server {
    child: Child,
    pub dir: PathBuf,
    /// Ports it announced, in the order of `port_files`.
    pub ports: Vec<u16>,
}

impl Server {
    /// Starts `python3 <name>.py serve ARGS` (`args` must include the port file options named
    /// in `port_files`, relative to `dir`) and waits until every port file is written.
    pub fn start(name: &str, dir: &Path, args: &[String], port_files: &[&str]) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        for f in port_files {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new("python3")
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            dir: dir.to_path_buf(),
            ports: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for f in port_files {
            loop {
                if let Some(p) = std::fs::read_to_string(dir.join(f))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    s.ports.push(p);
                    break;
                }
                if let Ok(Some(status)) = s.child.try_wait() {
                    panic!(
                        "stand-in {name} exited ({status}): {}",
                        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                    );
                }
                assert!(Instant::now() < deadline, "stand-in {name} did not write {f}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        s
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crashed or lost node.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes an executable `dir/<tool>` that runs `python3 <name>.py <tool> "$@"`, so the plugin
/// calls it as it would call the real program.
pub fn tool(dir: &Path, name: &str, tool: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(tool);
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec python3 '{}' {tool} \"$@\"\n", script(name).display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A JSON HTTP call with Basic auth `user:password`; returns (status, body).
pub fn http(method: &str, url: &str, auth: Option<&str>, body: Option<&str>) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        req = req.header(
            "Authorization",
            format!("Basic {}", cairn_plugins::db::http::base64(a.as_bytes())),
        );
    }
    let mut resp = match body {
        Some(b) => {
            let ct = if b.lines().count() > 1 {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            agent
                .run(req.header("Content-Type", ct).body(b.to_string()).unwrap())
                .unwrap()
        }
        None => agent.run(req.body(()).unwrap()).unwrap(),
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, v)
}

/// `http`, asserting a 2xx answer.
pub fn http_ok(method: &str, url: &str, auth: Option<&str>, body: Option<&str>) -> serde_json::Value {
    let (s, v) = http(method, url, auth, body);
    assert!((200..300).contains(&s), "{method} {url} answered {s}: {v}");
    v
}

/// Writes a file of mode 0600 (credentials).
pub fn secret_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// 96 hex digits that differ per document, so stored data does not compress to nothing.
pub fn hex_noise(seed: u64) -> String {
    super::random_bytes(48, seed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An Elasticsearch stand-in with Basic auth, its snapshot repositories under `<env>/es-snapshots`.
pub struct Es {
    pub server: Server,
    pub auth: &'static str,
}

pub const ES_AUTH: &str = "elastic:es-secret-pw";

impl Es {
    pub fn start(env: &super::Env, data: &str) -> Es {
        let cred = env.path("es-server.cred");
        secret_file(&cred, &format!("{ES_AUTH}\n"));
        let dir = env.path(data);
        let args = [
            "--port-file".to_string(),
            dir.join("port").display().to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--path-repo".into(),
            env.path("es-snapshots").display().to_string(),
            "--credentials-file".into(),
            cred.display().to_string(),
        ];
        Es {
            server: Server::start("elasticsearch", &dir, &args, &["port"]),
            auth: ES_AUTH,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port())
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        http_ok(method, &self.url(path), Some(self.auth), body)
    }

    pub fn count(&self, index: &str) -> u64 {
        self.call("GET", &format!("/{index}/_count"), None)["count"]
            .as_u64()
            .unwrap()
    }

    pub fn bulk(&self, index: &str, from: usize, n: usize) {
        let mut body = String::new();
        for i in from..from + n {
            body.push_str(&format!(
                "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{i}\"}}}}\n{{\"n\":{i},\"msg\":\"event {i} {}\"}}\n",
                hex_noise(i as u64)
            ));
        }
        let r = self.call("POST", "/_bulk?refresh=true", Some(&body));
        assert_eq!(r["errors"], false, "{r}");
    }

    /// Index -> (count, aliases), for every index.
    pub fn state(&self) -> Vec<(String, u64, Vec<String>)> {
        let list = self.call("GET", "/_cat/indices?format=json&h=index", None);
        let mut out = Vec::new();
        for row in list.as_array().unwrap() {
            let idx = row["index"].as_str().unwrap().to_string();
            let aliases = self.call("GET", &format!("/{idx}/_alias"), None)[&idx]["aliases"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            out.push((idx.clone(), self.count(&idx), aliases));
        }
        out.sort();
        out
    }
}
