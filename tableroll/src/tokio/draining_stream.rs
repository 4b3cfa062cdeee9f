//! A connection accepted by a [`DrainingListener`]: what it reports to the drain, and the bound
//! on a request head that stalls during one.
//!
//! [`DrainingListener`]: super::DrainingListener

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::progress::Progress;

/// The first bytes of an HTTP/2 connection with prior knowledge. hyper-util's automatic
/// protocol choice reads this far before it serves anything, so a stream that starts like it
/// counts as read only once the whole preface came (or the stream departed from it).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often a stalled request head looks again whether a drain started, while none has.
const STALL_RECHECK: Duration = Duration::from_secs(1);

/// A connection accepted by a [`DrainingListener`]: the tokio stream, which tells the listener's
/// [`Drained`] futures when its first request was read (or it ended, failed or was dropped),
/// whether it speaks HTTP/2, and when it closes.
///
/// Reads and writes go straight to the stream inside, with one exception that bounds a drain:
/// once the listener drains, a read that waits for the rest of an unfinished request head (bytes
/// read since the stream's last write, without the blank line that ends an HTTP/1 head) fails
/// with [`io::ErrorKind::TimedOut`] when the listener's
/// [request-head timeout](super::DrainingListener::request_head_timeout) passes, and the server
/// drops the connection. Only bytes that begin like a request line (a method in capitals) are
/// taken for a head: a WebSocket or other upgraded connection that receives frames is left
/// alone. A client that sent half a request and stalls would otherwise keep the
/// old process draining for as long as it stays.
///
/// A stream whose first bytes are the HTTP/2 connection preface counts as read once its first
/// `HEADERS` frame (its first request) was read: a `GOAWAY` from the server's graceful shutdown
/// between the preface and that frame would cancel the request, as hyper's client and tonic's
/// `Channel` report. A stream that departs from the preface counts as read at its first bytes.
/// An HTTP/2 stream is not bound by the request-head timeout (its frames are not HTTP/1 heads;
/// the graceful shutdown's `GOAWAY` ends it).
///
/// [`DrainingListener`]: super::DrainingListener
/// [`Drained`]: super::Drained
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
pub struct DrainingStream<S> {
    io: S,
    tracker: Tracker,
}

impl<S> DrainingStream<S> {
    /// `io`, just accepted, which reports to `progress` (where it is counted as unread and as
    /// an open HTTP/1 connection).
    pub(super) fn new(io: S, progress: watch::Sender<Progress>) -> Self {
        let tracker = Tracker { progress, first_bytes: FirstBytes::START, head: Head::Between, stall: None };
        DrainingStream { io, tracker }
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

    /// The stream inside; from then on it counts as read and as closed.
    pub fn into_inner(self) -> S {
        self.io
    }
}

impl<S: AsFd> AsFd for DrainingStream<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

/// What one connection reports to the listener's [`Progress`], and its request-head state.
#[derive(Debug)]
struct Tracker {
    progress: watch::Sender<Progress>,
    first_bytes: FirstBytes,
    head: Head,
    /// Armed while a read waits on an unfinished request head.
    stall: Option<Pin<Box<Sleep>>>,
}

/// Whether the connection's first request was read, and in which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstBytes {
    /// Nothing read that tells; `seen` bytes read so far matched the HTTP/2 preface.
    Preface { seen: usize },
    /// HTTP/2: the preface came whole, and frames are read up to the first `HEADERS` (the first
    /// request). `header` holds the `have` bytes read of the current frame's 9-byte header;
    /// `skip` is what is left of its payload.
    Http2Frames { header: [u8; 9], have: usize, skip: usize },
    /// HTTP/1 (or anything but HTTP/2): its first bytes were read (or the stream ended first).
    Http1,
    /// HTTP/2: its first `HEADERS` frame was read (or the stream ended first).
    Http2,
}

/// The frame type of a `HEADERS` frame, which opens a stream: a request.
const HTTP2_HEADERS: u8 = 0x1;

impl FirstBytes {
    const START: FirstBytes = FirstBytes::Preface { seen: 0 };

    /// Whether the first request was read, or the stream ended: nothing more to wait for.
    fn is_read(self) -> bool {
        matches!(self, FirstBytes::Http1 | FirstBytes::Http2)
    }

    fn is_http2(self) -> bool {
        matches!(self, FirstBytes::Http2Frames { .. } | FirstBytes::Http2)
    }

    /// The state after `new` bytes were read (not empty).
    fn after(self, new: &[u8]) -> FirstBytes {
        match self {
            FirstBytes::Http1 | FirstBytes::Http2 => self,
            FirstBytes::Preface { seen } => {
                let n = new.len().min(H2_PREFACE.len() - seen);
                if H2_PREFACE[seen..seen + n] != new[..n] {
                    FirstBytes::Http1
                } else if seen + n < H2_PREFACE.len() {
                    FirstBytes::Preface { seen: seen + n }
                } else {
                    FirstBytes::Http2Frames { header: [0; 9], have: 0, skip: 0 }.after(&new[n..])
                }
            }
            FirstBytes::Http2Frames { mut header, mut have, mut skip } => {
                let mut rest = new;
                while !rest.is_empty() {
                    if skip > 0 {
                        let n = skip.min(rest.len());
                        (skip, rest) = (skip - n, &rest[n..]);
                        continue;
                    }
                    let n = (header.len() - have).min(rest.len());
                    header[have..have + n].copy_from_slice(&rest[..n]);
                    (have, rest) = (have + n, &rest[n..]);
                    if have == header.len() {
                        if header[3] == HTTP2_HEADERS {
                            return FirstBytes::Http2;
                        }
                        skip = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        have = 0;
                    }
                }
                FirstBytes::Http2Frames { header, have, skip }
            }
        }
    }

    /// The state once the stream ended, or a read failed.
    fn ended(self) -> FirstBytes {
        if self.is_http2() {
            FirstBytes::Http2
        } else {
            FirstBytes::Http1
        }
    }
}

/// Where an HTTP/1 request head stands, as far as reads and writes show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Nothing read since the last write (or since the connection opened).
    Between,
    /// Bytes read since the last write that begin like a request line (a method, in capitals),
    /// without the blank line that ends a head; `tail` holds the last (up to) three of them, as
    /// the low bytes.
    Partial { tail: u32 },
    /// A whole head was read since the last write (a body may follow; not looked at), or what
    /// was read does not begin like a request line (a WebSocket frame, say).
    Complete,
}

impl Head {
    /// The state after `new` bytes were read.
    fn after(self, new: &[u8]) -> Head {
        let mut tail = match (self, new.first()) {
            (Head::Complete, _) | (Head::Between, None) => return self,
            (Head::Between, Some(first)) if !first.is_ascii_uppercase() => return Head::Complete,
            (Head::Between, Some(_)) => 0,
            (Head::Partial { tail }, _) => tail,
        };
        for &byte in new {
            tail = tail << 8 | u32::from(byte);
            if tail == u32::from_be_bytes(*b"\r\n\r\n") {
                return Head::Complete;
            }
        }
        Head::Partial { tail: tail & 0x00ff_ffff }
    }
}

impl Tracker {
    /// After a read that returned `Some(new bytes)` (empty at the end of the stream) or `None`
    /// (an error).
    fn saw_read(&mut self, read: Option<&[u8]>) {
        let before = self.first_bytes;
        self.first_bytes = match read {
            Some(new) if !new.is_empty() => before.after(new),
            _ => before.ended(),
        };
        if before != self.first_bytes {
            self.report_first_bytes(before);
        }
        if !self.first_bytes.is_http2() {
            self.head = self.head.after(read.unwrap_or_default());
        }
        if !matches!(self.head, Head::Partial { .. }) {
            self.stall = None;
        }
    }

    fn saw_write(&mut self) {
        self.head = Head::Between;
        self.stall = None;
    }

    /// Tells the drain that the first bytes moved from `before` to the current state: the
    /// first request read, or the connection known to be HTTP/2.
    fn report_first_bytes(&self, before: FirstBytes) {
        let read = !before.is_read() && self.first_bytes.is_read();
        let http2 = !before.is_http2() && self.first_bytes.is_http2();
        if read || http2 {
            self.progress.send_if_modified(|p| {
                p.unread -= usize::from(read);
                p.open_http1 -= usize::from(http2);
                (read && p.unread == 0) || (http2 && p.open_http1 == 0)
            });
        }
    }

    /// While a read waits on an unfinished head: ready with an error once a drain started and
    /// its head deadline passed.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.first_bytes.is_http2() || !matches!(self.head, Head::Partial { .. }) {
            return Poll::Pending;
        }
        loop {
            let phase = self.progress.borrow().phase;
            let wake_at = match phase.head_deadline() {
                None => Instant::now() + STALL_RECHECK,
                Some(None) => return Poll::Pending,
                Some(Some(deadline)) if Instant::now() >= deadline => {
                    tracing::debug!("a request head stalled through the drain's head timeout: cut");
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not come whole before the drain's request-head timeout",
                    ));
                }
                Some(Some(deadline)) => deadline,
            };
            let stall = match &mut self.stall {
                Some(stall) if stall.deadline() <= wake_at => stall,
                _ => self.stall.insert(Box::pin(tokio::time::sleep_until(wake_at))),
            };
            if stall.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.stall = None;
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let read = !self.first_bytes.is_read();
        let http1 = !self.first_bytes.is_http2();
        self.progress.send_if_modified(|p| {
            p.unread -= usize::from(read);
            p.open_http1 -= usize::from(http1);
            (read && p.unread == 0) || (http1 && p.open_http1 == 0)
        });
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
        match (&result, has_room) {
            (Poll::Ready(read), true) => {
                this.tracker.saw_read(read.as_ref().ok().map(|()| &buf.filled()[before..]));
            }
            (Poll::Pending, _) => {
                if let Poll::Ready(error) = this.tracker.poll_stall(cx) {
                    return Poll::Ready(Err(error));
                }
            }
            (Poll::Ready(_), false) => {}
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DrainingStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = result {
            self.tracker.saw_write();
        }
        result
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
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(1..)) = result {
            self.tracker.saw_write();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::{FirstBytes, Head, H2_PREFACE, HTTP2_HEADERS};

    /// An HTTP/2 frame header: `length`, `kind`, no flags, stream `stream`.
    fn frame(length: usize, kind: u8, stream: u32) -> Vec<u8> {
        let mut header = length.to_be_bytes()[5..].to_vec();
        header.extend([kind, 0]);
        header.extend(stream.to_be_bytes());
        header
    }

    #[test]
    fn the_first_request_is_read_at_the_first_byte_off_the_preface_or_the_first_http2_headers() {
        let states = |reads: &[&[u8]]| {
            let mut state = FirstBytes::START;
            reads
                .iter()
                .map(|read| {
                    state = if read.is_empty() { state.ended() } else { state.after(read) };
                    state
                })
                .collect::<Vec<_>>()
        };
        let frames = |have, skip| FirstBytes::Http2Frames { header: [0; 9], have, skip };
        assert_eq!(states(&[b"GET / HTTP/1.1\r\n"]), [FirstBytes::Http1]);
        assert_eq!(
            states(&[b"P", b"UT / HTTP/1.1\r\n"]),
            [FirstBytes::Preface { seen: 1 }, FirstBytes::Http1]
        );
        assert_eq!(states(&[b"PRI", b""]), [FirstBytes::Preface { seen: 3 }, FirstBytes::Http1], "ended");
        assert_eq!(states(&[H2_PREFACE]), [frames(0, 0)]);
        assert_eq!(states(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"])[1], frames(0, 0));
        assert_eq!(states(&[H2_PREFACE, b""])[1], FirstBytes::Http2, "ended after the preface");

        // Preface, SETTINGS (6 bytes of payload) and WINDOW_UPDATE (4), then HEADERS: in one
        // read, or split anywhere.
        let settings = [frame(6, 0x4, 0), vec![0; 6]].concat();
        let window_update = [frame(4, 0x8, 0), vec![0; 4]].concat();
        let headers = frame(3, HTTP2_HEADERS, 1);
        let all = [H2_PREFACE, &settings, &window_update, &headers, &[0x82, 0x86, 0x84]].concat();
        assert_eq!(states(&[&all]), [FirstBytes::Http2]);
        let before_headers = H2_PREFACE.len() + settings.len() + window_update.len();
        for split in 1..all.len() {
            let (first, second) = all.split_at(split);
            let got = states(&[first, second]);
            let expected_first = if split >= before_headers + 9 { FirstBytes::Http2 } else { got[0] };
            assert_eq!(got[0], expected_first, "split at {split}");
            assert!(
                !got[0].is_read() || split >= before_headers + 9,
                "read before the HEADERS frame, split {split}"
            );
            assert_eq!(got[1], FirstBytes::Http2, "split at {split}");
        }
        let without_headers = [H2_PREFACE, &settings, &window_update].concat();
        assert!(matches!(states(&[&without_headers])[0], FirstBytes::Http2Frames { have: 0, skip: 0, .. }));
    }

    #[test]
    fn a_head_is_complete_at_its_blank_line_wherever_the_reads_split_it() {
        let after = |reads: &[&[u8]]| reads.iter().fold(Head::Between, |head, read| head.after(read));
        assert_eq!(after(&[]), Head::Between);
        assert_eq!(after(&[b""]), Head::Between);
        assert_eq!(after(&[b"G"]), Head::Partial { tail: u32::from(b'G') });
        assert_eq!(after(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), Head::Complete);
        assert_eq!(after(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]), Head::Complete);
        for split in 1..4 {
            let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
            let (first, second) = head.split_at(head.len() - split);
            assert_eq!(after(&[first, second]), Head::Complete, "split {split} before the end");
            assert!(matches!(after(&[first]), Head::Partial { .. }));
        }
        for split in 0..4 {
            let (first, rest) = b"\r\n\r\n".split_at(split);
            let reads: Vec<&[u8]> =
                [&b"GET /"[..], first].into_iter().chain(rest.iter().map(std::slice::from_ref)).collect();
            assert_eq!(after(&reads), Head::Complete, "one byte at a time after {split}");
        }
        assert!(matches!(after(&[b"GET / HTTP/1.1\r\n\r"]), Head::Partial { .. }));
        assert!(matches!(after(&[b"A\r\n", b"\rb"]), Head::Partial { .. }), "\\r\\n\\rb is no blank line");
        assert_eq!(after(&[&[0x81, 0x85, 1, 2]]), Head::Complete, "a WebSocket frame is no request head");
        assert_eq!(after(&[b"hello"]), Head::Complete, "nor a line in small letters");
    }
}
