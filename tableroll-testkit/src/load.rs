//! Closed-loop HTTP load ([`tableroll_load`]): a few client threads, each sending one request at
//! a time on a new connection (or, started with [`Load::start_keep_alive`], on a kept one),
//! counting answers by the id that gave them and keeping every
//! failure with its kind and the moments its request started and ended, so that a test can tell
//! the failures it must accept (a request that was in flight when a process was killed) from
//! the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use tableroll_load::{FailureKind, Target};
use tableroll_load::{LoadConfig, Outcome, Recorder};

use crate::shared_report::{SharedReport, Summary};
use crate::TIMEOUT;

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

impl Summary for Report {
    fn summary(&self) -> String {
        Report::summary(self)
    }
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

    /// Checks that every failure is a request cut by the death of a process killed at
    /// `killed` and seen gone at `gone`: reset or closed early, and under way in between;
    /// never refused, timed out or answered wrongly.
    #[track_caller]
    pub fn assert_only_losses_inside(&self, killed: Instant, gone: Instant) {
        for failure in &self.failures {
            assert!(
                matches!(failure.kind, FailureKind::Reset | FailureKind::Closed)
                    && failure.overlaps(killed, gone),
                "a failure beyond the requests inside the killed process: {} ({})",
                failure.describe(killed),
                self.summary()
            );
        }
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

/// A client's recorder: every request into the shared report, an answer by the id that gave it.
struct Answers {
    shared: Arc<SharedReport<Report>>,
}

impl Recorder for Answers {
    type Answer = String;

    /// `hello from ID`.
    fn check(&self, body: &[u8]) -> Result<String, String> {
        let body = String::from_utf8_lossy(body);
        match body.strip_prefix("hello from ").and_then(|id| id.strip_suffix('\n')) {
            Some(id) => Ok(id.to_string()),
            None => Err(format!("an unexpected body {body:?}")),
        }
    }

    fn record(&mut self, outcome: Outcome<String>) {
        let Outcome { seq, target, started, ended, result, .. } = outcome;
        self.shared.record(|report| {
            report.sent += 1;
            match result {
                Ok(id) => {
                    report.ok += 1;
                    report.ok_by_target[target] += 1;
                    *report.served_by.entry(id).or_insert(0) += 1;
                }
                Err(failure) => {
                    let (kind, detail) = (failure.kind, failure.message);
                    report.failures.push(Failure { seq, target, kind, started, ended, detail });
                }
            }
        });
    }
}

/// Running load; [`Load::stop`] ends it and returns the [`Report`]. Dropped without `stop`, it
/// stops its clients too.
pub struct Load {
    load: tableroll_load::Load<Answers>,
    shared: Arc<SharedReport<Report>>,
    pub targets: Vec<Target>,
}

/// After a failed request a client waits this long before the next one, so that a listener
/// nobody holds is not hammered in a tight loop. It is pacing, not synchronisation.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_millis(1);

impl Load {
    /// Starts `clients_per_target` client threads on each of `targets`, each request on a new
    /// connection.
    pub fn start(targets: Vec<Target>, clients_per_target: usize) -> Load {
        Load::start_with(targets, clients_per_target, false)
    }

    /// Starts `clients_per_target` client threads on each of `targets`, each keeping its
    /// HTTP/1.1 connection for the next request until the server closes it. A kept connection
    /// found closed before a request is replaced (not a failure); one closed after the request
    /// was sent is a failure.
    pub fn start_keep_alive(targets: Vec<Target>, clients_per_target: usize) -> Load {
        Load::start_with(targets, clients_per_target, true)
    }

    fn start_with(targets: Vec<Target>, clients_per_target: usize, keep_alive: bool) -> Load {
        let report = Report { ok_by_target: vec![0; targets.len()], ..Report::default() };
        let shared = Arc::new(SharedReport::new(report));
        let mut config = LoadConfig::new(targets.clone(), clients_per_target, TIMEOUT);
        config.pause_after_failure = BACKOFF_AFTER_FAILURE;
        config.keep_alive = keep_alive;
        let load = tableroll_load::Load::start(&config, |_| Answers { shared: Arc::clone(&shared) })
            .expect("spawning a load client");
        Load { load, shared, targets }
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        self.shared.lock().clone()
    }

    /// The number of answers from `id` so far.
    pub fn served_by(&self, id: &str) -> u64 {
        self.shared.lock().served_by.get(id).copied().unwrap_or(0)
    }

    /// Waits (at most [`TIMEOUT`]) until `id` gave at least `n` answers in all.
    #[track_caller]
    pub fn wait_served_by(&self, id: &str, n: u64) {
        let what = format!("{n} answers from {id:?}");
        self.shared.wait_until(&what, |r| r.served_by.get(id).copied().unwrap_or(0) >= n);
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
        self.shared
            .wait_until(&format!("{n} answers on each target"), |r| r.ok_by_target.iter().all(|ok| *ok >= n));
    }

    /// Waits (at most [`TIMEOUT`]) until `n` more requests finished, answered or not.
    #[track_caller]
    pub fn wait_more_sent(&self, n: u64) {
        let target = self.shared.lock().sent + n;
        self.shared.wait_until(&format!("{target} requests"), |r| r.sent >= target);
    }

    /// Stops sending new requests and waits until none is under way: then, unless the load
    /// keeps its connections alive, every connection it opened is closed on both sides (each
    /// request reads its answer to the end of the stream, which comes only once the server
    /// closed its side).
    pub fn pause(&self) {
        if !self.load.pause(TIMEOUT) {
            let summary = self.shared.lock().summary();
            panic!("load: timed out after {TIMEOUT:?} waiting for the load clients to be idle ({summary})");
        }
    }

    /// Sends requests again after [`Load::pause`].
    pub fn resume(&self) {
        self.load.resume();
    }

    /// Stops the clients (each finishes its request) and returns the report.
    pub fn stop(self) -> Report {
        self.load.stop();
        self.shared.lock().clone()
    }
}
