//! The upgrade-complete signal: fired once, waited on by threads or polled as a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Fires when this process should stop serving: a newcomer took over, or the upgrader was
/// stopped. Obtained from [`Upgrader::upgrade_complete`](crate::Upgrader::upgrade_complete).
///
/// Cheap to clone; every clone sees the same signal. It can be waited on from a thread
/// ([`wait`](Self::wait), [`wait_timeout`](Self::wait_timeout)) or awaited as a [`Future`] on
/// any executor: it needs no runtime.
#[derive(Debug, Clone, Default)]
pub struct UpgradeComplete {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<SignalState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct SignalState {
    fired: bool,
    wakers: Vec<Waker>,
}

impl UpgradeComplete {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, SignalState> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn fire(&self) {
        let wakers = {
            let mut state = self.state();
            if state.fired {
                return;
            }
            state.fired = true;
            std::mem::take(&mut state.wakers)
        };
        self.inner.cond.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether the signal has fired.
    pub fn is_complete(&self) -> bool {
        self.state().fired
    }

    /// Blocks until the signal fires.
    pub fn wait(&self) {
        let mut state = self.state();
        while !state.fired {
            state = self.inner.cond.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until the signal fires or `timeout` passes; returns whether it fired.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state();
        while !state.fired {
            let Some(left) = deadline.map(|d| d.saturating_duration_since(Instant::now())) else {
                state = self.inner.cond.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            if left.is_zero() {
                return false;
            }
            state = self.inner.cond.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Future for UpgradeComplete {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        if state.fired {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_threads_and_futures() {
        let signal = UpgradeComplete::new();
        assert!(!signal.wait_timeout(Duration::from_millis(1)));
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut fut = signal.clone();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        let waiter = {
            let s = signal.clone();
            std::thread::spawn(move || s.wait())
        };
        signal.fire();
        waiter.join().unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one registration, one wake");
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert!(signal.is_complete());
        assert!(signal.wait_timeout(Duration::ZERO));
        signal.fire();
    }
}
