//! The load generator: client threads that each send one request after another (closed
//! loop), and the accounting of every request as a success or a failure of a kind.
//!
//! A request counts as sent when its client starts on it (connecting, if it needs a new
//! connection), and ends as exactly one of: succeeded, or failed as
//!
//! - `refused`: the connection was refused (or the Unix socket path was missing);
//! - `reset`: the connection was reset (`ECONNRESET`, `EPIPE`);
//! - `closed`: the server closed the connection before a whole response arrived;
//! - `timeout`: a read or write waited longer than the request timeout;
//! - `bad_response`: anything but `200 OK` with a body, or a malformed response;
//! - `other`: any other error (such as running out of local ports).
//!
//! With keep-alive, a connection that the server closed between two requests (a draining
//! generation does) is replaced before the request is sent, without a failure. Only a request
//! of which not one byte was accepted is retried, and only once: after that, the client cannot
//! know whether the server saw it, so whatever goes wrong is a failure.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::Serialize;

use super::http::{parse_response_head, read_head, HeadError, REQUEST_CLOSE, REQUEST_KEEP_ALIVE};
use super::net::{Conn, Target};
use super::stats::Buckets;
use crate::sys;

/// The width of a throughput bucket.
pub const BUCKET_NS: u64 = 50_000_000;
/// How many different failure messages are kept as examples.
const EXAMPLES: usize = 5;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where the server listens.
    pub target: Target,
    /// How many client threads.
    pub clients: u32,
    /// Whether connections are reused.
    pub keep_alive: bool,
    /// The limit on each read or write.
    pub timeout: Duration,
    /// The time ([`sys::now_ns`]) buckets count from.
    pub origin_ns: u64,
}

/// The kinds of failure; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection was refused.
    Refused,
    /// The connection was reset.
    Reset,
    /// Closed before a whole response.
    Closed,
    /// A read or write timed out.
    Timeout,
    /// Not `200 OK`, or malformed.
    BadResponse,
    /// Anything else.
    Other,
}

/// A failed request: its kind, and what happened.
#[derive(Debug)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// What happened, for people.
    pub message: String,
}

impl Failure {
    fn io(stage: &str, e: &io::Error) -> Failure {
        Failure { kind: classify(stage, e), message: format!("{stage}: {e}") }
    }

    fn bad(message: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::BadResponse, message: message.into() }
    }
}

/// The kind of failure an I/O error at `stage` (`"connecting"`, or another) is.
pub fn classify(stage: &str, e: &io::Error) -> FailureKind {
    match e.kind() {
        ErrorKind::ConnectionRefused => FailureKind::Refused,
        ErrorKind::NotFound if stage == "connecting" => FailureKind::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            FailureKind::Reset
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => FailureKind::Timeout,
        ErrorKind::UnexpectedEof => FailureKind::Closed,
        _ => FailureKind::Other,
    }
}

/// Failed requests by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FailureCounts {
    /// See [`FailureKind::Refused`].
    pub refused: u64,
    /// See [`FailureKind::Reset`].
    pub reset: u64,
    /// See [`FailureKind::Closed`].
    pub closed: u64,
    /// See [`FailureKind::Timeout`].
    pub timeout: u64,
    /// See [`FailureKind::BadResponse`].
    pub bad_response: u64,
    /// See [`FailureKind::Other`].
    pub other: u64,
}

impl FailureCounts {
    fn add(&mut self, kind: FailureKind, n: u64) {
        *match kind {
            FailureKind::Refused => &mut self.refused,
            FailureKind::Reset => &mut self.reset,
            FailureKind::Closed => &mut self.closed,
            FailureKind::Timeout => &mut self.timeout,
            FailureKind::BadResponse => &mut self.bad_response,
            FailureKind::Other => &mut self.other,
        } += n;
    }

    fn merge(&mut self, other: &FailureCounts) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.closed += other.closed;
        self.timeout += other.timeout;
        self.bad_response += other.bad_response;
        self.other += other.other;
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.closed + self.timeout + self.bad_response + self.other
    }
}

/// What the clients did, added up.
#[derive(Debug, Clone)]
pub struct LoadStats {
    /// Requests started.
    pub sent: u64,
    /// Requests answered `200 OK`.
    pub succeeded: u64,
    /// Failed requests by kind.
    pub failures: FailureCounts,
    /// Kept connections found closed between requests and replaced (not failures).
    pub reconnects: u64,
    /// The time of each successful request, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Requests by the time they ended.
    pub buckets: Buckets,
    /// The first few different failures, described.
    pub examples: Vec<String>,
}

impl LoadStats {
    /// No requests.
    pub fn empty() -> LoadStats {
        LoadStats {
            sent: 0,
            succeeded: 0,
            failures: FailureCounts::default(),
            reconnects: 0,
            latencies_us: Vec::new(),
            buckets: Buckets::new(BUCKET_NS),
            examples: Vec::new(),
        }
    }

    /// Keeps `example` if it is new and there is room.
    fn add_example(&mut self, example: String) {
        if self.examples.len() < EXAMPLES && !self.examples.contains(&example) {
            self.examples.push(example);
        }
    }

    fn merge(&mut self, other: LoadStats) {
        self.sent += other.sent;
        self.succeeded += other.succeeded;
        self.failures.merge(&other.failures);
        self.reconnects += other.reconnects;
        self.latencies_us.extend(other.latencies_us);
        self.buckets.merge(&other.buckets);
        other.examples.into_iter().for_each(|example| self.add_example(example));
    }
}

/// Counters the progress display reads while the load runs.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests started.
    pub sent: AtomicU64,
    /// Requests failed.
    pub failed: AtomicU64,
}

/// Running client threads.
pub struct Load {
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
    threads: Vec<JoinHandle<LoadStats>>,
}

impl Load {
    /// Starts `config.clients` client threads.
    pub fn start(config: &LoadConfig) -> io::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::default());
        let mut load = Load { stop, live, threads: Vec::new() };
        for i in 0..config.clients {
            let client = Client::new(config.clone());
            let (stop, live) = (Arc::clone(&load.stop), Arc::clone(&load.live));
            let thread =
                thread::Builder::new().name(format!("client-{i}")).spawn(move || client.run(&stop, &live));
            match thread {
                Ok(thread) => load.threads.push(thread),
                Err(e) => {
                    load.finish();
                    return Err(e);
                }
            }
        }
        Ok(load)
    }

    /// The counters, live.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Stops the clients (each finishes its request in flight) and adds up what they did.
    pub fn finish(self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadStats::empty();
        for thread in self.threads {
            if let Ok(stats) = thread.join() {
                total.merge(stats);
            }
        }
        total
    }
}

/// One client thread's state.
struct Client {
    config: LoadConfig,
    conn: Option<Conn>,
    buf: Vec<u8>,
    stats: LoadStats,
}

impl Client {
    fn new(config: LoadConfig) -> Client {
        Client { config, conn: None, buf: Vec::with_capacity(1024), stats: LoadStats::empty() }
    }

    fn run(mut self, stop: &AtomicBool, live: &Live) -> LoadStats {
        while !stop.load(Ordering::Relaxed) {
            live.sent.fetch_add(1, Ordering::Relaxed);
            let started = sys::now_ns();
            let outcome = self.request();
            let ended = sys::now_ns();
            self.stats.sent += 1;
            self.stats.buckets.record(ended.saturating_sub(self.config.origin_ns), outcome.is_ok());
            match outcome {
                Ok(()) => {
                    self.stats.succeeded += 1;
                    self.stats.latencies_us.push(ended.saturating_sub(started) / 1000);
                }
                Err(failure) => {
                    live.failed.fetch_add(1, Ordering::Relaxed);
                    self.stats.failures.add(failure.kind, 1);
                    self.stats.add_example(failure.message);
                }
            }
        }
        self.stats
    }

    /// One request, from connecting (if needed) to the end of the response.
    fn request(&mut self) -> Result<(), Failure> {
        let request = if self.config.keep_alive { REQUEST_KEEP_ALIVE } else { REQUEST_CLOSE };
        let (mut conn, reused) = self.connection()?;
        match send(&mut conn, request) {
            Ok(()) => {}
            // Not one byte left: the server cannot have seen it, so it may go on a new one.
            Err((0, _)) if reused => {
                self.stats.reconnects += 1;
                conn = self.connect()?;
                send(&mut conn, request).map_err(|(_, e)| Failure::io("sending the request", &e))?;
            }
            Err((_, e)) => return Err(Failure::io("sending the request", &e)),
        }
        let keep = self.receive(&mut conn)?;
        if keep && self.config.keep_alive {
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// The kept connection if it is still open (and whether it is one), else a new one.
    fn connection(&mut self) -> Result<(Conn, bool), Failure> {
        match self.conn.take() {
            Some(conn) if !sys::has_input(conn.as_fd()) => Ok((conn, true)),
            Some(_closed) => {
                self.stats.reconnects += 1;
                Ok((self.connect()?, false))
            }
            None => Ok((self.connect()?, false)),
        }
    }

    fn connect(&self) -> Result<Conn, Failure> {
        Conn::connect(&self.config.target, self.config.timeout).map_err(|e| Failure::io("connecting", &e))
    }

    /// Reads one response; returns whether the connection may carry another request.
    fn receive(&mut self, conn: &mut Conn) -> Result<bool, Failure> {
        self.buf.clear();
        let end = read_head(conn, &mut self.buf).map_err(|e| match e {
            HeadError::Io(e) => Failure::io("reading the response", &e),
            HeadError::Eof { partial: false } => {
                Failure { kind: FailureKind::Closed, message: "closed without a response".into() }
            }
            HeadError::Eof { partial: true } => Failure::bad("closed in the middle of the response head"),
            HeadError::TooLarge => Failure::bad("a response head too large"),
        })?;
        let head = parse_response_head(&self.buf[..end]).map_err(Failure::bad)?;
        let whole = end + head.content_length;
        let mut chunk = [0u8; 1024];
        while self.buf.len() < whole {
            match conn.read(&mut chunk) {
                Ok(0) => return Err(Failure::bad("closed in the middle of the response body")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::io("reading the response body", &e)),
            }
        }
        if head.status != 200 {
            return Err(Failure::bad(format!("status {}", head.status)));
        }
        if self.buf.len() > whole || !self.buf[end..].starts_with(b"generation ") {
            return Err(Failure::bad("an unexpected response body"));
        }
        Ok(!head.close)
    }
}

/// Writes `request`; on failure, says how many bytes of it were accepted.
fn send(conn: &mut Conn, request: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut sent = 0;
    while sent < request.len() {
        match conn.write(&request[sent..]) {
            Ok(0) => return Err((sent, ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err((sent, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
