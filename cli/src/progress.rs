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
                cairn_store::format_bytes(total),
                cairn_store::format_bytes((total as f64 / secs) as u64)
            );
        }
    }
}

/// Progress of a system backup or restore, where every database's items move at once: bytes,
/// rate and time per item on one line redrawn on a terminal, otherwise a log line every
/// `CAIRN_PROGRESS_SECS` seconds (default 30); nothing with `-q`.
///
/// The store reports an item's bytes from the thread that started it, so each thread's
/// current item is remembered; bytes from other threads (a restore's workers) count for the
/// item started last.
pub fn for_system(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        return Arc::new(NoProgress);
    }
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(250)
    } else {
        let secs = std::env::var("CAIRN_PROGRESS_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        Duration::from_secs(secs.max(1))
    };
    Arc::new(Multi {
        state: Mutex::new(MultiState {
            items: Vec::new(),
            current: std::collections::HashMap::new(),
            last: Instant::now(),
        }),
        started: Instant::now(),
        every,
        terminal,
    })
}

struct Phase {
    name: String,
    bytes: u64,
    /// Bytes an agent sent (a phase fed by another host), and bytes stored so far.
    sent: Option<u64>,
    stored: u64,
    start: Instant,
    end: Option<Instant>,
}

struct MultiState {
    items: Vec<Phase>,
    current: std::collections::HashMap<std::thread::ThreadId, usize>,
    last: Instant,
}

impl MultiState {
    /// The item this thread started, else the one started last.
    fn current_item(&self) -> Option<usize> {
        match self.current.get(&std::thread::current().id()) {
            Some(i) => Some(*i),
            None => self.items.len().checked_sub(1),
        }
    }
}

struct Multi {
    state: Mutex<MultiState>,
    started: Instant,
    every: Duration,
    terminal: bool,
}

impl Multi {
    fn line(&self, st: &MultiState) -> String {
        let parts: Vec<String> = st
            .items
            .iter()
            .map(|p| {
                let secs = p
                    .end
                    .unwrap_or_else(Instant::now)
                    .duration_since(p.start)
                    .as_secs_f64()
                    .max(0.001);
                let sent = p
                    .sent
                    .map(|s| format!(" sent {}", cairn_store::format_bytes(s)))
                    .unwrap_or_default();
                let stored = if p.stored > 0 || p.sent.is_some() {
                    format!(" stored {}", cairn_store::format_bytes(p.stored))
                } else {
                    String::new()
                };
                format!(
                    "{} {} {}/s{sent}{stored} {:.0}s{}",
                    p.name,
                    cairn_store::format_bytes(p.bytes),
                    cairn_store::format_bytes((p.bytes as f64 / secs) as u64),
                    secs,
                    if p.end.is_some() { " done" } else { "" }
                )
            })
            .collect();
        format!("[{:.0}s] {}", self.started.elapsed().as_secs_f64(), parts.join(" | "))
    }

    fn maybe_print(&self, st: &mut MultiState, force: bool) {
        if !force && st.last.elapsed() < self.every {
            return;
        }
        st.last = Instant::now();
        let line = self.line(st);
        if self.terminal {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("progress: {line}");
        }
    }
}

impl Progress for Multi {
    fn start(&self, what: &str, _total: Option<u64>) {
        let mut st = self.state.lock().unwrap();
        st.items.push(Phase {
            name: what.to_string(),
            bytes: 0,
            sent: None,
            stored: 0,
            start: Instant::now(),
            end: None,
        });
        let i = st.items.len() - 1;
        st.current.insert(std::thread::current().id(), i);
    }

    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().unwrap();
        if let Some(i) = st.current_item() {
            st.items[i].bytes += bytes;
            self.maybe_print(&mut st, false);
        }
    }

    fn totals(&self, sent: Option<u64>, stored: u64) {
        let mut st = self.state.lock().unwrap();
        if let Some(i) = st.current_item() {
            st.items[i].sent = sent;
            st.items[i].stored = stored;
        }
    }

    fn finish(&self) {
        let mut st = self.state.lock().unwrap();
        if let Some(i) = st.current.remove(&std::thread::current().id()) {
            st.items[i].end = Some(Instant::now());
        }
        if st.current.is_empty() && self.terminal {
            // The last item is done: clear the line for the report that follows.
            eprint!("\r\x1b[K");
        }
    }
}
