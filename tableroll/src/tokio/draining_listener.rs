//! [`DrainingListener`]: a tokio listener that stops accepting when told to drain.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::drained::Drained;
use super::draining_stream::DrainingStream;
use super::progress::{Phase, Progress};
use super::tokio_listener::TokioListener;
use crate::error::{Error, Result};

/// How long [`Drained`] waits for the first bytes of connections accepted before the drain,
/// unless [`DrainingListener::first_byte_timeout`] says otherwise.
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub(super) progress: watch::Sender<Progress>,
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
        // Counted without waking anyone: nothing waits for the count to grow.
        self.progress.send_if_modified(|p| {
            p.unread += 1;
            false
        });
        Poll::Ready(Ok(Some((DrainingStream::new(io, self.progress.clone()), addr))))
    }
}

type Accepted<L> = (DrainingStream<<L as TokioListener>::Stream>, <L as TokioListener>::Addr);

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
