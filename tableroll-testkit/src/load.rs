//! Closed-loop HTTP load: a few client threads, each sending one request at a time on a new
//! connection, counting answers by the id that gave them and keeping every failure with its
//! kind and the moments its request started and ended, so that a test can tell the failures it
//! must accept (a request that was in flight when a process was killed) from the others.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::read_response;
use crate::TIMEOUT;

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// `HOST:PORT`
    Tcp(String),
    /// A Unix stream socket's path.
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "tcp:{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The connection was refused (nobody listens), or the Unix socket's path is missing.
    Refused,
    /// The connection was reset (or the pipe broke) after it was established.
    Reset,
    /// The server closed the connection without sending a single byte.
    Closed,
    /// No answer within [`TIMEOUT`].
    Timeout,
    /// An answer, but not `200` with `hello from ID`.
    BadResponse,
    /// Any other I/O error.
    Other,
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The request's number, in the order requests started (over all clients).
    pub seq: u64,
    /// The index of its target in the list given to [`Load::start`].
    pub target: usize,
    pub kind: FailureKind,
    /// Just before it connected.
    pub started: Instant,
    /// Just after it failed.
    pub ended: Instant,
    /// The error, and in which step.
    pub detail: String,
}

impl Failure {
    /// Whether the request was under way at some moment of `[from, to]`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.started <= to && self.ended >= from
    }

    /// The failure, with its times relative to `epoch`, for messages.
    pub fn describe(&self, epoch: Instant) -> String {
        let ms = |t: Instant| t.saturating_duration_since(epoch).as_secs_f64() * 1e3;
        format!(
            "#{} target {} {:?} from {:.3} ms to {:.3} ms: {}",
            self.seq,
            self.target,
            self.kind,
            ms(self.started),
            ms(self.ended),
            self.detail
        )
    }
}

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests finished (answered or failed).
    pub sent: u64,
    /// Requests answered `200 hello from ID`.
    pub ok: u64,
    /// Answers by the id that gave them.
    pub served_by: BTreeMap<String, u64>,
    /// Answers by target index.
    pub ok_by_target: Vec<u64>,
    /// Every failure, in the order they were recorded.
    pub failures: Vec<Failure>,
}

impl Report {
    /// The number of failures of each kind.
    pub fn failures_by_kind(&self) -> BTreeMap<FailureKind, usize> {
        let mut kinds = BTreeMap::new();
        for failure in &self.failures {
            *kinds.entry(failure.kind).or_insert(0) += 1;
        }
        kinds
    }

    /// One line: sent, answered, failures by kind.
    pub fn summary(&self) -> String {
        format!(
            "{} requests sent, {} answered, {} failed {:?}",
            self.sent,
            self.ok,
            self.failures.len(),
            self.failures_by_kind()
        )
    }
}

struct State {
    stop: bool,
    paused: bool,
    /// Clients in the middle of a request.
    busy: usize,
    next_seq: u64,
    report: Report,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits (at most [`TIMEOUT`]) until `done` holds; panics with `what` and the report so far.
    fn wait_until(&self, what: &str, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        let mut state = self.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let summary = state.report.summary();
                drop(state);
                panic!("load: timed out after {TIMEOUT:?} waiting for {what} ({summary})");
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Running load; [`Load::stop`] ends it and returns the [`Report`]. Dropped without `stop`, it
/// stops its clients too.
pub struct Load {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
    pub targets: Vec<Target>,
}

/// After a failed request a client waits this long before the next one, so that a listener
/// nobody holds is not hammered in a tight loop. It is pacing, not synchronisation.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_millis(1);

impl Load {
    /// Starts `clients_per_target` client threads on each of `targets`.
    pub fn start(targets: Vec<Target>, clients_per_target: usize) -> Load {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                stop: false,
                paused: false,
                busy: 0,
                next_seq: 0,
                report: Report { ok_by_target: vec![0; targets.len()], ..Report::default() },
            }),
            changed: Condvar::new(),
        });
        let mut clients = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            for _ in 0..clients_per_target {
                let (shared, target) = (shared.clone(), target.clone());
                let client = thread::Builder::new()
                    .name(format!("load-{index}"))
                    .spawn(move || client(&shared, index, &target))
                    .expect("spawning a load client");
                clients.push(client);
            }
        }
        Load { shared, clients, targets }
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        self.shared.lock().report.clone()
    }

    /// The number of answers from `id` so far.
    pub fn served_by(&self, id: &str) -> u64 {
        self.shared.lock().report.served_by.get(id).copied().unwrap_or(0)
    }

    /// Waits (at most [`TIMEOUT`]) until `id` gave at least `n` answers in all.
    #[track_caller]
    pub fn wait_served_by(&self, id: &str, n: u64) {
        let what = format!("{n} answers from {id:?}");
        self.shared.wait_until(&what, |s| s.report.served_by.get(id).copied().unwrap_or(0) >= n);
    }

    /// Waits (at most [`TIMEOUT`]) until `id` gave `n` more answers than it has now.
    #[track_caller]
    pub fn wait_more_served_by(&self, id: &str, n: u64) {
        let now = self.served_by(id);
        self.wait_served_by(id, now + n);
    }

    /// Waits (at most [`TIMEOUT`]) until every target gave at least `n` answers in all.
    #[track_caller]
    pub fn wait_answered_on_each(&self, n: u64) {
        self.shared.wait_until(&format!("{n} answers on each target"), |s| {
            s.report.ok_by_target.iter().all(|ok| *ok >= n)
        });
    }

    /// Waits (at most [`TIMEOUT`]) until `n` more requests finished, answered or not.
    #[track_caller]
    pub fn wait_more_sent(&self, n: u64) {
        let target = self.shared.lock().report.sent + n;
        self.shared.wait_until(&format!("{target} requests"), |s| s.report.sent >= target);
    }

    /// Stops sending new requests and waits until none is under way: then every connection the
    /// load opened is closed on both sides (each request reads its answer to the end of the
    /// stream, which comes only once the server closed its side).
    pub fn pause(&self) {
        self.shared.lock().paused = true;
        self.shared.changed.notify_all();
        self.shared.wait_until("the load clients to be idle", |s| s.busy == 0);
    }

    /// Sends requests again after [`Load::pause`].
    pub fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.changed.notify_all();
    }

    /// Stops the clients (each finishes its request) and returns the report.
    pub fn stop(mut self) -> Report {
        self.halt();
        self.shared.lock().report.clone()
    }

    fn halt(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for client in self.clients.drain(..) {
            let _ = client.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

fn client(shared: &Shared, index: usize, target: &Target) {
    loop {
        let seq = {
            let mut state = shared.lock();
            while state.paused && !state.stop {
                state = shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.busy += 1;
            state.next_seq += 1;
            state.next_seq
        };
        let started = Instant::now();
        let result = request(target);
        let ended = Instant::now();
        let failed = result.is_err();
        {
            let mut state = shared.lock();
            state.busy -= 1;
            let report = &mut state.report;
            report.sent += 1;
            match result {
                Ok(id) => {
                    report.ok += 1;
                    report.ok_by_target[index] += 1;
                    *report.served_by.entry(id).or_insert(0) += 1;
                }
                Err((kind, detail)) => {
                    report.failures.push(Failure { seq, target: index, kind, started, ended, detail })
                }
            }
        }
        shared.changed.notify_all();
        if failed {
            thread::sleep(BACKOFF_AFTER_FAILURE);
        }
    }
}

/// One `GET /` on a new connection; the id that answered, or how it failed.
fn request(target: &Target) -> Result<String, (FailureKind, String)> {
    match target {
        Target::Tcp(addr) => {
            let stream = TcpStream::connect(addr).map_err(|e| classify("connect", &e))?;
            stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| classify("set_read_timeout", &e))?;
            stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| classify("set_write_timeout", &e))?;
            exchange(stream)
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|e| classify("connect", &e))?;
            stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| classify("set_read_timeout", &e))?;
            stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| classify("set_write_timeout", &e))?;
            exchange(stream)
        }
    }
}

fn exchange(mut stream: impl Read + Write) -> Result<String, (FailureKind, String)> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n")
        .map_err(|e| classify("write", &e))?;
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        let (kind, detail) = classify("read", &e);
        return Err((kind, format!("{detail} after {} bytes", raw.len())));
    }
    if raw.is_empty() {
        return Err((FailureKind::Closed, "read: end of stream before any byte".into()));
    }
    let response = read_response(&raw[..]).map_err(|e| (FailureKind::BadResponse, e.to_string()))?;
    match response.body.strip_prefix("hello from ").and_then(|id| id.strip_suffix('\n')) {
        Some(id) if response.status == 200 => Ok(id.to_string()),
        _ => Err((FailureKind::BadResponse, format!("{response:?}"))),
    }
}

fn classify(step: &str, e: &io::Error) -> (FailureKind, String) {
    use io::ErrorKind::*;
    let kind = match e.kind() {
        ConnectionRefused | NotFound => FailureKind::Refused,
        ConnectionReset | BrokenPipe | ConnectionAborted => FailureKind::Reset,
        WouldBlock | TimedOut => FailureKind::Timeout,
        _ => FailureKind::Other,
    };
    (kind, format!("{step}: {e}"))
}
