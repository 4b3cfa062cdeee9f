//! Who is at the other end of a Unix socket: `SO_PEERCRED`, read so that an invisible pid is
//! an answer, not an error.
//!
//! The kernel reports the peer's pid as seen from this process's PID namespace, and as 0 when
//! the peer lives in a namespace this one cannot see (a sibling container, or a parent
//! namespace seen from a child). rustix's `socket_peercred` stores the pid in a non-zero type
//! and cannot represent that answer, so the option is read here with the plain C layout.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use rustix::process::Pid;

/// The peer's credentials as the kernel recorded them at `connect(2)` or `socketpair(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCred {
    /// `None` when the peer's process is not visible from this PID namespace.
    pub(crate) pid: Option<Pid>,
    pub(crate) uid: u32,
}

/// Reads `SO_PEERCRED` from a connected Unix socket.
#[allow(unsafe_code)]
pub(crate) fn peer_cred(socket: impl AsFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let size = std::mem::size_of::<libc::ucred>();
    let mut len = libc::socklen_t::try_from(size).map_err(io::Error::other)?;
    // SAFETY: the descriptor is borrowed for the call; `cred` is a live, writable `ucred` and
    // `len` says exactly how many bytes it holds, so the kernel writes at most that many.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(len).ok() != Some(size) {
        return Err(io::Error::other(format!("SO_PEERCRED returned {len} bytes, expected {size}")));
    }
    Ok(PeerCred { pid: Pid::from_raw(cred.pid), uid: cred.uid })
}

impl PeerCred {
    /// The pid as the kernel reported it: 0 when not visible from this PID namespace.
    pub(crate) fn pid_number(&self) -> i32 {
        self.pid.map_or(0, Pid::as_raw_pid)
    }
}

/// This process's effective user id.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socketpair_peer_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&a).unwrap();
        assert_eq!(cred.pid, Some(rustix::process::getpid()));
        assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
    }
}
