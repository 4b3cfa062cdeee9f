//! Telling an owner that died (or stopped) from one that is alive and said no.
//!
//! A newcomer whose connection to the owner breaks must know which: if the owner is gone, the
//! newcomer keeps what it received and carries on (it holds live copies of the listening
//! sockets, with their backlogs); if the owner is alive, the newcomer must not take over.
//!
//! Two signs, either enough: the owner's process exited (a pidfd taken when connecting becomes
//! readable: an event, immune to pid reuse), or its upgrade socket is no longer live (it
//! stopped, or it runs in a PID namespace we cannot see into). A dying process closes our
//! connection a moment before it is fully gone, so the watch waits a bounded grace period for
//! either sign. This runs only on the failure path.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sys::pidfd;
use crate::sys::socket_table::{self, PathState};

/// How long a broken connection waits for the owner to be seen gone.
pub(crate) const GRACE: Duration = Duration::from_secs(1);
/// How often the socket is looked at again meanwhile (the pidfd wakes at once).
const RECHECK: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub(crate) struct OwnerWatch {
    socket: PathBuf,
    pidfd: Option<OwnedFd>,
}

impl OwnerWatch {
    /// Watches the owner at the other end of `stream`, whose upgrade socket is `socket`.
    pub(crate) fn new(socket: PathBuf, stream: &UnixStream) -> OwnerWatch {
        OwnerWatch { socket, pidfd: pidfd::of_peer(stream) }
    }

    /// Whether the owner is gone, waiting up to `grace` for it to be seen gone.
    pub(crate) fn is_gone(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            if matches!(socket_table::state(&self.socket), Ok(PathState::Missing | PathState::Stale)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match &self.pidfd {
                Some(fd) if pidfd::exited_within(fd, left.min(RECHECK)) => return true,
                Some(_) => {}
                None => std::thread::sleep(left.min(RECHECK)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_live_owner_is_not_gone_a_closed_one_is() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("o.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        let watch = OwnerWatch::new(path.clone(), &stream);
        assert!(watch.pidfd.is_some());
        assert!(!watch.is_gone(Duration::from_millis(20)));
        drop(listener);
        assert!(watch.is_gone(GRACE));
    }

    #[test]
    fn an_exited_process_is_gone_even_if_its_socket_file_looks_live() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("o.sock");
        let _still_listening = UnixListener::bind(&path).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        // Point the pidfd at a child that exits, as if it had been the owner.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let watch = OwnerWatch { socket: path, pidfd: Some(pidfd::of_pid(pid).unwrap()) };
        drop(stream);
        child.wait().unwrap();
        assert!(watch.is_gone(GRACE));
    }
}
