//! An actix-web server upgraded in place: each new generation takes the listening socket over
//! from the running one, and the old one finishes its requests in flight before it exits.
//!
//! ```text
//! cargo run --example actix -- [DIR] [ADDR]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default: `tableroll-actix` in
//! `$XDG_RUNTIME_DIR`, else in the temporary directory; created if missing). `ADDR` is the
//! address to listen on (default `127.0.0.1:8080`); a later generation given the same address
//! (or a port 0 one) inherits the socket, while one given another address binds that one and
//! the old socket closes when it becomes the owner.
//!
//! Try it by hand, in two terminals:
//!
//! ```text
//! terminal 1$ cargo run --example actix         # ready pid=1001 addr=127.0.0.1:8080
//! terminal 2$ curl localhost:8080/              # hello from 1001
//! terminal 2$ curl 'localhost:8080/slow?ms=10000' &
//! terminal 2$ cargo run --example actix         # ready pid=1002 addr=127.0.0.1:8080
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
//! `SIGTERM`), `forced pid=PID` if a second `SIGINT` / `SIGTERM` cut the drain short, and
//! `exit pid=PID served=N` at the end.
//!
//! The lines marked `// tableroll` are all the library needs. The rest of the drain is actix's,
//! and its order matters. Actix accepts on a thread of its own, which hands each connection to
//! a worker's queue; the worker takes it from there and starts reading it. A graceful
//! `stop(true)` drops the connections still in a worker's queue, and closes those whose
//! request has not started, even if its bytes have arrived. During an upgrade those are
//! clients whose request is on its way: stopping at once lost requests in 2 of 5 test runs of 5
//! upgrades with a new connection per request, and in 4 of 5 with kept-alive connections
//! (`docs/frameworks.md` has the figures). So the drain
//!
//! 1. marks every response from now on `Connection: close`, so that each kept-alive client
//!    finishes its request here and sends the next one on a new connection, to the new
//!    generation;
//! 2. pauses accepting (`ServerHandle::pause`): the accepting thread takes the listener out of
//!    its poll set; new connections wait in the listening socket's queue, which both
//!    generations share, and the new one accepts them. Nothing else changes;
//! 3. waits a grace period (`TABLEROLL_ACTIX_GRACE_MS`, default 300 ms): the workers take the
//!    connections from their queues and start the requests that arrive on them;
//! 4. stops gracefully (`stop(true)`): the requests under way are answered, then every
//!    connection is closed. A stopping worker checks its connections once a second (so a drain
//!    with a request in flight takes at least a second more) and drops them after actix's
//!    `shutdown_timeout` (30 s by default, set below).
//!
//! A second `SIGINT` / `SIGTERM` during the drain drops actix's server future, which stops
//! the workers at once; `stop(false)` would not help then, as actix waits for the first stop
//! command to finish before it reads another.
//!
//! `TABLEROLL_ACTIX_GRACE_MS=0` stops right after the pause, as a plain `stop(true)` does, to
//! measure what the grace protects. What it cannot protect: a connection that reached a worker
//! which did not run for the whole grace (seen under heavy CPU overload), a request that
//! arrives later than the grace after its connection was accepted (a slow client), and a
//! kept-alive connection idle for the whole grace whose next request arrives just as actix
//! closes it (the race of every HTTP/1.1 server that closes idle connections; the client sees
//! the connection closed and may retry).
//!
//! The listener is shared with the other generation as one open file description, and so are
//! its file status flags: actix switches it to non-blocking (`O_NONBLOCK`) in `listen`. That
//! changes nothing between generations of this example, which all accept in non-blocking mode,
//! but a generation that accepts in blocking mode would get `WouldBlock` once this one started.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpServer};
use stop_signals::{until_told_to_drain, StopSignals};

#[path = "common/args.rs"]
mod args;
#[path = "common/stop_signals.rs"]
mod stop_signals;

/// The longest `/slow` delay honoured, so a typo cannot keep a generation alive for hours.
const MAX_SLOW: Duration = Duration::from_secs(300);
/// The largest body `/upload` reads.
const MAX_UPLOAD: usize = 1 << 20;
/// How long the drain lets accepted connections reach a worker and their requests start,
/// unless `TABLEROLL_ACTIX_GRACE_MS` says otherwise.
const GRACE: Duration = Duration::from_millis(300);
/// How long a stopping worker waits for its connections before it drops them, in seconds.
const SHUTDOWN_TIMEOUT: u64 = 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args::dir_and_addr("actix")?;
    let grace = grace()?;
    let app = web::Data::new(App { pid: std::process::id(), ..App::default() });

    let upgrader = tableroll::Upgrader::new(&dir)?; // tableroll
    let listener = upgrader.fds().listen_tcp("web", &addr)?; // tableroll
    actix_web::rt::System::new().block_on(serve(&upgrader, listener, app.clone(), grace))?;

    println!("exit pid={} served={}", app.pid, app.served.load(Ordering::SeqCst));
    Ok(())
}

/// Serves on `listener` until told to drain, then drains.
async fn serve(
    upgrader: &tableroll::Upgrader,
    listener: TcpListener,
    app: web::Data<App>,
    grace: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let addr = listener.local_addr()?;
    let server = HttpServer::new({
        let app = app.clone();
        move || {
            actix_web::App::new()
                .app_data(app.clone())
                .wrap(from_fn(close_when_draining))
                .route("/", web::get().to(hello))
                .route("/slow", web::get().to(slow))
                .route("/upload", web::post().to(upload))
        }
    })
    .disable_signals() // this program decides when to stop, below
    .shutdown_timeout(SHUTDOWN_TIMEOUT)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let mut running = actix_web::rt::spawn(server);
    let stop = StopSignals::listen()?;
    upgrader.ready()?; // tableroll
    println!("ready pid={} addr={addr}", app.pid);

    tokio::select! {
        result = &mut running => return Ok(result??), // a server that ends by itself
        () = until_told_to_drain(upgrader.upgrade_complete(), stop.clone(), app.pid) => {} // tableroll
    }
    let forced = tokio::select! {
        () = drain(&handle, &app, grace) => false,
        () = stop.second() => true,
    };
    if forced {
        // Dropping actix's server future stops its workers at once, closing every connection;
        // `handle.stop(false)` would not: actix handles one stop command at a time.
        running.abort();
        println!("forced pid={}", app.pid);
    }
    match running.await {
        Ok(result) => Ok(result?),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stops `handle`'s server without dropping a request that reached it (see the module docs);
/// returns when it stopped.
async fn drain(handle: &ServerHandle, app: &App, grace: Duration) {
    app.draining.store(true, Ordering::SeqCst);
    handle.pause().await;
    actix_web::rt::time::sleep(grace).await;
    handle.stop(true).await;
}

/// Once draining, tells each client that this response is the connection's last one (also for
/// a request that started before the drain).
async fn close_when_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let app = req.app_data::<web::Data<App>>().cloned();
    let mut res = next.call(req).await?;
    if app.is_some_and(|app| app.draining.load(Ordering::SeqCst)) {
        res.response_mut().head_mut().set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// What the handlers share.
#[derive(Default)]
struct App {
    pid: u32,
    served: AtomicU64,
    /// Set when the drain starts; see [`close_when_draining`].
    draining: AtomicBool,
}

impl App {
    fn answer(&self, body: String) -> String {
        self.served.fetch_add(1, Ordering::SeqCst);
        body
    }
}

async fn hello(app: web::Data<App>) -> String {
    app.answer(format!("hello from {}\n", app.pid))
}

async fn slow(app: web::Data<App>, query: web::Query<HashMap<String, String>>) -> String {
    let ms = query.get("ms").and_then(|ms| ms.parse().ok()).unwrap_or(1000);
    actix_web::rt::time::sleep(Duration::from_millis(ms).min(MAX_SLOW)).await;
    app.answer(format!("hello from {}\n", app.pid))
}

async fn upload(app: web::Data<App>, body: web::Payload) -> Result<String, actix_web::Error> {
    println!("upload pid={}", app.pid);
    let bytes = body.to_bytes_limited(MAX_UPLOAD).await.map_err(actix_web::error::ErrorPayloadTooLarge)??;
    Ok(app.answer(format!("received {} bytes; hello from {}\n", bytes.len(), app.pid)))
}

/// `TABLEROLL_ACTIX_GRACE_MS`, or [`GRACE`].
fn grace() -> Result<Duration, String> {
    match std::env::var("TABLEROLL_ACTIX_GRACE_MS") {
        Ok(ms) => {
            ms.parse().map(Duration::from_millis).map_err(|e| format!("TABLEROLL_ACTIX_GRACE_MS={ms:?}: {e}"))
        }
        Err(std::env::VarError::NotPresent) => Ok(GRACE),
        Err(e) => Err(format!("TABLEROLL_ACTIX_GRACE_MS: {e}")),
    }
}
