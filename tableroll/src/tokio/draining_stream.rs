//! A connection accepted by a [`DrainingListener`], and the report of its first bytes.
//!
//! [`DrainingListener`]: super::DrainingListener

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::progress::Progress;

/// The first bytes of an HTTP/2 connection with prior knowledge. hyper-util's automatic
/// protocol choice reads this far before it serves anything, so a stream that starts like it
/// counts as read only once the whole preface came (or the stream departed from it).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection accepted by a [`DrainingListener`]: the tokio stream, which reports to the
/// listener's [`Drained`] futures once its first bytes were read, the stream ended, a read
/// failed, or it was dropped.
///
/// Reads and writes go straight to the stream inside. A stream whose first bytes match the
/// beginning of the HTTP/2 connection preface counts as read once the whole preface was read,
/// or a byte departed from it: hyper-util reads that far before it serves anything.
///
/// [`DrainingListener`]: super::DrainingListener
/// [`Drained`]: super::Drained
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
pub struct DrainingStream<S> {
    io: S,
    first_bytes: FirstBytes,
}

impl<S> DrainingStream<S> {
    /// `io`, just accepted, which reports its first bytes to `progress` (where it is counted).
    pub(super) fn new(io: S, progress: watch::Sender<Progress>) -> Self {
        DrainingStream { io, first_bytes: FirstBytes { progress: Some(progress), preface_seen: 0 } }
    }

    /// The stream inside, for its peer address or socket options.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream inside. Reading from it directly is not seen by the [`Drained`] futures.
    ///
    /// [`Drained`]: super::Drained
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The stream inside; from then on it counts as read.
    pub fn into_inner(self) -> S {
        self.io
    }
}

impl<S: AsFd> AsFd for DrainingStream<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

/// Tracks one connection until its first bytes were read; reports (once) on drop too.
#[derive(Debug)]
struct FirstBytes {
    /// Until the report.
    progress: Option<watch::Sender<Progress>>,
    /// How many bytes were read so far while they matched the HTTP/2 preface.
    preface_seen: usize,
}

impl FirstBytes {
    /// After a read that returned `Some(new bytes)` (empty at the end of the stream) or `None`
    /// (an error).
    fn saw(&mut self, read: Option<&[u8]>) {
        if self.progress.is_none() {
            return;
        }
        match read {
            Some(new) if !self.decided(new) => {}
            _ => self.report(),
        }
    }

    /// Whether enough was read to pick a protocol once `new` came.
    fn decided(&mut self, new: &[u8]) -> bool {
        let end = self.preface_seen + new.len();
        let still_preface = !new.is_empty() && H2_PREFACE.get(self.preface_seen..end) == Some(new);
        self.preface_seen = end;
        !still_preface || end == H2_PREFACE.len()
    }

    fn report(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.send_if_modified(|p| {
                p.unread -= 1;
                p.unread == 0
            });
        }
    }
}

impl Drop for FirstBytes {
    fn drop(&mut self) {
        self.report();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DrainingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        // A read into a full buffer returns nothing without meaning the end of the stream.
        let has_room = buf.remaining() > 0;
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(read), true) = (&result, has_room) {
            this.first_bytes.saw(read.as_ref().ok().map(|()| &buf.filled()[before..]));
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DrainingStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::{FirstBytes, H2_PREFACE};

    #[test]
    fn the_protocol_is_decided_at_the_first_byte_off_the_preface() {
        let decided = |reads: &[&[u8]]| {
            let mut first_bytes = FirstBytes { progress: None, preface_seen: 0 };
            reads.iter().map(|read| first_bytes.decided(read)).collect::<Vec<_>>()
        };
        assert_eq!(decided(&[b"GET / HTTP/1.1\r\n"]), [true]);
        assert_eq!(decided(&[b"P", b"UT / HTTP/1.1\r\n"]), [false, true]);
        assert_eq!(decided(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]), [false, true]);
        assert_eq!(decided(&[H2_PREFACE]), [true]);
        assert_eq!(decided(&[b"PRI", b""]), [false, true], "the end of the stream decides");
    }
}
