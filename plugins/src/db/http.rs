//! A small JSON-over-HTTP client for the databases that Cairn drives through a REST API
//! (Elasticsearch, ArangoDB).
//!
//! Built on `ureq` (blocking, run on tokio's blocking threads): HTTP/1.1 with keep-alive and
//! TLS through rustls, with an operator-given CA file for private certificate authorities.
//! Credentials are read from a file (`user:password`, mode 0600) and sent as HTTP Basic auth;
//! they never appear in URLs, command lines or messages.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::error::{Error, Result};

/// The longest answer read (snapshot listings and mappings are small; this guards memory).
const MAX_BODY: u64 = 64 << 20;

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
    /// What to call the server in messages ("elasticsearch http://127.0.0.1:9200").
    label: String,
}

/// An HTTP answer that is not 2xx: its status and the server's own reason.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Refused {
    /// The server's error type (`index_not_found_exception`), when it says.
    pub fn kind(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap_or("")
    }
}

impl Http {
    /// `base` is `http://host:port` or `https://host:port`; `timeout` bounds each whole call
    /// (snapshots and reindexing wait for completion, so it is long).
    pub fn new(
        label: &str,
        base: &str,
        credentials_file: Option<&Path>,
        cacert: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut tls = TlsConfig::builder();
        if let Some(ca) = cacert {
            let pem = std::fs::read(ca).map_err(Error::io(format!("cacert {}", ca.display())))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                crate::bail!(State, "cacert {} holds no PEM certificate", ca.display());
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        let auth = match credentials_file {
            Some(f) => Some(basic_auth(f)?),
            None => None,
        };
        Ok(Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            auth,
            label: format!("{label} {base}"),
        })
    }

    /// Sends a request; `Ok(Err(..))` is an answer that is not 2xx.
    pub async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Result<Value, Refused>> {
        let this = self.clone();
        let (method, path) = (method.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || this.blocking(&method, &path, body))
            .await
            .map_err(|e| Error::Task(format!("HTTP thread failed: {e}")))?
    }

    /// Sends a request and fails on any answer that is not 2xx, naming the call and the
    /// server's reason.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        match self.try_call(method, path, body).await? {
            Ok(v) => Ok(v),
            Err(r) => Err(self.refused(method, path, &r)),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None).await
    }

    /// The error for a refused call: method, path, status and the server's reason.
    pub fn refused(&self, method: &str, path: &str, r: &Refused) -> Error {
        let reason = r.body["error"]["reason"]
            .as_str()
            .or_else(|| r.body["errorMessage"].as_str())
            .or_else(|| r.body["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| r.body.to_string());
        let kind = r.kind();
        Error::Http(format!(
            "{}: {method} {path} answered {}: {}{reason}",
            self.label,
            r.status,
            if kind.is_empty() {
                String::new()
            } else {
                format!("{kind}: ")
            }
        ))
    }

    fn blocking(&self, method: &str, path: &str, body: Option<Value>) -> Result<Result<Value, Refused>> {
        let url = format!("{}{}", self.base, path);
        let what = |e: ureq::Error| Error::Http(format!("{}: {method} {path}: {e}", self.label));
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let sent = match body {
            Some(b) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .map_err(|e| Error::Http(format!("{}: bad request {path}: {e}", self.label)))?;
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| Error::Http(format!("{}: bad request {path}: {e}", self.label)))?;
                self.agent.run(req)
            }
        };
        let mut resp = sent.map_err(what)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(what)?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(Refused { status, body: value })
        })
    }
}

/// `Basic base64(user:password)` from the first line of a credentials file.
fn basic_auth(file: &Path) -> Result<String> {
    let (user, password) = read_credentials(file)?;
    Ok(format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))
}

/// (user, password) from the first line, `user:password`, of a credentials file.
pub fn read_credentials(file: &Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(file).map_err(Error::io(format!("credentials_file {}", file.display())))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    match line.split_once(':') {
        Some((u, p)) => Ok((u.to_string(), p.to_string())),
        None => crate::bail!(
            State,
            "credentials_file {}: the first line must be user:password",
            file.display()
        ),
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic auth header.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes one path segment (index, database and collection names).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
