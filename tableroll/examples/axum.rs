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
//! `SIGTERM`), `exit pid=PID served=N` once the requests in flight are answered.
//!
//! The lines marked `// tableroll` are all the library needs: six lines, five for a server that
//! drains on upgrades only and hands `upgrade_complete()` straight to the listener. The
//! `DrainingListener` is for axum's graceful shutdown, which also cancels the connections it
//! accepted but has not read from yet: during an upgrade, clients whose request is on its way.
//! So the drain signal goes to the listener, which stops accepting, and axum's shutdown waits
//! for `drained()`: every connection accepted before the signal read from (or closed, or silent
//! for 10 s).

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

    let upgrader = tableroll::Upgrader::new(&dir)?; // tableroll
    let tcp = upgrader.fds().listen_tcp_tokio("web", &addr)?; // tableroll
    upgrader.ready()?; // tableroll
    println!("ready pid={} addr={}", app.pid, tcp.local_addr()?);
    let told_to_drain = until_told_to_drain(upgrader.upgrade_complete(), app.pid); // tableroll
    let listener = tableroll::DrainingListener::new(tcp, told_to_drain); // tableroll
    let drained = listener.drained(); // tableroll
    axum::serve(listener, router(app.clone())).with_graceful_shutdown(drained).await?;

    println!("exit pid={} served={}", app.pid, app.served.load(Ordering::SeqCst));
    Ok(())
}

/// Resolves when this generation should stop accepting and drain: a newer one took over, or
/// an operator asked it to stop. Polled by the `DrainingListener`, so `draining` is printed when
/// it stops accepting.
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
