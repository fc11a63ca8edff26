//! Progress for people: a bar on a terminal, a log line every ten seconds otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::{NoProgress, Progress};
use indicatif::{ProgressBar, ProgressStyle};

pub fn for_terminal(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bar(Mutex::new(None)))
    } else {
        Arc::new(LogLines {
            state: Mutex::new(("".into(), Instant::now(), Instant::now())),
            bytes: AtomicU64::new(0),
        })
    }
}

struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, what: &str, total: Option<u64>) {
        let pb = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let tmpl = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{spinner} {msg} {bytes} {bytes_per_sec}"
        };
        pb.set_style(ProgressStyle::with_template(tmpl).unwrap_or_else(|_| ProgressStyle::default_bar()));
        pb.set_message(what.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        *self.0.lock().unwrap() = Some(pb);
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &*self.0.lock().unwrap() {
            pb.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.0.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
}

struct LogLines {
    /// (phase, phase start, last line)
    state: Mutex<(String, Instant, Instant)>,
    bytes: AtomicU64,
}

impl Progress for LogLines {
    fn start(&self, what: &str, _total: Option<u64>) {
        *self.state.lock().unwrap() = (what.to_string(), Instant::now(), Instant::now());
        self.bytes.store(0, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut st = self.state.lock().unwrap();
        if st.2.elapsed() >= Duration::from_secs(10) {
            st.2 = Instant::now();
            let secs = st.1.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{}: {} processed, {}/s",
                st.0,
                crate::common::bytes(total),
                crate::common::bytes((total as f64 / secs) as u64)
            );
        }
    }
}
