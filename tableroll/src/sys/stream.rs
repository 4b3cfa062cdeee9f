//! Single, non-waiting reads and writes on a connected Unix stream socket: `recv(2)` with
//! `MSG_DONTWAIT`, `send(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL` (a peer that went away makes
//! `EPIPE`, never a `SIGPIPE` that would kill a process that did not ignore it).

use std::io;
use std::os::fd::AsFd;

use rustix::net::{recv, send, RecvFlags, SendFlags};

/// Reads what is there into `buf`, without waiting; `Ok(0)` at the end of the stream.
///
/// # Errors
///
/// `WouldBlock` when nothing is there yet; `Interrupted`; `ConnectionReset`; others.
pub(crate) fn recv_now(stream: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    recv(stream, buf, RecvFlags::DONTWAIT).map(|(n, _)| n).map_err(Into::into)
}

/// Writes what fits of `buf`, without waiting; returns how much.
///
/// # Errors
///
/// `WouldBlock` when the socket buffer is full; `Interrupted`; `BrokenPipe`; others.
pub(crate) fn send_now(stream: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    send(stream, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT).map_err(Into::into)
}
