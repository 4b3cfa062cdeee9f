//! The demo server's accepting and answering: one acceptor thread that waits on the listener
//! and the wake pipe together, and one thread per connection.
//!
//! Draining: once the wake pipe fires, the acceptor stops (a connection still queued is left to
//! the newer generation, which shares the listening socket) and every connection answers the
//! request it is reading with `Connection: close`. A kept-alive connection that is idle gets
//! [`IDLE_GRACE`] to send its next request (answered, then closed), after which it is closed
//! unasked; a client must be ready for that between two requests.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tableroll::Upgrader;
use tableroll_load::http::{read_head, request_wants_close, write_response};
use tableroll_load::{Conn, Listener};

use super::args::BreakMode;
use crate::sys::{self, WakePipe};

/// How long a draining server waits for the next request on an idle kept-alive connection.
const IDLE_GRACE: Duration = Duration::from_millis(500);
/// How long a connection may take to send a request head, or to take a response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the drain waits for requests in flight before giving up on them.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Every how many connections a broken server misbehaves on one.
const BREAK_EVERY: u64 = 4;

/// The connections of one generation.
#[derive(Clone)]
pub struct Handlers {
    shared: Arc<Shared>,
}

struct Shared {
    body: String,
    break_mode: Option<BreakMode>,
    /// Readable once the server drains.
    wake: OwnedFd,
    accepted: AtomicU64,
    served: AtomicU64,
    in_flight: Mutex<usize>,
    idle: Condvar,
}

impl Handlers {
    /// Handlers for `generation`, draining when `wake` fires.
    pub fn new(generation: u32, break_mode: Option<BreakMode>, wake: &WakePipe) -> io::Result<Handlers> {
        let shared = Shared {
            body: format!("generation {generation}\n"),
            break_mode,
            wake: wake.read.try_clone()?,
            accepted: AtomicU64::new(0),
            served: AtomicU64::new(0),
            in_flight: Mutex::new(0),
            idle: Condvar::new(),
        };
        Ok(Handlers { shared: Arc::new(shared) })
    }

    /// Starts the acceptor thread. It ends when the wake pipe fires; if accepting fails for
    /// good it stops `upgrader` too, so that the generation winds down and reports the error.
    pub fn accept_on(
        &self,
        listener: Listener,
        upgrader: Arc<Upgrader>,
    ) -> io::Result<JoinHandle<io::Result<()>>> {
        let handlers = self.clone();
        thread::Builder::new().name("acceptor".into()).spawn(move || {
            let result = handlers.accept_loop(&listener);
            if result.is_err() {
                upgrader.stop();
            }
            result
        })
    }

    fn accept_loop(&self, listener: &Listener) -> io::Result<()> {
        loop {
            let ready = sys::wait_readable(&[listener.as_fd(), self.shared.wake.as_fd()], None)?;
            if ready[1] {
                return Ok(());
            }
            match self.accept(listener) {
                Ok((conn, guard)) => self.spawn(conn, guard),
                // Taken by the other generation first, or given up by the client.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::ConnectionAborted) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Accepts one connection and counts it in flight, both under the count's lock, so that
    /// [`open_connections`](Self::open_connections) never misses one already accepted.
    fn accept(&self, listener: &Listener) -> io::Result<(Conn, InFlight)> {
        let mut in_flight = self.shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = listener.accept()?;
        *in_flight += 1;
        Ok((conn, InFlight { shared: Arc::clone(&self.shared) }))
    }

    fn spawn(&self, conn: Conn, guard: InFlight) {
        let number = self.shared.accepted.fetch_add(1, Ordering::Relaxed);
        let misbehave = self.shared.break_mode.filter(|_| number % BREAK_EVERY == BREAK_EVERY - 1);
        let spawned = thread::Builder::new().name("connection".into()).spawn(move || {
            let _ = guard.shared.answer(conn, misbehave);
            drop(guard);
        });
        if let Err(e) = spawned {
            eprintln!("tableroll drill-server: cannot start a connection thread: {e}");
        }
    }

    /// The number of connections open (accepted and not yet closed), locked: while the guard
    /// lives, no connection is accepted and none ends, so the number stays true.
    pub fn open_connections(&self) -> MutexGuard<'_, usize> {
        self.shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the server starts draining within `timeout`.
    pub fn drains_within(&self, timeout: Duration) -> io::Result<bool> {
        Ok(sys::wait_readable(&[self.shared.wake.as_fd()], Some(timeout))?[0])
    }

    /// Waits (at most [`DRAIN_LIMIT`]) for every connection to finish; returns the number of
    /// requests answered.
    pub fn drain(&self) -> u64 {
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut in_flight = self.shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_flight > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            in_flight =
                self.shared.idle.wait_timeout(in_flight, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        self.shared.served.load(Ordering::Relaxed)
    }
}

/// Counts a connection in flight until dropped.
struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        *in_flight -= 1;
        if *in_flight == 0 {
            self.shared.idle.notify_all();
        }
    }
}

impl Shared {
    /// Answers requests on `conn` until the client or the drain closes it.
    fn answer(&self, mut conn: Conn, misbehave: Option<BreakMode>) -> io::Result<()> {
        conn.set_timeouts(Some(REQUEST_TIMEOUT))?;
        let mut buf = Vec::new();
        let mut draining = false;
        loop {
            if buf.is_empty() && !self.next_request_comes(&conn, &mut draining)? {
                return Ok(());
            }
            let Ok(end) = read_head(&mut conn, &mut buf) else { return Ok(()) };
            let close = draining || request_wants_close(&buf[..end]) || self.draining();
            buf.drain(..end);
            if let Some(mode) = misbehave {
                return misbehave_on(conn, mode);
            }
            write_response(&mut conn, "200 OK", &self.body, close)?;
            self.served.fetch_add(1, Ordering::Relaxed);
            if close {
                return Ok(());
            }
        }
    }

    fn draining(&self) -> bool {
        sys::has_input(self.wake.as_fd())
    }

    /// Waits until `conn` has something to read (a request, or its end): then true. False if
    /// the server drains and the connection stays idle for [`IDLE_GRACE`].
    fn next_request_comes(&self, conn: &Conn, draining: &mut bool) -> io::Result<bool> {
        if !*draining {
            let ready = sys::wait_readable(&[conn.as_fd(), self.wake.as_fd()], None)?;
            if ready[0] {
                return Ok(true);
            }
            *draining = true;
        }
        Ok(sys::wait_readable(&[conn.as_fd()], Some(IDLE_GRACE))?[0])
    }
}

/// What a broken server does instead of answering (the request has been read).
fn misbehave_on(mut conn: Conn, mode: BreakMode) -> io::Result<()> {
    match mode {
        BreakMode::DropConnections => Ok(()),
        BreakMode::ResetConnections => sys::reset_on_close(&conn),
        BreakMode::BadResponse => {
            write_response(&mut conn, "500 Internal Server Error", "broken on purpose\n", true)
        }
        // Until the client gives up, even while draining: the client's timeout is the point.
        BreakMode::Stall => sys::wait_readable(&[conn.as_fd()], None).map(drop),
    }
}
