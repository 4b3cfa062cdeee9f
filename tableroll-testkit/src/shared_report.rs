//! A load's report, shared between its clients (which record into it) and the test (which reads
//! it and waits on it): the one copy behind [`crate::load`] and [`crate::async_load`].

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::TIMEOUT;

/// A report that can say where it stands, for the message of a wait that timed out.
pub(crate) trait Summary {
    fn summary(&self) -> String;
}

/// The report and the condition its waiters wait on.
pub(crate) struct SharedReport<R> {
    report: Mutex<R>,
    changed: Condvar,
}

impl<R: Summary> SharedReport<R> {
    pub(crate) fn new(report: R) -> SharedReport<R> {
        SharedReport { report: Mutex::new(report), changed: Condvar::new() }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, R> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the report with `record`, then wakes the waiters.
    pub(crate) fn record(&self, record: impl FnOnce(&mut R)) {
        record(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits (at most [`TIMEOUT`]) until `done` holds; panics with `what` and the report so far.
    pub(crate) fn wait_until(&self, what: &str, done: impl Fn(&R) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        let mut report = self.lock();
        while !done(&report) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let summary = report.summary();
                drop(report);
                panic!("load: timed out after {TIMEOUT:?} waiting for {what} ({summary})");
            }
            report = self.changed.wait_timeout(report, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}
