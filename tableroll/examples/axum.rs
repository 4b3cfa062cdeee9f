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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::Router;
use stop_signals::{until_told_to_drain, StopSignals};

#[path = "common/args.rs"]
mod args;
#[path = "common/stop_signals.rs"]
mod stop_signals;

/// The longest `/slow` delay honoured, so a typo cannot keep a generation alive for hours.
const MAX_SLOW: Duration = Duration::from_secs(300);
/// The largest body `/upload` reads.
const MAX_UPLOAD: usize = 1 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args::dir_and_addr("axum")?;
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
