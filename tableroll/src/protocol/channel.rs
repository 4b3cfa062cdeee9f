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

use crate::error::{Error, Result};
use crate::sys::poll::{self, Interest};
use crate::sys::scm_rights::{self, Received};
use crate::sys::stream::{recv_now, send_now};

pub(crate) struct Channel<'c> {
    stream: UnixStream,
    deadline: Option<Instant>,
    cancel: Option<BorrowedFd<'c>>,
    /// What the peer is expected to be doing, for timeout errors.
    waiting_for: &'static str,
}

impl AsFd for Channel<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
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
            let n = self.retry(Direction::Read, || recv_now(&self.stream, &mut *buf))?;
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
            let n = self.retry(Direction::Write, || send_now(&self.stream, buf))?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Ends our direction of the connection: the peer reads the end of the stream.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// Reads and discards whatever the peer sent, without waiting; returns whether the peer
    /// closed the connection (end of stream, or reset).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if reading fails for another reason.
    pub(crate) fn discard_pending(&self) -> Result<bool> {
        let mut sink = [0u8; 256];
        loop {
            match recv_now(&self.stream, &mut sink) {
                Ok(0) => return Ok(true),
                Ok(_) => continue,
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionReset => return Ok(true),
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(false),
                    _ => return Err(Error::io("talking to the peer on the upgrade socket", e)),
                },
            }
        }
    }

    /// Sends `payload` (non-empty) with `fd` attached, as one message.
    pub(crate) fn send_fd(&self, payload: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
        debug_assert!(!payload.is_empty());
        let sent =
            self.retry(Direction::Write, || scm_rights::send_with_fd(self.stream.as_fd(), payload, fd))?;
        // The descriptor went with the first byte; the rest of a partly written payload is
        // plain data.
        self.write_all(&payload[sent..])
    }

    /// Receives one descriptor message, its payload into `buf`.
    pub(crate) fn recv_fd(&self, buf: &mut [u8]) -> Result<(usize, OwnedFd)> {
        match self.retry(Direction::Read, || scm_rights::recv_with_fd(self.stream.as_fd(), buf))? {
            Ok(Received::Descriptor(n, fd)) => Ok((n, fd)),
            Ok(Received::Eof) => Err(Error::protocol("connection closed before all descriptors arrived")),
            Err(malformed) => Err(Error::protocol(malformed.to_string())),
        }
    }

    /// Runs `op` until it does not report `WouldBlock`, waiting in between.
    fn retry<T>(&self, direction: Direction, mut op: impl FnMut() -> io::Result<T>) -> Result<T> {
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(&direction)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("talking to the peer on the upgrade socket", e)),
            }
        }
    }

    fn wait(&self, direction: &Direction) -> Result<()> {
        let interest = match direction {
            Direction::Read => Interest::Read,
            Direction::Write => Interest::Write,
        };
        let mut fds = vec![(self.stream.as_fd(), interest)];
        fds.extend(self.cancel.map(|cancel| (cancel, Interest::Read)));
        loop {
            let left = match self.deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::timeout(self.waiting_for));
                    }
                    Some(left)
                }
                None => None,
            };
            let ready = poll::wait(&fds, left).map_err(|e| Error::io("waiting on the upgrade socket", e))?;
            if ready.get(1) == Some(&true) {
                return Err(Error::stopped());
            }
            // Readable, writable, hung up or in error: the retried call tells which. Nothing
            // ready: the loop checks the deadline again.
            if ready[0] {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::mem::MaybeUninit;
    use std::net::TcpListener;
    use std::time::Duration;

    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

    fn pair(deadline: Option<Duration>) -> (Channel<'static>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let deadline = deadline.map(|d| Instant::now() + d);
        (Channel::new(a, deadline, None, "test peer").unwrap(), b)
    }

    /// Sends `payload` with `fds` attached, as a hostile peer might.
    fn send_raw(sock: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        }
        sendmsg(sock, &[std::io::IoSlice::new(payload)], &mut control, SendFlags::empty()).unwrap();
    }

    #[test]
    fn passes_one_descriptor_per_message() {
        let (ch, peer) = pair(Some(Duration::from_secs(20)));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer_ch = Channel::new(peer, None, None, "test").unwrap();
        peer_ch.send_fd(b"listener(web): tcp:x", listener.as_fd()).unwrap();
        peer_ch.write_all(b"after").unwrap();
        let mut buf = [0u8; 4096];
        let (n, fd) = ch.recv_fd(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"listener(web): tcp:x");
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "received descriptors are close-on-exec");
        let received = std::net::TcpListener::from(fd);
        assert_eq!(received.local_addr().unwrap(), listener.local_addr().unwrap());
        // The plain bytes after the descriptor message are intact.
        let mut after = [0u8; 5];
        ch.read_exact(&mut after).unwrap();
        assert_eq!(&after, b"after");
    }

    #[test]
    fn refuses_messages_without_or_with_too_many_descriptors() {
        let (ch, peer) = pair(Some(Duration::from_secs(20)));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        (&peer).write_all(b"no descriptor here").unwrap();
        let err = ch.recv_fd(&mut [0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("carried no descriptor"), "{err}");

        let (ch, peer) = pair(Some(Duration::from_secs(20)));
        send_raw(&peer, b"two", &[l.as_fd(), l.as_fd()]);
        let err = ch.recv_fd(&mut [0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("2 descriptors"), "{err}");

        let (ch, peer) = pair(Some(Duration::from_secs(20)));
        let many: Vec<BorrowedFd<'_>> = (0..8).map(|_| l.as_fd()).collect();
        send_raw(&peer, b"eight", &many);
        let err = ch.recv_fd(&mut [0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("MSG_CTRUNC"), "{err}");

        let (ch, peer) = pair(Some(Duration::from_secs(20)));
        drop(peer);
        assert!(ch.recv_fd(&mut [0u8; 4096]).is_err());
    }

    #[test]
    fn deadline_interrupts_a_blocked_read_and_write() {
        let (ch, _peer) = pair(Some(Duration::from_millis(50)));
        let err = ch.read_exact(&mut [0u8; 1]).unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Timeout), "{err}");
        // A peer that never reads: writes block once the socket buffer is full.
        let (ch, _peer) = pair(Some(Duration::from_millis(50)));
        let err = ch.write_all(&vec![0u8; 64 << 20]).unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Timeout), "{err}");
    }

    #[test]
    fn a_dripping_peer_cannot_stretch_the_deadline() {
        let (ch, peer) = pair(Some(Duration::from_millis(200)));
        let dripper = std::thread::spawn(move || {
            // One byte at a time, each well inside any per-call timeout: the total must still
            // be bounded. Stops when the channel side is gone.
            for _ in 0..10_000 {
                if (&peer).write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let err = ch.read_exact(&mut vec![0u8; 1_000_000]).unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Timeout), "{err}");
        drop(ch);
        dripper.join().unwrap();
    }

    #[test]
    fn discards_what_is_pending_and_tells_a_close() {
        let (ch, peer) = pair(None);
        assert!(!ch.discard_pending().unwrap());
        (&peer).write_all(&[7u8; 1000]).unwrap();
        assert!(!ch.discard_pending().unwrap(), "data is not a close");
        drop(peer);
        assert!(ch.discard_pending().unwrap());
    }

    #[test]
    fn cancel_descriptor_aborts_a_wait() {
        let (stop_rx, stop_tx) = rustix::pipe::pipe().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let ch = Channel::new(a, None, Some(stop_rx.as_fd()), "test").unwrap();
        drop(stop_tx);
        assert!(matches!(
            (ch.read_exact(&mut [0u8; 1])).map_err(|e| e.kind()),
            Err(crate::ErrorKind::Stopped)
        ));
    }
}
