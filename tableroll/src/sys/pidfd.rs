//! Process descriptors: a pidfd becomes readable when its process exits, with no race against
//! pid reuse.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::peer_cred::peer_cred;
use super::poll::{self, Interest};

/// A pidfd for the process at the other end of `stream`, if its pid is visible here (it is
/// not from another PID namespace) and the process still exists.
pub(crate) fn of_peer(stream: &UnixStream) -> Option<OwnedFd> {
    let pid = peer_cred(stream).ok()?.pid?;
    of_pid(pid)
}

/// A pidfd for process `pid`, if it exists.
pub(crate) fn of_pid(pid: Pid) -> Option<OwnedFd> {
    pidfd_open(pid, PidfdFlags::empty()).ok()
}

/// Whether the process behind `pidfd` exits within `grace` (at once if it already has). A
/// failure to wait reads as "not exited".
pub(crate) fn exited_within(pidfd: impl AsFd, grace: Duration) -> bool {
    poll::wait(&[(pidfd.as_fd(), Interest::Read)], Some(grace)).is_ok_and(|ready| ready[0])
}
