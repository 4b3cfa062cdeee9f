//! One descriptor per message: `sendmsg(2)`/`recvmsg(2)` with a single `SCM_RIGHTS` record.
//!
//! These are single attempts on a non-blocking socket; `protocol::Channel`
//! waits and retries.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, sendmsg_addr, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
};

/// What one `recvmsg` brought.
pub(crate) enum Received {
    /// Payload bytes and exactly one descriptor.
    Descriptor(usize, OwnedFd),
    /// End of stream before anything arrived.
    Eof,
}

/// Why a received message is not one well-formed descriptor message.
#[derive(Debug)]
pub(crate) enum Malformed {
    NoDescriptor(usize),
    TooMany(usize),
    Truncated,
}

/// Sends `payload` with `fd` attached; returns the payload bytes written (at least one: the
/// descriptor travels with the first byte).
pub(crate) fn send_with_fd(sock: BorrowedFd<'_>, payload: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    // The buffer is sized for exactly this message, so the push cannot fail.
    let pushed = control.push(SendAncillaryMessage::ScmRights(&fds));
    debug_assert!(pushed);
    let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
    sendmsg(sock, &[IoSlice::new(payload)], &mut control, flags).map_err(Into::into)
}

/// Sends `payload`, with `fd` attached if given, as one datagram from `sock` (an unbound Unix
/// datagram socket) to `addr`; returns the payload bytes written. Waits if the receiver's queue
/// is full, as `sd_notify(3)` does.
pub(crate) fn send_to(
    sock: BorrowedFd<'_>,
    addr: &SocketAddrUnix,
    payload: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fd.is_some() {
        let pushed = control.push(SendAncillaryMessage::ScmRights(fd.as_slice()));
        debug_assert!(pushed);
    }
    loop {
        match sendmsg_addr(sock, addr, &[IoSlice::new(payload)], &mut control, SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => continue,
            sent => return sent.map_err(Into::into),
        }
    }
}

/// Receives one message into `buf`, expecting exactly one descriptor with it.
///
/// The control buffer has room for more than one descriptor so that a peer sending several is
/// detected (and all of them closed) rather than silently truncated.
pub(crate) fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Result<Received, Malformed>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
    let msg = recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, flags)?;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(1);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Ok(Err(Malformed::Truncated));
    }
    match fds.len() {
        0 if msg.bytes == 0 => Ok(Ok(Received::Eof)),
        0 => Ok(Err(Malformed::NoDescriptor(msg.bytes))),
        1 => Ok(Ok(Received::Descriptor(msg.bytes, fds.remove(0)))),
        n => Ok(Err(Malformed::TooMany(n))),
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::NoDescriptor(n) => write!(f, "a message of {n} bytes carried no descriptor"),
            Malformed::TooMany(n) => write!(f, "a message carried {n} descriptors instead of one"),
            Malformed::Truncated => f.write_str(
                "descriptor control data was truncated (MSG_CTRUNC): the peer sent several \
                 descriptors at once, or this process reached its open-file limit (RLIMIT_NOFILE)",
            ),
        }
    }
}
