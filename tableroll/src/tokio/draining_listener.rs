//! [`DrainingListener`]: a tokio listener that stops accepting when told to drain.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::drained::Drained;
use super::draining_stream::DrainingStream;
use super::progress::{Phase, Progress};
use super::tokio_listener::TokioListener;
use crate::error::{Error, Result};

/// How long, after the drain signal, connections accepted before it may take to deliver a
/// request head, unless [`DrainingListener::request_head_timeout`] says otherwise.
const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, after the drain signal, kept-alive HTTP/1 connections get to send one more request
/// before the server's graceful shutdown closes them, unless
/// [`DrainingListener::keep_alive_grace`] says otherwise.
const DEFAULT_KEEP_ALIVE_GRACE: Duration = Duration::from_secs(5);

/// A tokio listener that stops accepting when told to drain, and says when the server's
/// graceful shutdown can start without cutting a request.
///
/// Built from a [`TcpListener`](tokio::net::TcpListener) or a
/// [`UnixListener`](tokio::net::UnixListener) (such as [`Fds::listen_tcp_tokio`] gives) and a
/// drain signal: any `Future<Output = ()> + Send + 'static`, usually
/// [`Upgrader::upgrade_complete`] or that combined with `SIGTERM`. Until the signal fires it
/// accepts as the listener does, wrapping each connection in a [`DrainingStream`]. From then on
/// it accepts nothing: connections still queued on the socket are left to the process that owns
/// it now.
///
/// [`drained`](Self::drained) gives the future to start the server's graceful shutdown with. It
/// resolves once the listener stopped and
/// - every connection accepted delivered its first request (its first bytes; for HTTP/2, its
///   first `HEADERS` frame) or closed, or the
///   [request-head timeout](Self::request_head_timeout) passed (10 s by default): hyper-util, and
///   so axum, cancels at the graceful shutdown the connections it has not read from yet (it takes
///   them for idle ones), but during an upgrade they are clients whose request is on its way;
/// - then every HTTP/1 connection closed, or the [keep-alive grace](Self::keep_alive_grace)
///   passed (5 s by default): with `connection_close()` (feature `http`) on the service,
///   a kept-alive connection's next request is answered with `Connection: close` and the
///   connection closed after it, instead of being cut between two requests by the graceful
///   shutdown while the client sends on it. HTTP/2 connections are not waited for: the graceful
///   shutdown's `GOAWAY` tells their clients in time.
///
/// So the drain signal goes to this listener only, not to the server as well. The listener sees
/// it while it is polled: while [`accept`](Self::accept) is awaited, which a server does all the
/// time. A listener dropped before the signal counts as stopped.
///
/// A drain is bounded: a connection that sent part of a request head and stalls has its read
/// fail once the request-head timeout passed (see [`DrainingStream`]), and one that sends
/// nothing is dropped by the graceful shutdown. A request in progress (a slow handler, a body
/// uploading) is the server's to bound; to end a drain early, stop awaiting the server on a
/// second stop signal (the examples show how).
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
/// let (drained, app) = (listener.drained(), app.layer(listener.connection_close()));
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
/// # Example: tonic
///
/// The listener is a [`Stream`](futures_core::Stream) of connections that ends only once
/// `drained` resolved, and with the `tonic` feature each connection is tonic's `Connected`:
///
/// ```ignore
/// let listener = tableroll::DrainingListener::new(tcp, upgrader.upgrade_complete()).tcp_nodelay(true);
/// let drained = listener.drained();
/// tonic::transport::Server::builder()
///     .add_service(service)
///     .serve_with_incoming_shutdown(listener, drained)
///     .await?;
/// ```
///
/// Give tonic `drained` as its shutdown signal: with `serve_with_incoming` alone, tonic returns
/// as soon as the stream ends, without waiting for the connections it serves.
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
/// let mut listener = tableroll::DrainingListener::new(tcp, upgrader.upgrade_complete()).tcp_nodelay(true);
/// let (drained, close) = (listener.drained(), listener.connection_close());
/// let (http, graceful) = (Builder::new(TokioExecutor::new()), GracefulShutdown::new());
/// while let Some((conn, _peer)) = listener.accept().await? {
///     let service = close.service(hyper::service::service_fn(hello));
///     let conn = http.serve_connection(TokioIo::new(conn), service);
///     tokio::spawn(graceful.watch(conn.into_owned()));
/// }
/// drained.await; // nothing unread is cancelled, kept connections were told to close
/// graceful.shutdown().await;
/// ```
///
/// `tableroll/examples/hyper.rs` is the same loop on the listener as a `Stream` (which never
/// yields an accept error, and ends once `drained` is due).
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
    request_head_timeout: Duration,
    keep_alive_grace: Duration,
    nodelay: bool,
    pub(super) progress: watch::Sender<Progress>,
    /// Set while accepting waits after an error that concerns the process (`EMFILE`).
    pub(super) accept_pause: Option<Pin<Box<Sleep>>>,
    /// What the [`Stream`](futures_core::Stream) of connections waits for once the listener
    /// stopped: it ends when this resolves.
    pub(super) stream_end: Option<Drained>,
}

impl<L: TokioListener> DrainingListener<L> {
    /// Wraps `listener`, which accepts until `drain` resolves.
    ///
    /// Needs no runtime: the drain signal is polled only by [`accept`](Self::accept).
    pub fn new(listener: L, drain: impl Future<Output = ()> + Send + 'static) -> Self {
        DrainingListener {
            inner: listener,
            drain: Some(Box::pin(drain)),
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            keep_alive_grace: DEFAULT_KEEP_ALIVE_GRACE,
            nodelay: false,
            progress: watch::Sender::new(Progress::default()),
            accept_pause: None,
            stream_end: None,
        }
    }

    /// Whether to set `TCP_NODELAY` on each TCP connection accepted (off by default, as on a
    /// tokio listener). Neither hyper-util nor tonic's `serve_with_incoming` set it, and HTTP/2
    /// or gRPC with a new connection per request ran several times faster with it. A connection
    /// on which it cannot be set is served without it.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// How long, after the drain signal, the connections accepted before it may take to deliver
    /// a request head; 10 s by default. [`Drained`] waits for the first request of each that long
    /// at most (then the server's graceful shutdown drops the silent ones), and a read waiting
    /// on the rest of an unfinished head fails once it passed (see [`DrainingStream`]). A
    /// request head that started before the signal gets the same time.
    pub fn request_head_timeout(mut self, timeout: Duration) -> Self {
        self.request_head_timeout = timeout;
        self
    }

    /// How long, after the drain signal, [`Drained`] waits at most for HTTP/1 connections to
    /// close before it resolves, so that a kept-alive connection's next request is served (and,
    /// with `connection_close()` (feature `http`), answered with `Connection: close`)
    /// rather than cut; 5 s by default. When it passes, the server's graceful shutdown closes
    /// those still idle: a client that sends on one just then loses that request (HTTP lets
    /// it retry, not every client does). A longer grace makes that rarer and the old process
    /// slower to exit; zero closes them at once.
    pub fn keep_alive_grace(mut self, grace: Duration) -> Self {
        self.keep_alive_grace = grace;
        self
    }

    /// A future that resolves once this listener stopped accepting, every connection it
    /// accepted delivered its first request or closed (or the
    /// [request-head timeout](Self::request_head_timeout) passed), and every HTTP/1 connection
    /// closed (or the [keep-alive grace](Self::keep_alive_grace) passed): the signal for the
    /// server's graceful shutdown. Each call gives a future of its own; all resolve together.
    ///
    /// # Panics
    ///
    /// The future panics if it has to wait for a timeout outside a tokio runtime with its time
    /// driver enabled (`#[tokio::main]` enables it).
    pub fn drained(&self) -> Drained {
        Drained::new(self.progress.subscribe())
    }

    /// Accepts a connection, or returns `None` once the drain signal fired (then and at every
    /// later call). Cancel-safe: dropped before it resolves, it accepted nothing.
    ///
    /// # Errors
    ///
    /// Accepting failed ([`ErrorKind::Io`](crate::ErrorKind::Io), with the error of
    /// [`accept(2)`](https://man7.org/linux/man-pages/man2/accept.2.html)). Some of these
    /// concern one connection only (`ECONNABORTED`), some the process (`EMFILE`): the listener
    /// can be used again after either.
    pub async fn accept(&mut self) -> Result<Option<(DrainingStream<L::Stream>, L::Addr)>> {
        poll_fn(|cx| self.poll_next(cx)).await.map_err(|e| Error::io("accepting a connection", e))
    }

    /// The [`ConnectionCloseLayer`](crate::ConnectionCloseLayer) for the server's HTTP service:
    /// once this listener drains, HTTP/1 responses say `Connection: close` (lame-duck
    /// keep-alive; see [`keep_alive_grace`](Self::keep_alive_grace)).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn connection_close(&self) -> crate::ConnectionCloseLayer {
        crate::ConnectionCloseLayer::new(self.progress.subscribe())
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// [`getsockname(2)`](https://man7.org/linux/man-pages/man2/getsockname.2.html) failed
    /// ([`ErrorKind::Io`](crate::ErrorKind::Io)).
    pub fn local_addr(&self) -> Result<L::Addr> {
        self.inner.local_addr().map_err(|e| Error::io("reading the listener's address", e))
    }

    /// The listener inside.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The drain signal first (a connection queued at the same time is the next owner's), then
    /// the listener.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Accepted<L>>>> {
        if self.poll_drain(cx).is_ready() {
            return Poll::Ready(Ok(None));
        }
        let (io, addr) = ready!(self.inner.poll_accept(cx))?;
        if self.nodelay {
            if let Err(error) = L::set_nodelay(&io, true) {
                tracing::debug!(%error, "setting TCP_NODELAY on an accepted connection failed");
            }
        }
        // Counted without waking anyone: nothing waits for the count to grow.
        self.progress.send_if_modified(|p| {
            p.unread += 1;
            p.open_http1 += 1;
            false
        });
        Poll::Ready(Ok(Some((DrainingStream::new(io, self.progress.clone()), addr))))
    }
}

pub(super) type Accepted<L> = (DrainingStream<<L as TokioListener>::Stream>, <L as TokioListener>::Addr);

impl<L> DrainingListener<L> {
    /// Whether the drain signal fired: the listener accepts no more.
    pub fn is_draining(&self) -> bool {
        self.drain.is_none()
    }

    /// Ready once the drain signal fired; stops accepting then.
    pub(super) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(drain) = &mut self.drain {
            ready!(drain.as_mut().poll(cx));
            self.stop_accepting();
        }
        Poll::Ready(())
    }

    fn stop_accepting(&mut self) {
        self.drain = None;
        let now = Instant::now();
        let head_deadline = now.checked_add(self.request_head_timeout);
        let keep_alive_deadline = now.checked_add(self.keep_alive_grace);
        let stopped = self.progress.send_if_modified(|p| {
            let accepting = p.phase == Phase::Accepting;
            if accepting {
                p.phase = Phase::Draining { head_deadline, keep_alive_deadline };
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
            .field("request_head_timeout", &self.request_head_timeout)
            .field("keep_alive_grace", &self.keep_alive_grace)
            .field("tcp_nodelay", &self.nodelay)
            .field("unread", &self.progress.borrow().unread)
            .finish()
    }
}
