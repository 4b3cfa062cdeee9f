//! Stop signals for the examples' servers: the first `SIGTERM` or `SIGINT` starts a drain, one
//! more during the drain ends it. Shared by the examples through `#[path]`; not an example.

use std::sync::Arc;

/// `SIGTERM` and `SIGINT`: the first one starts a drain (if an upgrade did not), one that
/// comes during a drain ends it at once, as an operator who sends it again expects.
#[derive(Clone)]
pub struct StopSignals {
    /// How many came so far.
    received: tokio::sync::watch::Receiver<u32>,
    /// How many had come when the drain started.
    drain_started: Arc<tokio::sync::watch::Sender<Option<u32>>>,
}

impl StopSignals {
    /// Starts counting the signals (on the current tokio runtime).
    pub fn listen() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut terminate, mut interrupt) =
            (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        let (count, received) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                count.send_modify(|n| *n += 1);
            }
        });
        Ok(StopSignals { received, drain_started: Arc::new(tokio::sync::watch::Sender::new(None)) })
    }

    /// The first stop signal.
    pub async fn first(&self) {
        let _ = self.received.clone().wait_for(|&n| n > 0).await;
    }

    /// Records that the drain started (once; later calls change nothing).
    pub fn draining(&self) {
        let now = *self.received.borrow();
        self.drain_started.send_if_modified(|at| {
            let first = at.is_none();
            if first {
                *at = Some(now);
            }
            first
        });
    }

    /// A stop signal that came after the drain started, or a second one in any case (should
    /// the drain never have been seen to start: a server that no longer polls its listener).
    pub async fn second(&self) {
        let (mut received, mut started) = (self.received.clone(), self.drain_started.subscribe());
        loop {
            let (n, at) = (*received.borrow_and_update(), *started.borrow_and_update());
            if n >= 2 || at.is_some_and(|at| n > at) {
                return;
            }
            let changed = tokio::select! {
                changed = received.changed() => changed,
                changed = started.changed() => changed,
            };
            if changed.is_err() {
                // The counting task is gone (the runtime shuts down): no signal will come.
                return std::future::pending().await;
            }
        }
    }
}

/// Resolves when this generation should stop accepting and drain: a newer one took over
/// (`upgrade_complete`), or an operator asked it to stop. Prints `draining pid=PID` then; given
/// to a `DrainingListener` as its drain signal.
pub async fn until_told_to_drain(upgrade_complete: tableroll::UpgradeComplete, stop: StopSignals, pid: u32) {
    tokio::select! {
        () = upgrade_complete => {}
        () = stop.first() => {}
    }
    stop.draining();
    println!("draining pid={pid}");
}
