//! The drill's side of the load ([`tableroll_load`] runs it): what counts as an answer (a body
//! `generation N`), and every request added up as a success or a failure of a kind (see
//! [`tableroll_load::client`] for the kinds), in 50 ms buckets, with the first few failures
//! described.

use serde::Serialize;
use tableroll_load::{FailureKind, Outcome, Recorder};

use super::stats::Buckets;

/// The width of a throughput bucket.
pub const BUCKET_NS: u64 = 50_000_000;
/// How many different failure messages are kept as examples.
const EXAMPLES: usize = 5;

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
    /// Every reset and every connection closed before a whole response (what a server that
    /// dies does to its requests), as (started, ended) on the clock of [`tableroll_load::now_ns`].
    pub dead_peer_failures: Vec<(u64, u64)>,
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
            dead_peer_failures: Vec::new(),
        }
    }

    /// Keeps `example` if it is new and there is room.
    fn add_example(&mut self, example: String) {
        if self.examples.len() < EXAMPLES && !self.examples.contains(&example) {
            self.examples.push(example);
        }
    }

    /// Adds up the tallies of every client.
    pub fn total(tallies: Vec<Tally>) -> LoadStats {
        let mut total = LoadStats::empty();
        for Tally { stats, .. } in tallies {
            total.sent += stats.sent;
            total.succeeded += stats.succeeded;
            total.failures.merge(&stats.failures);
            total.reconnects += stats.reconnects;
            total.latencies_us.extend(stats.latencies_us);
            total.buckets.merge(&stats.buckets);
            stats.examples.into_iter().for_each(|example| total.add_example(example));
            total.dead_peer_failures.extend(stats.dead_peer_failures);
        }
        total
    }
}

/// One client's requests, counted from `origin_ns` ([`tableroll_load::now_ns`]).
pub struct Tally {
    origin_ns: u64,
    stats: LoadStats,
}

impl Tally {
    /// Nothing counted yet; buckets start at `origin_ns`.
    pub fn new(origin_ns: u64) -> Tally {
        Tally { origin_ns, stats: LoadStats::empty() }
    }
}

impl Recorder for Tally {
    type Answer = ();

    fn check(&self, body: &[u8]) -> Result<(), String> {
        body.starts_with(b"generation ").then_some(()).ok_or_else(|| "an unexpected response body".into())
    }

    fn record(&mut self, outcome: Outcome<()>) {
        let stats = &mut self.stats;
        stats.sent += 1;
        stats.reconnects += u64::from(outcome.reconnected);
        stats.buckets.record(outcome.ended_ns.saturating_sub(self.origin_ns), outcome.result.is_ok());
        match outcome.result {
            Ok(()) => {
                stats.succeeded += 1;
                stats.latencies_us.push(outcome.ended_ns.saturating_sub(outcome.started_ns) / 1000);
            }
            Err(failure) => {
                if matches!(failure.kind, FailureKind::Reset | FailureKind::Closed) {
                    stats.dead_peer_failures.push((outcome.started_ns, outcome.ended_ns));
                }
                stats.failures.add(failure.kind, 1);
                stats.add_example(failure.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tableroll_load::Failure;

    use super::*;

    fn outcome(ended_ns: u64, result: Result<(), Failure>) -> Outcome<()> {
        let now = Instant::now();
        let (started, ended, started_ns) = (now, now, ended_ns - 2000);
        Outcome { seq: 1, target: 0, started, ended, started_ns, ended_ns, reconnected: false, result }
    }

    fn failure(kind: FailureKind, message: &str) -> Result<(), Failure> {
        Err(Failure { kind, message: message.into() })
    }

    #[test]
    fn every_request_is_counted_once() {
        let mut a = Tally::new(1_000_000);
        a.record(outcome(1_010_000, Ok(())));
        a.record(outcome(BUCKET_NS + 1_000_000, failure(FailureKind::Reset, "reset")));
        let mut b = Tally::new(1_000_000);
        b.record(Outcome { reconnected: true, ..outcome(1_020_000, Ok(())) });
        b.record(outcome(1_030_000, failure(FailureKind::Reset, "reset")));
        b.record(outcome(1_040_000, failure(FailureKind::Timeout, "slow")));
        assert_eq!(a.check(b"generation 3\n"), Ok(()));
        assert!(a.check(b"hello").is_err());
        let stats = LoadStats::total(vec![a, b]);
        assert_eq!((stats.sent, stats.succeeded, stats.reconnects), (5, 2, 1));
        assert_eq!(stats.failures, FailureCounts { reset: 2, timeout: 1, ..FailureCounts::default() });
        assert_eq!(stats.sent, stats.succeeded + stats.failures.total());
        assert_eq!((stats.buckets.ok, stats.buckets.failed), (vec![2, 0], vec![2, 1]));
        assert_eq!(stats.latencies_us, [2, 2]);
        assert_eq!(stats.examples, ["reset", "slow"]);
        // The resets, not the timeout, are what a dead server could have caused.
        let mut dead_peer = stats.dead_peer_failures.clone();
        dead_peer.sort_unstable();
        assert_eq!(dead_peer, [(1_028_000, 1_030_000), (BUCKET_NS + 998_000, BUCKET_NS + 1_000_000)]);
    }
}
