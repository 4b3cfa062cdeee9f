//! Probation: after a newcomer took over, the previous owner stays a live backup for a while
//! and becomes the owner again if the newcomer dies. The public half: the setting's hook and
//! what it is told. The watch itself is in `handoff::standby`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A rollback: the owner that took over from this process died (or stopped serving) during
/// this process's probation, and this process recorded itself as the owner again. Given to the
/// hook set with [`Builder::on_rollback`](crate::Builder::on_rollback).
///
/// Without probation there is one case too: a newcomer records itself and dies before this
/// process has seen the owner file name it (within moments of its commit); this process,
/// still holding everything, then records itself again, with [`took`](Self::took) zero.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rollback {
    failed_owner: String,
    took: Duration,
}

impl Rollback {
    pub(crate) fn new(failed_owner: String, took: Duration) -> Rollback {
        Rollback { failed_owner, took }
    }

    /// The id of the owner that died, as the owner file named it (lossily decoded).
    pub fn failed_owner(&self) -> &str {
        &self.failed_owner
    }

    /// From the moment this process saw the failed owner gone to the moment the owner file
    /// named this process again.
    pub fn took(&self) -> Duration {
        self.took
    }
}

/// The application's hook, called on the upgrade thread at each rollback.
#[derive(Clone)]
pub(crate) struct RollbackHook(Arc<dyn Fn(&Rollback) + Send + Sync>);

impl RollbackHook {
    pub(crate) fn new(hook: impl Fn(&Rollback) + Send + Sync + 'static) -> RollbackHook {
        RollbackHook(Arc::new(hook))
    }
}

impl fmt::Debug for RollbackHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RollbackHook")
    }
}

/// What a process's probations have come to, shared by the upgrader and its thread.
#[derive(Debug, Default)]
pub(crate) struct Rollbacks {
    count: AtomicU64,
    hook: Option<RollbackHook>,
}

impl Rollbacks {
    pub(crate) fn new(hook: Option<RollbackHook>) -> Arc<Rollbacks> {
        Arc::new(Rollbacks { count: AtomicU64::new(0), hook })
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts a rollback, logs it and calls the hook.
    pub(crate) fn record(&self, rollback: &Rollback) {
        self.count.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            failed_owner = rollback.failed_owner,
            took_ms = crate::journal::ms(rollback.took),
            "the owner that took over from this process is gone; this process is the owner again"
        );
        if let Some(hook) = &self.hook {
            (hook.0)(rollback);
        }
    }
}
