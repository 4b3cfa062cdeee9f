//! A tonic gRPC server upgraded in place: each new generation takes the listening socket over
//! from the running one, and the old one finishes its calls before it exits.
//!
//! ```text
//! cargo run --example tonic -- [DIR] [ADDR]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default: `tableroll-tonic` in
//! `$XDG_RUNTIME_DIR`, else in the temporary directory; created if missing); `ADDR` the address
//! to listen on (default `127.0.0.1:8080`).
//!
//! The service is the standard gRPC health service (`grpc.health.v1.Health`, from
//! `tonic-health`), so that the example needs no code generation: `Check` is a unary call,
//! `Watch` a server stream. Any tonic service goes the same way. Try it by hand with
//! [grpcurl](https://github.com/fullstorydev/grpcurl), in two terminals:
//!
//! ```text
//! terminal 1$ cargo run --example tonic                   # ready pid=1001 addr=127.0.0.1:8080
//! terminal 2$ grpcurl -plaintext 127.0.0.1:8080 grpc.health.v1.Health/Check   # SERVING
//! terminal 2$ grpcurl -plaintext 127.0.0.1:8080 grpc.health.v1.Health/Watch & # a stream
//! terminal 2$ cargo run --example tonic                   # ready pid=1002 addr=127.0.0.1:8080
//!                                                         # terminal 1: draining pid=1001; the
//!                                                         # stream gets NOT_SERVING and ends;
//!                                                         # exit pid=1001
//! ```
//!
//! Stdout, for scripts and tests: `ready pid=PID addr=ADDR`, `draining pid=PID` (a newer
//! generation took over, or `SIGINT` / `SIGTERM`), `drain cut short pid=PID` (a second signal
//! during the drain ends it at once), `exit pid=PID`.
//!
//! The lines marked `// tableroll` are what the library needs: six. The `DrainingListener` is a
//! `Stream` of connections for `serve_with_incoming_shutdown` (with the `tonic` feature, its
//! connections are tonic's `Connected`), and `drained()` is the shutdown signal: tonic stops
//! accepting only once every connection accepted was read from, then sends `GOAWAY` and waits
//! for the calls in progress. Give tonic that signal: with `serve_with_incoming` alone it would
//! return when the stream ends, without waiting for a call.
//!
//! A server stream lasts as long as its service keeps it open, and tonic waits for it: a
//! service with long-lived streams ends them when the drain starts (here, `Watch` streams get
//! `NOT_SERVING`, then their end, and the client calls the new owner).

use std::future::Future;

use stop_signals::{until_told_to_drain, StopSignals};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

#[path = "common/args.rs"]
mod args;
#[path = "common/stop_signals.rs"]
mod stop_signals;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args::dir_and_addr("tonic")?;
    let pid = std::process::id();
    let stop = StopSignals::listen()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;

    let upgrader = tableroll::Upgrader::new(&dir)?; // tableroll
    let tcp = upgrader.fds().listen_tcp_tokio("grpc", &addr)?; // tableroll
    upgrader.ready()?; // tableroll
    println!("ready pid={pid} addr={}", tcp.local_addr()?);
    let told_to_drain = until_told_to_drain(upgrader.upgrade_complete(), stop.clone(), pid); // tableroll
    let told_to_drain = end_watch_streams(told_to_drain, reporter);
    let listener = tableroll::DrainingListener::new(tcp, told_to_drain).tcp_nodelay(true); // tableroll
    let drained = listener.drained(); // tableroll
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(listener, drained);
    tokio::select! {
        served = server => served?,
        () = stop.second() => println!("drain cut short pid={pid}"),
    }

    println!("exit pid={pid}");
    Ok(())
}

/// `told_to_drain`, after which the `Watch` streams are told `NOT_SERVING` and ended (the
/// status is removed): nothing else would end them.
async fn end_watch_streams(told_to_drain: impl Future<Output = ()>, mut reporter: HealthReporter) {
    told_to_drain.await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.clear_service_status("").await;
}
