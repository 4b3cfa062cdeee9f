//! A connection on an upgrade socket, with every blocking step bounded by one deadline.
//!
//! The socket is switched to non-blocking mode (it is ours alone: neither side shares this
//! descriptor with an application), every operation is tried at once, and only when the kernel
//! says it would block does the channel `poll(2)` for the remaining time. So a peer that sends
//! one byte at a time cannot stretch the deadline, a read blocked in the kernel is really
//! interrupted, and the common case costs no extra system call. An optional cancel descriptor
//! (the read end of the upgrader's stop pipe) aborts the wait.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{recv, send, RecvFlags, SendFlags};

use super::fd_passing::{self, Received};
use crate::error::{Error, Result};

pub(crate) struct Channel<'c> {
    stream: UnixStream,
    deadline: Option<Instant>,
    cancel: Option<BorrowedFd<'c>>,
    /// What the peer is expected to be doing, for timeout errors.
    waiting_for: &'static str,
}

enum Direction {
    Read,
    Write,
}

impl<'c> Channel<'c> {
    pub(crate) fn new(
        stream: UnixStream,
        deadline: Option<Instant>,
        cancel: Option<BorrowedFd<'c>>,
        waiting_for: &'static str,
    ) -> Result<Self> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting the upgrade connection non-blocking", e))?;
        Ok(Channel { stream, deadline, cancel, waiting_for })
    }

    /// Gives the connection back (still non-blocking) to keep it open between steps.
    pub(crate) fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Reads exactly `buf.len()` bytes, never more: the next message may carry descriptors.
    pub(crate) fn read_exact(&self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.retry(Direction::Read, || {
                recv(&self.stream, &mut *buf, RecvFlags::DONTWAIT).map(|(n, _)| n)
            })?;
            if n == 0 {
                return Err(Error::protocol(format!(
                    "connection closed with {} bytes still expected",
                    buf.len()
                )));
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    pub(crate) fn write_all(&self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.retry(Direction::Write, || {
                send(&self.stream, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
            })?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends `payload` (non-empty) with `fd` attached, as one message.
    pub(crate) fn send_fd(&self, payload: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
        debug_assert!(!payload.is_empty());
        let sent =
            self.retry(Direction::Write, || fd_passing::send_with_fd(self.stream.as_fd(), payload, fd))?;
        // The descriptor went with the first byte; the rest of a partly written payload is
        // plain data.
        self.write_all(&payload[sent..])
    }

    /// Receives one descriptor message, its payload into `buf`.
    pub(crate) fn recv_fd(&self, buf: &mut [u8]) -> Result<(usize, OwnedFd)> {
        match self.retry(Direction::Read, || fd_passing::recv_with_fd(self.stream.as_fd(), buf))? {
            Ok(Received::Descriptor(n, fd)) => Ok((n, fd)),
            Ok(Received::Eof) => Err(Error::protocol("connection closed before all descriptors arrived")),
            Err(malformed) => Err(Error::protocol(malformed.to_string())),
        }
    }

    /// Runs `op` until it does not report `WouldBlock`, waiting in between.
    fn retry<T>(&self, direction: Direction, mut op: impl FnMut() -> rustix::io::Result<T>) -> Result<T> {
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(rustix::io::Errno::AGAIN) => self.wait(&direction)?,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("talking to the peer on the upgrade socket", e.into())),
            }
        }
    }

    fn wait(&self, direction: &Direction) -> Result<()> {
        let flags = match direction {
            Direction::Read => PollFlags::IN,
            Direction::Write => PollFlags::OUT,
        };
        loop {
            let timeout = match self.deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout { operation: self.waiting_for });
                    }
                    Some(Timespec::try_from(left).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 }))
                }
                None => None,
            };
            let mut fds = Vec::with_capacity(2);
            fds.push(PollFd::new(&self.stream, flags));
            if let Some(cancel) = &self.cancel {
                fds.push(PollFd::from_borrowed_fd(*cancel, PollFlags::IN));
            }
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) => continue, // loop re-checks the deadline
                Ok(_) => {
                    if fds.get(1).is_some_and(|c| !c.revents().is_empty()) {
                        return Err(Error::Stopped);
                    }
                    // Readable, writable, hung up or in error: the retried call tells which.
                    return Ok(());
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("waiting on the upgrade socket", io::Error::from(e))),
            }
        }
    }
}
