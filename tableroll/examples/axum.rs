//! An axum server upgraded in place: each new generation takes the listening socket over from
//! the running one, and the old one finishes its requests in flight before it exits.
//!
//! ```text
//! cargo run --example axum -- [DIR] [ADDR]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default: `tableroll-axum` in
//! `$XDG_RUNTIME_DIR`, else in the temporary directory; created if missing). `ADDR` is the
//! address to listen on (default `127.0.0.1:8080`); a later generation given the same address
//! (or a port 0 one) inherits the socket, while one given another address binds that one and
//! the old socket closes when it becomes the owner.
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
//! `SIGTERM`), `exit pid=PID served=N` once the requests in flight are answered, preceded by
//! `drain cut short pid=PID` when a `SIGINT` or `SIGTERM` came during the drain (which ends it
//! at once, cutting what is still in flight).
//!
//! The lines marked `// tableroll` are all the library needs: seven lines. The
//! `DrainingListener` is for axum's graceful shutdown, which also cancels the connections it
//! accepted but has not read from yet: during an upgrade, clients whose request is on its way.
//! So the drain signal goes to the listener, which stops accepting, and axum's shutdown waits
//! for `drained()`: every connection accepted before the signal read from (or closed, or silent
//! for 10 s), then every kept-alive HTTP/1 connection closed, for at most 5 s, while
//! `connection_close()` answers their next request with `Connection: close`. A client that
//! sent half a request head and stalls is cut 10 s after the drain signal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::Router;

/// The longest `/slow` delay honoured, so a typo cannot keep a generation alive for hours.
const MAX_SLOW: Duration = Duration::from_secs(300);
/// The largest body `/upload` reads.
const MAX_UPLOAD: usize = 1 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args()?;
    let app = Arc::new(App { pid: std::process::id(), served: AtomicU64::new(0) });
    let stop = StopSignals::listen()?;

    let upgrader = tableroll::Upgrader::new(&dir)?; // tableroll
    let tcp = upgrader.fds().listen_tcp_tokio("web", &addr)?; // tableroll
    upgrader.ready()?; // tableroll
    println!("ready pid={} addr={}", app.pid, tcp.local_addr()?);
    let told_to_drain = until_told_to_drain(upgrader.upgrade_complete(), stop.clone(), app.pid); // tableroll
    let listener = tableroll::DrainingListener::new(tcp, told_to_drain).tcp_nodelay(true); // tableroll
    let drained = listener.drained(); // tableroll
    let router = router(app.clone()).layer(listener.connection_close()); // tableroll
    let server = axum::serve(listener, router).with_graceful_shutdown(drained);
    tokio::select! {
        served = server => served?,
        () = stop.second() => println!("drain cut short pid={}", app.pid),
    }

    println!("exit pid={} served={}", app.pid, app.served.load(Ordering::SeqCst));
    Ok(())
}

/// Resolves when this generation should stop accepting and drain: a newer one took over, or
/// an operator asked it to stop. Polled by the `DrainingListener`, so `draining` is printed when
/// it stops accepting.
async fn until_told_to_drain(upgrade_complete: tableroll::UpgradeComplete, stop: StopSignals, pid: u32) {
    tokio::select! {
        () = upgrade_complete => {}
        () = stop.first() => {}
    }
    stop.draining();
    println!("draining pid={pid}");
}

/// `SIGTERM` and `SIGINT`: the first one starts a drain (if an upgrade did not), one that
/// comes during a drain ends it at once, as an operator who sends it again expects.
#[derive(Clone)]
struct StopSignals {
    /// How many came so far.
    received: tokio::sync::watch::Receiver<u32>,
    /// How many had come when the drain started.
    drain_started: Arc<tokio::sync::watch::Sender<Option<u32>>>,
}

impl StopSignals {
    fn listen() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut terminate, mut interrupt) =
            (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        let (count, received) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                count.send_modify(|n| *n += 1);
            }
        });
        Ok(StopSignals { received, drain_started: Arc::new(tokio::sync::watch::Sender::new(None)) })
    }

    /// The first stop signal.
    async fn first(&self) {
        let _ = self.received.clone().wait_for(|&n| n > 0).await;
    }

    fn draining(&self) {
        let now = *self.received.borrow();
        self.drain_started.send_if_modified(|at| {
            let first = at.is_none();
            if first {
                *at = Some(now);
            }
            first
        });
    }

    /// A stop signal that came after the drain started.
    async fn second(&self) {
        let at = match self.drain_started.subscribe().wait_for(Option::is_some).await {
            Ok(at) => at.unwrap_or_default(),
            Err(_) => return std::future::pending().await,
        };
        let _ = self.received.clone().wait_for(|&n| n > at).await;
    }
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
