//! A demo server's planned crash (`tableroll drill --crash`): a thread that, a while after the
//! server became the owner, reports how many connections it holds and kills the whole process
//! with SIGKILL: no drain, no goodbye to the upgrade group, as a real crash.
//!
//! The count is taken under the lock that accepting takes too (see
//! [`Handlers::open_connections`]), and the kill is sent with that lock held: no connection is
//! accepted between the count and the death, so the count bounds the requests that die with the
//! process (a closed-loop client has at most one request on a connection).

use std::io;
use std::thread;
use std::time::Duration;

use rustix::process::{getpid, kill_process, Signal};

use super::events::ServerEvent;
use super::handler::Handlers;
use super::server::emit;
use crate::sys;

/// Starts the thread that crashes this process `after` from now, unless the server starts
/// draining first (it was stopped, or a newer generation took over): then it does nothing.
pub fn schedule(handlers: Handlers, after: Duration) -> io::Result<()> {
    thread::Builder::new().name("crash".into()).spawn(move || {
        if let Ok(false) = handlers.drains_within(after) {
            crash(&handlers);
        }
    })?;
    Ok(())
}

/// Reports the crash, then kills this process.
fn crash(handlers: &Handlers) {
    let open = handlers.open_connections();
    let open_connections = u64::try_from(*open).unwrap_or(u64::MAX);
    emit(&ServerEvent::Crash { at_ns: sys::now_ns(), open_connections });
    if let Err(e) = kill_process(getpid(), Signal::KILL) {
        // Cannot happen (a process may always signal itself); if it did, die all the same.
        eprintln!("tableroll drill-server: cannot send itself SIGKILL ({e}); aborting");
        std::process::abort();
    }
    // SIGKILL is not handled: the process ends before this thread runs on.
    drop(open);
}
