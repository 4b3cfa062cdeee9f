//! An axum server upgraded in place: each new generation takes the listening socket over from
//! the running one, and the old one finishes its requests in flight before it exits.
//!
//! ```text
//! cargo run --example axum -- [DIR] [ADDR]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default: `tableroll-axum` in
//! `$XDG_RUNTIME_DIR`, else in the temporary directory; created if missing). `ADDR` is the
//! address to listen on the first time (default `127.0.0.1:8080`); later generations inherit
//! the socket.
//!
//! Try it by hand, in two terminals:
//!
//! ```text
//! terminal 1$ cargo run --example axum          # ready pid=1001 addr=127.0.0.1:8080
//! terminal 2$ curl localhost:8080/              # hello from 1001
//! terminal 2$ curl 'localhost:8080/slow?ms=10000' &
//! terminal 2$ cargo run --example axum          # ready pid=1002 addr=127.0.0.1:8080
//!                                               # terminal 1: draining pid=1001, then, once the
//!                                               # slow request got its answer, exit pid=1001 …
//! terminal 2$ curl localhost:8080/              # hello from 1002
//! ```
//!
//! Endpoints: `GET /` answers `hello from PID`; `GET /slow?ms=N` answers the same after `N`
//! milliseconds; `POST /upload` reads the request body and answers with its length and the pid,
//! and prints `upload pid=PID` when it starts reading, so that a test can hold a request in
//! flight by sending the body late.
//!
//! One line on stdout for each step, for scripts and tests: `ready pid=PID addr=ADDR` once
//! serving, `draining pid=PID` when told to stop (a newer generation took over, or `SIGINT` /
//! `SIGTERM`), `exit pid=PID served=N` once the requests in flight are answered.
//!
//! The lines marked `// tableroll` are all the library needs: four lines. The `Handover`
//! listener at the end is there for axum's sake, not the library's: without it, axum's graceful
//! shutdown resets a request now and then at an upgrade under load (the comment there says why).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::serve::Listener;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// The longest `/slow` delay honoured, so a typo cannot keep a generation alive for hours.
const MAX_SLOW: Duration = Duration::from_secs(300);
/// The largest body `/upload` reads.
const MAX_UPLOAD: usize = 1 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args()?;
    let app = Arc::new(App { pid: std::process::id(), served: AtomicU64::new(0) });

    let upgrader = tableroll::Upgrader::new(&dir)?; // tableroll
    let listener = upgrader.fds().listen_tcp_tokio("web", &addr)?; // tableroll
    upgrader.ready()?; // tableroll
    println!("ready pid={} addr={}", app.pid, listener.local_addr()?);
    let told_to_drain = until_told_to_drain(upgrader.upgrade_complete(), app.pid); // tableroll
    let (listener, drained) = Handover::new(listener, told_to_drain);
    axum::serve(listener, router(app.clone())).with_graceful_shutdown(drained).await?;

    println!("exit pid={} served={}", app.pid, app.served.load(Ordering::SeqCst));
    Ok(())
}

/// Resolves when this generation should stop accepting and drain: a newer one took over, or
/// an operator asked it to stop. Polled by the [`Handover`] listener, so `draining` is printed
/// when it stops accepting.
async fn until_told_to_drain(upgrade_complete: tableroll::UpgradeComplete, pid: u32) {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = upgrade_complete => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
    println!("draining pid={pid}");
}

/// What the handlers share.
struct App {
    pid: u32,
    served: AtomicU64,
}

impl App {
    fn answer(&self, body: String) -> String {
        self.served.fetch_add(1, Ordering::SeqCst);
        body
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow))
        .route("/upload", post(upload))
        .with_state(app)
}

async fn hello(State(app): State<Arc<App>>) -> String {
    app.answer(format!("hello from {}\n", app.pid))
}

async fn slow(State(app): State<Arc<App>>, Query(query): Query<HashMap<String, String>>) -> String {
    let ms = query.get("ms").and_then(|ms| ms.parse().ok()).unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLOW)).await;
    app.answer(format!("hello from {}\n", app.pid))
}

async fn upload(State(app): State<Arc<App>>, body: Body) -> Result<String, String> {
    println!("upload pid={}", app.pid);
    let bytes =
        axum::body::to_bytes(body, MAX_UPLOAD).await.map_err(|e| format!("reading the body: {e}\n"))?;
    Ok(app.answer(format!("received {} bytes; hello from {}\n", bytes.len(), app.pid)))
}

/// `[DIR] [ADDR]`, with the defaults filled in and the directory created.
fn args() -> Result<(PathBuf, String), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| default_dir("tableroll-axum"));
    let addr = match args.next() {
        Some(addr) => addr.into_string().map_err(|a| format!("the address {a:?} is not UTF-8"))?,
        None => "127.0.0.1:8080".to_string(),
    };
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?}; usage: axum [DIR] [ADDR]").into());
    }
    create_private_dir(&dir)?;
    Ok((dir, addr))
}

/// `name` in the user's runtime directory, or else in the temporary directory.
fn default_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join(name)
}

/// The coordination directory is the trust boundary: only this user may enter it.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

// ---------------------------------------------------------------------------------------------
// Draining without a reset: the one thing axum needs beyond `with_graceful_shutdown`
//
// When its shutdown future fires, `axum::serve` stops accepting and also cancels every
// connection whose first bytes hyper has not read yet (hyper-util's auto builder is still
// choosing between HTTP/1 and HTTP/2 there: `Connection::graceful_shutdown` cancels that
// step). In a plain shutdown those are at worst idle connections. During an upgrade they are
// not: the listener stays open in the new generation, clients keep connecting and sending,
// and a connection the old generation accepted just before the upgrade completed would be
// reset with its request unanswered. So the listener below stops accepting as soon as it is
// told to drain, and the future handed to axum fires only once hyper has read from every
// connection accepted before that; from then on graceful shutdown waits for their requests.

/// The first bytes of an HTTP/2 connection, which hyper-util looks for to pick the protocol.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a connection accepted before the upgrade may keep the old generation waiting for
/// its first bytes: a client that connected and sends nothing is then dropped.
const FIRST_BYTES_LIMIT: Duration = Duration::from_secs(10);

/// What the listener and its connections tell the drain future.
#[derive(Debug, Default)]
struct Progress {
    /// The listener was told to drain and accepts no more.
    stopped: bool,
    /// Accepted connections hyper has not finished its first read from.
    unread: usize,
}

/// A listener that stops accepting when `stop` resolves and tracks the connections hyper has
/// not read from yet.
struct Handover<L> {
    inner: L,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    progress: watch::Sender<Progress>,
}

impl<L: Listener> Handover<L> {
    /// The listener for `axum::serve`, and the future for its `with_graceful_shutdown`.
    fn new(
        inner: L,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (Handover<L>, impl Future<Output = ()> + Send + 'static) {
        let (progress, watching) = watch::channel(Progress::default());
        (Handover { inner, stop: Box::pin(stop), progress }, drained(watching))
    }
}

impl<L: Listener> Listener for Handover<L> {
    type Io = FirstRead<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if !self.progress.borrow().stopped {
            tokio::select! {
                biased;
                () = &mut self.stop => self.progress.send_modify(|p| p.stopped = true),
                (io, addr) = self.inner.accept() => {
                    self.progress.send_modify(|p| p.unread += 1);
                    return (FirstRead { io, progress: Some(self.progress.clone()), preface_seen: 0 }, addr);
                }
            }
        }
        // Told to drain: connections still queued on the shared socket are the new generation's.
        std::future::pending().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Resolves once the listener stopped and hyper read from every connection it accepted (or
/// [`FIRST_BYTES_LIMIT`] after the stop, for clients that send nothing).
async fn drained(mut progress: watch::Receiver<Progress>) {
    // An error means the listener is gone, so nothing is left to wait for.
    let _ = progress.wait_for(|p| p.stopped).await;
    let _ = tokio::time::timeout(FIRST_BYTES_LIMIT, progress.wait_for(|p| p.unread == 0)).await;
}

/// A connection that reports when hyper-util has read enough of it to pick the protocol: the
/// first byte that is not the HTTP/2 preface, the whole preface, the end of the stream or an
/// error. Dropping it unread reports too.
struct FirstRead<S> {
    io: S,
    /// Until the report.
    progress: Option<watch::Sender<Progress>>,
    /// How many bytes read so far, while they match the preface.
    preface_seen: usize,
}

impl<S> FirstRead<S> {
    fn report(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.send_modify(|p| p.unread -= 1);
        }
    }

    /// Whether the protocol is decided once `new` bytes came.
    fn protocol_decided(&mut self, new: &[u8]) -> bool {
        let end = self.preface_seen + new.len();
        let still_preface = !new.is_empty() && H2_PREFACE.get(self.preface_seen..end) == Some(new);
        self.preface_seen = end;
        !still_preface || end >= H2_PREFACE.len()
    }
}

impl<S> Drop for FirstRead<S> {
    fn drop(&mut self) {
        self.report();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.progress.is_some() {
            match &result {
                Poll::Ready(Ok(())) if !self.protocol_decided(&buf.filled()[before..]) => {}
                Poll::Ready(_) => self.report(),
                Poll::Pending => {}
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
