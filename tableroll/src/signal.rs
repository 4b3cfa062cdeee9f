//! The upgrade-complete signal: fired once, waited on by threads, polled as a future, or
//! watched as a descriptor.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::wake;

/// Fires when this process should stop serving: a newcomer took over, or the upgrader was
/// stopped. Obtained from [`Upgrader::upgrade_complete`](crate::Upgrader::upgrade_complete).
///
/// Cheap to clone; every clone sees the same signal. It can be waited on from a thread
/// ([`wait`](Self::wait), [`wait_timeout`](Self::wait_timeout)), awaited as a [`Future`] on
/// any executor (it needs no runtime), or watched in a `poll`/`epoll` loop through its
/// descriptor ([`as_fd`](Self::as_fd)), which becomes readable when the signal fires.
///
/// Each clone is a future of its own and keeps at most one waker, the one it was last polled
/// with; dropping the clone drops that waker. Creating and dropping futures in a loop (a
/// `select!` per iteration, a clone per connection) therefore keeps nothing behind.
#[derive(Debug)]
pub struct UpgradeComplete {
    inner: Arc<Inner>,
    /// This clone's slot in [`SignalState::wakers`].
    key: u64,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<SignalState>,
    cond: Condvar,
    /// A non-blocking eventfd written once when the signal fires and never read here, so
    /// that it stays readable from then on.
    fd: OwnedFd,
    /// The key of the next clone.
    next_key: AtomicU64,
}

#[derive(Debug, Default)]
struct SignalState {
    fired: bool,
    /// The waker each pending clone was last polled with, by the clone's key.
    wakers: HashMap<u64, Waker>,
}

impl UpgradeComplete {
    /// A signal that has not fired, with its eventfd (`eventfd(2)`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the eventfd cannot be created (the process or the system is out of
    /// descriptors).
    pub(crate) fn new() -> Result<Self> {
        let fd = wake::eventfd_unset().map_err(|e| Error::io("creating the upgrade-complete eventfd", e))?;
        let inner = Inner { state: Mutex::default(), cond: Condvar::new(), fd, next_key: AtomicU64::new(1) };
        Ok(UpgradeComplete { inner: Arc::new(inner), key: 0 })
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
        // After `fired` is set: whoever sees the descriptor readable sees `is_complete()`.
        self.make_readable();
        self.inner.cond.notify_all();
        wakers.into_values().for_each(Waker::wake);
    }

    /// Adds one to the eventfd's counter, which makes it readable.
    fn make_readable(&self) {
        if let Err(e) = wake::set(&self.inner.fd) {
            tracing::warn!(error = %e, "could not make the upgrade-complete descriptor readable");
        }
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

    /// How many clones have a waker registered.
    #[cfg(test)]
    fn registered_wakers(&self) -> usize {
        self.state().wakers.len()
    }
}

impl Clone for UpgradeComplete {
    /// Another handle on the same signal, and a future of its own: it gets its own waker slot.
    fn clone(&self) -> Self {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        UpgradeComplete { inner: Arc::clone(&self.inner), key }
    }
}

impl Drop for UpgradeComplete {
    fn drop(&mut self) {
        let waker = self.state().wakers.remove(&self.key);
        // Dropped with the lock released: dropping a waker can run a task's destructor, which
        // may drop another clone of this signal.
        drop(waker);
    }
}

impl Future for UpgradeComplete {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let replaced = {
            let mut state = self.state();
            if state.fired {
                return Poll::Ready(());
            }
            match state.wakers.get(&self.key) {
                Some(waker) if waker.will_wake(cx.waker()) => None,
                _ => state.wakers.insert(self.key, cx.waker().clone()),
            }
        };
        drop(replaced);
        Poll::Pending
    }
}

/// A descriptor that becomes readable (`POLLIN`) when the signal fires and stays readable:
/// for `poll(2)`, `epoll(7)` or an event loop's registration. Every clone returns the same
/// descriptor; it is an eventfd, close-on-exec and non-blocking, open as long as a clone is.
///
/// Only wait for it to be readable: reading it resets it, and it would then no longer wake
/// other waiters (the signal itself stays fired: [`is_complete`](UpgradeComplete::is_complete)
/// keeps returning `true`). Writing to it is not supported.
///
/// # Examples
///
/// An accept loop that ends when a newcomer takes over:
///
/// ```no_run
/// use rustix::event::{poll, PollFd, PollFlags};
///
/// let upgrader = tableroll::Upgrader::new("/run/myapp")?;
/// let listener = upgrader.fds().listen_tcp("http", "127.0.0.1:8080")?;
/// listener.set_nonblocking(true)?;
/// upgrader.ready()?;
/// let done = upgrader.upgrade_complete();
/// loop {
///     let mut fds = [PollFd::new(&listener, PollFlags::IN), PollFd::new(&done, PollFlags::IN)];
///     poll(&mut fds, None)?;
///     if fds[1].revents().contains(PollFlags::IN) {
///         break; // Taken over: stop accepting and drain.
///     }
///     if fds[0].revents().contains(PollFlags::IN) {
///         match listener.accept() {
///             Ok((conn, _)) => drop(conn), // Serve it.
///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
///             Err(e) => return Err(e.into()),
///         }
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsFd for UpgradeComplete {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }

    fn poll_with(fut: &mut UpgradeComplete, waker: &Waker) -> Poll<()> {
        Pin::new(fut).poll(&mut Context::from_waker(waker))
    }

    /// Whether `fd` is readable now, without waiting.
    fn readable(fd: &impl AsFd) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })).unwrap();
        fds[0].revents().contains(PollFlags::IN)
    }

    #[test]
    fn wakes_threads_and_futures() {
        let signal = UpgradeComplete::new().unwrap();
        assert!(!signal.wait_timeout(Duration::ZERO));
        let (counter, waker) = counting();
        let mut fut = signal.clone();
        assert!(poll_with(&mut fut, &waker).is_pending());
        assert!(poll_with(&mut fut, &waker).is_pending());
        let waiter = {
            let s = signal.clone();
            std::thread::spawn(move || s.wait())
        };
        signal.fire();
        waiter.join().unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one registration, one wake");
        assert!(poll_with(&mut fut, &waker).is_ready());
        assert!(signal.is_complete());
        assert!(signal.wait_timeout(Duration::ZERO));
        signal.fire();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "fires once");
    }

    #[test]
    fn every_pending_clone_is_woken_once() {
        let signal = UpgradeComplete::new().unwrap();
        let mut clones: Vec<_> = (0..3).map(|_| (signal.clone(), counting())).collect();
        for (fut, (_, waker)) in &mut clones {
            assert!(poll_with(fut, waker).is_pending());
        }
        assert_eq!(signal.registered_wakers(), 3);
        signal.fire();
        assert_eq!(signal.registered_wakers(), 0);
        for (fut, (counter, waker)) in &mut clones {
            assert_eq!(counter.0.load(Ordering::SeqCst), 1);
            assert!(poll_with(fut, waker).is_ready());
        }
        assert!(poll_with(&mut signal.clone(), &counting().1).is_ready(), "a later clone too");
    }

    #[test]
    fn dropped_futures_leave_no_waker_behind() {
        let signal = UpgradeComplete::new().unwrap();
        let (counter, waker) = counting();
        for _ in 0..100 {
            let (_, waker) = counting();
            assert!(poll_with(&mut signal.clone(), &waker).is_pending());
        }
        let mut kept = signal.clone();
        assert!(poll_with(&mut kept, &waker).is_pending());
        assert_eq!(signal.registered_wakers(), 1, "only the live future's waker is kept");
        drop(kept);
        assert_eq!(signal.registered_wakers(), 0);
        assert_eq!(Arc::strong_count(&counter), 2, "the dropped future's waker was released");
    }

    #[test]
    fn polling_with_another_waker_replaces_the_first() {
        let signal = UpgradeComplete::new().unwrap();
        let ((first, a), (second, b)) = (counting(), counting());
        let mut fut = signal.clone();
        assert!(poll_with(&mut fut, &a).is_pending());
        assert!(poll_with(&mut fut, &b).is_pending());
        assert!(poll_with(&mut fut, &b).is_pending());
        assert_eq!(signal.registered_wakers(), 1);
        assert_eq!(Arc::strong_count(&first), 2, "the first waker was released");
        signal.fire();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_descriptor_is_readable_once_fired_and_stays_readable() {
        let signal = UpgradeComplete::new().unwrap();
        let before = signal.clone();
        let flags = rustix::io::fcntl_getfd(&signal).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert!(!readable(&signal));
        assert!(!readable(&before));
        signal.fire();
        assert!(readable(&signal));
        assert!(readable(&before), "readable from a clone made before it fired");
        assert!(readable(&signal.clone()), "and from one made after");
        signal.fire();
        drop(before);
        for _ in 0..3 {
            assert!(readable(&signal), "stays readable");
        }
        assert_eq!(signal.as_fd().as_raw_fd(), signal.clone().as_fd().as_raw_fd(), "shared");
    }
}
