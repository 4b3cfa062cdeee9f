//! A tokio listener that drains without dropping requests (the `tokio` feature).
//!
//! When a newer generation took over, the old one must stop accepting and finish what it
//! accepted. HTTP servers on hyper-util (axum's `serve` among them) finish gracefully only the
//! connections they have read from: one accepted but not read yet is taken for idle and cancelled
//! when the graceful shutdown starts. During an upgrade such a connection is no idle keep-alive
//! but a client whose request is on its way, so it would be reset. [`DrainingListener`] stops
//! accepting at the drain signal and resolves [`Drained`], the future to start the server's
//! graceful shutdown with, only once every connection it accepted has been read from.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How long [`Drained`] waits for the first bytes of connections accepted before the drain,
/// unless [`DrainingListener::first_byte_timeout`] says otherwise.
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first bytes of an HTTP/2 connection with prior knowledge. hyper-util's automatic
/// protocol choice reads this far before it serves anything, so a stream that starts like it
/// counts as read only once the whole preface came (or the stream departed from it).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

mod sealed {
    pub trait Sealed {}
    impl Sealed for tokio::net::TcpListener {}
    impl Sealed for tokio::net::UnixListener {}
}

/// A tokio listener that a [`DrainingListener`] can wrap: [`tokio::net::TcpListener`] or
/// [`tokio::net::UnixListener`].
///
/// The trait is sealed: it names what the two have in common and is implemented for nothing
/// else.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub trait TokioListener: sealed::Sealed + Send + 'static {
    /// An accepted connection: [`tokio::net::TcpStream`] or [`tokio::net::UnixStream`].
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A socket address: [`std::net::SocketAddr`] or [`tokio::net::unix::SocketAddr`].
    type Addr: fmt::Debug + Send + 'static;

    /// Polls for a new connection: the listener's own `poll_accept`.
    ///
    /// # Errors
    ///
    /// Those of [`accept(2)`](https://man7.org/linux/man-pages/man2/accept.2.html), some of
    /// which concern one connection only (`ECONNABORTED`) and some the process (`EMFILE`).
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Addr)>>;

    /// The address the listener is bound to: the listener's own `local_addr`.
    ///
    /// # Errors
    ///
    /// Those of [`getsockname(2)`](https://man7.org/linux/man-pages/man2/getsockname.2.html).
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

impl TokioListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Addr)>> {
        tokio::net::TcpListener::poll_accept(self, cx)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

impl TokioListener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Addr)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::UnixListener::local_addr(self)
    }
}

/// Where the listener and its connections are, shared with every [`Drained`].
#[derive(Debug, Default)]
struct Progress {
    phase: Phase,
    /// Connections accepted whose first bytes have not been read, and that are still open.
    unread: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Accepting,
    /// Stopped accepting; waits for first bytes until `deadline` (none: the timeout is too
    /// large to be represented).
    Draining { deadline: Option<Instant> },
}

/// A tokio listener that stops accepting when told to drain, and says when every connection
/// it accepted has been read from.
///
/// Built from a [`TcpListener`](tokio::net::TcpListener) or a
/// [`UnixListener`](tokio::net::UnixListener) (such as [`Fds::listen_tcp_tokio`] gives) and a
/// drain signal: any `Future<Output = ()> + Send + 'static`, usually
/// [`Upgrader::upgrade_complete`] or that combined with `SIGTERM`. Until the signal fires it
/// accepts as the listener does, wrapping each connection in a [`DrainingStream`]. From then on
/// it accepts nothing: connections still queued on the socket are left to the process that owns
/// it now. [`drained`](Self::drained) gives a future that resolves once the listener stopped
/// and every connection it accepted has delivered its first bytes to whoever reads it, or
/// closed, or [`first_byte_timeout`](Self::first_byte_timeout) (10 s by default) passed since
/// the listener stopped: a client that connected just before the upgrade and sends nothing does
/// not hold the old process for longer.
///
/// That future is what to start a server's graceful shutdown with. hyper-util, and so axum,
/// cancels at the graceful shutdown the connections it has not read from yet (it takes them for
/// idle ones); connections already read from are served to the end of their request. So the
/// drain signal must go to this listener only, not to the server as well. The listener sees it
/// while it is polled: while [`accept`](Self::accept) is awaited, which a server does all the
/// time. A listener dropped before the signal counts as stopped.
///
/// # Example: axum
///
/// With the `axum` feature, the listener is an
/// [`axum::serve::Listener`](https://docs.rs/axum/0.8/axum/serve/trait.Listener.html):
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn serve(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
/// let upgrader = tableroll::Upgrader::new("/run/app/tableroll")?;
/// let tcp = upgrader.fds().listen_tcp_tokio("web", "127.0.0.1:8080")?;
/// upgrader.ready()?;
/// let listener = tableroll::DrainingListener::new(tcp, upgrader.upgrade_complete());
/// let drained = listener.drained();
/// axum::serve(listener, app).with_graceful_shutdown(drained).await?;
/// # Ok(())
/// # }
/// ```
///
/// axum 0.8 gives `ConnectInfo<SocketAddr>` for its own listeners only; for this one, add
/// `axum::serve::ListenerExt::tap_io(|_| ())`, whose `Connected` implementation covers any
/// listener: `listener.tap_io(|_| ())` then goes to `axum::serve` with
/// `app.into_make_service_with_connect_info::<SocketAddr>()`.
///
/// # Example: an accept loop of one's own
///
/// [`accept`](Self::accept) returns `None` once the listener stopped. With hyper-util (its
/// `server-auto` and `server-graceful` features; not a dependency of this crate, so the example
/// is not compiled here):
///
/// ```ignore
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use hyper_util::server::{conn::auto::Builder, graceful::GracefulShutdown};
///
/// let mut listener = tableroll::DrainingListener::new(tcp, upgrader.upgrade_complete());
/// let drained = listener.drained();
/// let (http, graceful) = (Builder::new(TokioExecutor::new()), GracefulShutdown::new());
/// while let Some((conn, _peer)) = listener.accept().await? {
///     let conn = http.serve_connection(TokioIo::new(conn), hyper::service::service_fn(hello));
///     tokio::spawn(graceful.watch(conn.into_owned()));
/// }
/// drained.await; // every connection accepted was read from: none is cancelled unread
/// graceful.shutdown().await;
/// ```
///
/// On plain tokio:
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let upgrader = tableroll::Upgrader::new("/run/app/tableroll")?;
/// let tcp = upgrader.fds().listen_tcp_tokio("echo", "127.0.0.1:7007")?;
/// upgrader.ready()?;
/// let mut listener = tableroll::DrainingListener::new(tcp, upgrader.upgrade_complete());
/// let mut connections = tokio::task::JoinSet::new();
/// while let Some((mut conn, _peer)) = listener.accept().await? {
///     connections.spawn(async move {
///         let mut line = [0u8; 512];
///         let n = conn.read(&mut line).await?;
///         conn.write_all(&line[..n]).await
///     });
/// }
/// // A newer process took over: this one accepts no more; finish what was accepted.
/// while connections.join_next().await.is_some() {}
/// # Ok(())
/// # }
/// ```
///
/// [`Fds::listen_tcp_tokio`]: crate::Fds::listen_tcp_tokio
/// [`Upgrader::upgrade_complete`]: crate::Upgrader::upgrade_complete
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct DrainingListener<L> {
    inner: L,
    /// The drain signal, until it fired.
    drain: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    first_byte_timeout: Duration,
    progress: watch::Sender<Progress>,
}

impl<L: TokioListener> DrainingListener<L> {
    /// Wraps `listener`, which accepts until `drain` resolves.
    ///
    /// Needs no runtime: the drain signal is polled only by [`accept`](Self::accept).
    pub fn new(listener: L, drain: impl Future<Output = ()> + Send + 'static) -> Self {
        DrainingListener {
            inner: listener,
            drain: Some(Box::pin(drain)),
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            progress: watch::Sender::new(Progress::default()),
        }
    }

    /// How long, after the drain signal, [`Drained`] waits at most for the first bytes of the
    /// connections accepted before it; 10 s by default. When it passes, `Drained` resolves and
    /// the server's graceful shutdown drops those connections.
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = timeout;
        self
    }

    /// A future that resolves once this listener stopped accepting and every connection it
    /// accepted delivered its first bytes or closed, or the
    /// [first-byte timeout](Self::first_byte_timeout) passed: the signal for the server's
    /// graceful shutdown. Each call gives a future of its own; all resolve together.
    ///
    /// # Panics
    ///
    /// The future panics if it has to wait for the timeout outside a tokio runtime with its
    /// time driver enabled (`#[tokio::main]` enables it).
    pub fn drained(&self) -> Drained {
        Drained { inner: Box::pin(drained(self.progress.subscribe())) }
    }

    /// Accepts a connection, or returns `None` once the drain signal fired (then and at every
    /// later call). Cancel-safe: dropped before it resolves, it accepted nothing.
    ///
    /// # Errors
    ///
    /// Accepting failed ([`Error::Io`], with the error of
    /// [`accept(2)`](https://man7.org/linux/man-pages/man2/accept.2.html)). Some of these
    /// concern one connection only (`ECONNABORTED`), some the process (`EMFILE`): the listener
    /// can be used again after either.
    pub async fn accept(&mut self) -> Result<Option<(DrainingStream<L::Stream>, L::Addr)>> {
        poll_fn(|cx| self.poll_next(cx)).await.map_err(|e| Error::io("accepting a connection", e))
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// [`getsockname(2)`](https://man7.org/linux/man-pages/man2/getsockname.2.html) failed
    /// ([`Error::Io`]).
    pub fn local_addr(&self) -> Result<L::Addr> {
        self.inner.local_addr().map_err(|e| Error::io("reading the listener's address", e))
    }

    /// The listener inside.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The drain signal first (a connection queued at the same time is the next owner's), then
    /// the listener.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Accepted<L>>>> {
        if self.poll_drain(cx).is_ready() {
            return Poll::Ready(Ok(None));
        }
        let (io, addr) = ready!(self.inner.poll_accept(cx))?;
        // Counted without waking anyone: nothing waits for the count to grow.
        self.progress.send_if_modified(|p| {
            p.unread += 1;
            false
        });
        let first_bytes = FirstBytes { progress: Some(self.progress.clone()), preface_seen: 0 };
        Poll::Ready(Ok(Some((DrainingStream { io, first_bytes }, addr))))
    }
}

type Accepted<L> = (DrainingStream<<L as TokioListener>::Stream>, <L as TokioListener>::Addr);

impl<L> DrainingListener<L> {
    /// Whether the drain signal fired: the listener accepts no more.
    pub fn is_draining(&self) -> bool {
        self.drain.is_none()
    }

    /// Ready once the drain signal fired; stops accepting then.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(drain) = &mut self.drain {
            ready!(drain.as_mut().poll(cx));
            self.stop_accepting();
        }
        Poll::Ready(())
    }

    fn stop_accepting(&mut self) {
        self.drain = None;
        let deadline = Instant::now().checked_add(self.first_byte_timeout);
        let stopped = self.progress.send_if_modified(|p| {
            let accepting = p.phase == Phase::Accepting;
            if accepting {
                p.phase = Phase::Draining { deadline };
            }
            accepting
        });
        if stopped {
            let unread = self.progress.borrow().unread;
            tracing::debug!(unread, "told to drain: stopped accepting");
        }
    }
}

impl<L> Drop for DrainingListener<L> {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

impl<L: fmt::Debug> fmt::Debug for DrainingListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainingListener")
            .field("inner", &self.inner)
            .field("draining", &self.is_draining())
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("unread", &self.progress.borrow().unread)
            .finish()
    }
}

/// Resolves once a [`DrainingListener`] stopped accepting and every connection it accepted was
/// read from or closed, or its first-byte timeout passed. From
/// [`DrainingListener::drained`]; `Send + 'static`, for a server's graceful shutdown.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "futures do nothing unless polled"]
pub struct Drained {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Future for Drained {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drained").finish_non_exhaustive()
    }
}

async fn drained(mut progress: watch::Receiver<Progress>) {
    // An error: the listener and all its connections are gone, so nothing is left to wait for.
    let deadline = match progress.wait_for(|p| p.phase != Phase::Accepting).await {
        Ok(p) => match p.phase {
            Phase::Draining { deadline } => deadline,
            Phase::Accepting => return,
        },
        Err(_) => return,
    };
    if progress.borrow().unread == 0 {
        return;
    }
    let all_read = progress.wait_for(|p| p.unread == 0);
    let Some(deadline) = deadline else {
        let _ = all_read.await;
        return;
    };
    if tokio::time::timeout_at(deadline, all_read).await.is_err() {
        let unread = progress.borrow().unread;
        tracing::debug!(unread, "first bytes not in before the first-byte timeout: drained anyway");
    }
}

/// A connection accepted by a [`DrainingListener`]: the tokio stream, which reports to the
/// listener's [`Drained`] futures once its first bytes were read, the stream ended, a read
/// failed, or it was dropped.
///
/// Reads and writes go straight to the stream inside. A stream whose first bytes match the
/// beginning of the HTTP/2 connection preface counts as read once the whole preface was read,
/// or a byte departed from it: hyper-util reads that far before it serves anything.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
pub struct DrainingStream<S> {
    io: S,
    first_bytes: FirstBytes,
}

impl<S> DrainingStream<S> {
    /// The stream inside, for its peer address or socket options.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream inside. Reading from it directly is not seen by the [`Drained`] futures.
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

#[cfg(feature = "axum")]
mod axum_listener {
    use std::future::{poll_fn, Future};
    use std::io;
    use std::pin::pin;
    use std::task::Poll;
    use std::time::Duration;

    use super::{DrainingListener, DrainingStream, TokioListener};

    /// How long to wait before accepting again after an error that is not about one connection
    /// (`EMFILE`), as axum does for its own listeners.
    const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

    /// For `axum::serve`: accepts until the drain signal, then stays pending (axum stops asking
    /// once `drained` started its graceful shutdown). Accept errors are retried as axum's own
    /// listeners do: at once if they concern one connection, after a second otherwise.
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl<L: TokioListener> axum::serve::Listener for DrainingListener<L> {
        type Io = DrainingStream<L::Stream>;
        type Addr = L::Addr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                match poll_fn(|cx| self.poll_next(cx)).await {
                    Ok(Some(accepted)) => return accepted,
                    Ok(None) => return std::future::pending().await,
                    Err(e) => self.pause_after(e).await,
                }
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }

    impl<L: TokioListener> DrainingListener<L> {
        /// Returns at once after an error about one connection; otherwise after
        /// [`ACCEPT_ERROR_PAUSE`], or earlier if the drain signal fires meanwhile.
        async fn pause_after(&mut self, error: io::Error) {
            use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
            if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
                tracing::debug!(%error, "accepting a connection failed; accepting the next");
                return;
            }
            tracing::error!(%error, "accepting a connection failed; trying again in {ACCEPT_ERROR_PAUSE:?}");
            let mut pause = pin!(tokio::time::sleep(ACCEPT_ERROR_PAUSE));
            poll_fn(|cx| match self.poll_drain(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => pause.as_mut().poll(cx),
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
    use tokio::sync::oneshot;

    use super::{DrainingListener, FirstBytes, H2_PREFACE};

    /// Bounds every wait, to turn a hang into a failure.
    const TIMEOUT: Duration = Duration::from_secs(20);
    /// Long enough never to be what ends a test's drain.
    const NEVER: Duration = Duration::from_secs(3600);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
    }

    async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(TIMEOUT, future).await.unwrap_or_else(|_| panic!("timed out {what}"))
    }

    /// A drain signal and the switch that fires it.
    fn drain_signal() -> (oneshot::Sender<()>, impl Future<Output = ()> + Send + 'static) {
        let (fire, fired) = oneshot::channel::<()>();
        (fire, async move {
            let _ = fired.await;
        })
    }

    /// Polls once, without waiting.
    fn is_pending(future: &mut (impl Future + Unpin)) -> bool {
        Pin::new(future).poll(&mut Context::from_waker(Waker::noop())).is_pending()
    }

    async fn tcp_listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback listener")
    }

    #[test]
    fn a_connection_accepted_before_the_drain_and_read_after_it_holds_drained_until_read() {
        runtime().block_on(async {
            let tcp = tcp_listener().await;
            let addr = tcp.local_addr().unwrap();
            let (fire, signal) = drain_signal();
            let mut listener = DrainingListener::new(tcp, signal).first_byte_timeout(NEVER);
            let mut drained = listener.drained();

            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut conn, peer) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            assert_eq!(peer, client.local_addr().unwrap());
            fire.send(()).unwrap();
            assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
            assert!(listener.is_draining());
            assert!(is_pending(&mut drained), "drained with a connection not read from");

            // The request comes after the drain signal; until it is read, the drain waits.
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            assert!(is_pending(&mut drained), "drained before the bytes that came were read");
            let mut request = [0u8; 18];
            within("reading the request", conn.read_exact(&mut request)).await.unwrap();
            within("drained after the first read", &mut drained).await;

            // And the connection is served to the end.
            conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            drop(conn);
            let mut response = Vec::new();
            within("the response", client.read_to_end(&mut response)).await.unwrap();
            assert_eq!(response, b"HTTP/1.1 200 OK\r\n\r\n");
        });
    }

    #[test]
    fn a_connection_that_sends_nothing_holds_drained_only_for_the_first_byte_timeout() {
        runtime().block_on(async {
            let tcp = tcp_listener().await;
            let addr = tcp.local_addr().unwrap();
            let (fire, signal) = drain_signal();
            let mut listener =
                DrainingListener::new(tcp, signal).first_byte_timeout(Duration::from_millis(50));
            let drained = listener.drained();

            let _silent = TcpStream::connect(addr).await.unwrap();
            let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            fire.send(()).unwrap();
            assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
            within("drained after the first-byte timeout", drained).await;
            // Still open and never read: only the timeout can have ended the wait.
            assert_eq!(listener.progress.borrow().unread, 1);
            drop(conn);
        });
    }

    #[test]
    fn after_the_drain_signal_nothing_more_is_accepted() {
        runtime().block_on(async {
            // Two descriptors for one socket, as the old and the new owner hold after a handoff.
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let next_owner_copy = std_listener.try_clone().unwrap();
            std_listener.set_nonblocking(true).unwrap();
            let next_owner = TcpListener::from_std(next_owner_copy).unwrap();
            let (fire, signal) = drain_signal();
            let mut listener = DrainingListener::new(TcpListener::from_std(std_listener).unwrap(), signal);

            // Queued before the signal is seen: the signal goes first.
            let early = TcpStream::connect(addr).await.unwrap();
            fire.send(()).unwrap();
            assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
            let late = TcpStream::connect(addr).await.unwrap();
            assert!(within("accepting after the drain", listener.accept()).await.unwrap().is_none());

            // Both stayed queued on the socket for the next owner.
            for client in [early, late] {
                let (_, peer) = within("the next owner accepting", next_owner.accept()).await.unwrap();
                assert_eq!(peer, client.local_addr().unwrap());
            }
            within("drained with nothing accepted", listener.drained()).await;
        });
    }

    #[test]
    fn connections_that_close_or_are_dropped_unread_count_as_read_on_a_unix_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        runtime().block_on(async {
            let (fire, signal) = drain_signal();
            let mut listener =
                DrainingListener::new(UnixListener::bind(&path).unwrap(), signal).first_byte_timeout(NEVER);
            let mut drained = listener.drained();
            let _first = UnixStream::connect(&path).await.unwrap();
            let (dropped, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            let second = UnixStream::connect(&path).await.unwrap();
            let (mut closed, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            fire.send(()).unwrap();
            assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());

            drop(dropped);
            assert!(is_pending(&mut drained), "drained with a connection not read from");
            drop(second);
            let mut rest = Vec::new();
            within("reading to the end", closed.read_to_end(&mut rest)).await.unwrap();
            assert!(rest.is_empty());
            within("drained", drained).await;
        });
    }

    #[test]
    fn a_stream_starting_with_the_http2_preface_counts_as_read_once_the_preface_is_complete() {
        runtime().block_on(async {
            let tcp = tcp_listener().await;
            let addr = tcp.local_addr().unwrap();
            let (fire, signal) = drain_signal();
            let mut listener = DrainingListener::new(tcp, signal).first_byte_timeout(NEVER);
            let mut drained = listener.drained();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            fire.send(()).unwrap();
            assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());

            let (start, end) = H2_PREFACE.split_at(16);
            client.write_all(start).await.unwrap();
            let mut buf = vec![0u8; start.len()];
            within("reading the preface's start", conn.read_exact(&mut buf)).await.unwrap();
            assert!(is_pending(&mut drained), "drained in the middle of the preface");
            client.write_all(end).await.unwrap();
            let mut buf = vec![0u8; end.len()];
            within("reading the preface's end", conn.read_exact(&mut buf)).await.unwrap();
            within("drained", drained).await;
        });
    }

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

    /// Without a drain signal: the listener's end starts the drain, first-byte timeout included.
    #[test]
    fn a_dropped_listener_counts_as_told_to_drain() {
        runtime().block_on(async {
            let tcp = tcp_listener().await;
            let addr = tcp.local_addr().unwrap();
            let mut listener = DrainingListener::new(tcp, std::future::pending())
                .first_byte_timeout(Duration::from_millis(50));
            let drained = listener.drained();
            let _silent = TcpStream::connect(addr).await.unwrap();
            let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            drop(listener);
            within("drained after the first-byte timeout", drained).await;
            drop(conn);
        });
    }

    /// With the `axum` feature the listener goes to `axum::serve`, and `drained` to its graceful
    /// shutdown; `tap_io` gives it `ConnectInfo`.
    #[cfg(feature = "axum")]
    #[test]
    fn axum_serves_through_it_with_connect_info_and_stops_once_drained() {
        use std::net::SocketAddr;

        use axum::extract::ConnectInfo;
        use axum::serve::ListenerExt;

        runtime().block_on(async {
            let tcp = tcp_listener().await;
            let addr = tcp.local_addr().unwrap();
            let (fire, signal) = drain_signal();
            let listener = DrainingListener::new(tcp, signal);
            let drained = listener.drained();
            let app = axum::Router::new().route(
                "/",
                axum::routing::get(
                    |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() },
                ),
            );
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let server = axum::serve(listener.tap_io(|_| ()), app).with_graceful_shutdown(drained);
            let server = tokio::spawn(async move { server.await });

            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut response = Vec::new();
            within("the response", client.read_to_end(&mut response)).await.unwrap();
            let response = String::from_utf8(response).unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
            assert!(response.ends_with(&client.local_addr().unwrap().to_string()), "{response:?}");

            fire.send(()).unwrap();
            within("the server to shut down", server).await.unwrap().unwrap();
        });
    }
}
