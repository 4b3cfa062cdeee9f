//! A hyper 1 server on hyper-util, HTTP/1.1 and HTTP/2 on one port (chosen per connection),
//! upgraded in place: each new generation takes the listening socket over from the running one,
//! and the old one finishes its requests before it exits.
//!
//! ```text
//! cargo run --example hyper -- [DIR] [ADDR]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default: `tableroll-hyper` in
//! `$XDG_RUNTIME_DIR`, else in the temporary directory; created if missing); `ADDR` the address
//! to listen on (default `127.0.0.1:8080`).
//!
//! Try it by hand, in two terminals:
//!
//! ```text
//! terminal 1$ cargo run --example hyper                       # ready pid=1001 addr=127.0.0.1:8080
//! terminal 2$ curl localhost:8080/                            # hello from 1001
//! terminal 2$ curl --http2-prior-knowledge localhost:8080/    # hello from 1001 (HTTP/2)
//! terminal 2$ cargo run --example hyper                       # ready pid=1002 addr=127.0.0.1:8080
//!                                                             # terminal 1: draining pid=1001,
//!                                                             # exit pid=1001 served=2
//! terminal 2$ curl localhost:8080/                            # hello from 1002
//! ```
//!
//! Stdout, for scripts and tests: `ready pid=PID addr=ADDR`, `draining pid=PID` (a newer
//! generation took over, or `SIGINT` / `SIGTERM`), `drain cut short pid=PID` (a second signal
//! during the drain ends it at once), `exit pid=PID served=N`.
//!
//! The lines marked `// tableroll` are what the library needs: seven. The `DrainingListener`,
//! taken as a `Stream` of connections, stops accepting at the drain signal and ends once every
//! connection accepted was read from and every HTTP/1 connection closed (for at most 5 s), so
//! that hyper-util's graceful shutdown cancels no request on its way; `connection_close()`
//! answers the next request of a kept-alive HTTP/1 connection with `Connection: close`, and
//! HTTP/2 connections get hyper's `GOAWAY` at the shutdown. Neither hyper-util nor tokio sets
//! `TCP_NODELAY` on accepted connections: `tcp_nodelay(true)` does.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use stop_signals::{until_told_to_drain, StopSignals};

#[path = "common/args.rs"]
mod args;
#[path = "common/stop_signals.rs"]
mod stop_signals;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args::dir_and_addr("hyper")?;
    let pid = std::process::id();
    let served = Arc::new(AtomicU64::new(0));
    let stop = StopSignals::listen()?;

    let upgrader = tableroll::Upgrader::new(&dir)?; // tableroll
    let tcp = upgrader.fds().listen_tcp_tokio("web", &addr)?; // tableroll
    upgrader.ready()?; // tableroll
    println!("ready pid={pid} addr={}", tcp.local_addr()?);
    let told_to_drain = until_told_to_drain(upgrader.upgrade_complete(), stop.clone(), pid); // tableroll
    let mut listener = tableroll::DrainingListener::new(tcp, told_to_drain).tcp_nodelay(true); // tableroll
    let close = listener.connection_close(); // tableroll

    let (http, graceful) = (auto::Builder::new(TokioExecutor::new()), GracefulShutdown::new());
    let serve = async {
        // Ends once the listener stopped and `drained()` is due.
        while let Some(Ok(conn)) = listener.next().await {
            let served = served.clone();
            let hello = hyper::service::service_fn(move |request| hello(request, pid, served.clone()));
            let conn = http.serve_connection_with_upgrades(TokioIo::new(conn), close.service(hello)); // tableroll
            tokio::spawn(graceful.watch(conn.into_owned()));
        }
        graceful.shutdown().await;
    };
    tokio::select! {
        () = serve => {}
        () = stop.second() => println!("drain cut short pid={pid}"),
    }

    println!("exit pid={pid} served={}", served.load(Ordering::SeqCst));
    Ok(())
}

async fn hello(
    _: Request<Incoming>,
    pid: u32,
    served: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    served.fetch_add(1, Ordering::SeqCst);
    Ok(Response::new(Full::new(Bytes::from(format!("hello from {pid}\n")))))
}
