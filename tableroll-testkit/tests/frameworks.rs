//! Each tokio server example (axum, hyper-util, tonic) upgraded five times under closed-loop load
//! with no retries, in each way its clients hold connections: a new connection per request,
//! HTTP/1.1 keep-alive, and HTTP/2 or gRPC connections shared by the clients. No request may
//! fail with a new connection per request, nor with HTTP/1.1 keep-alive (the lame-duck
//! `Connection: close`); with a shared HTTP/2 or gRPC connection the clients' own queueing can
//! lose a call at a `GOAWAY`, so those figures are printed, not asserted (see
//! docs/frameworks.md).

mod example_process;
mod util;

use std::io::Write;
use std::net::TcpStream;

use example_process::{args, Example};
use tableroll_testkit::async_load::{AsyncLoad, AsyncReport, Calls};
use util::load::{Load, Report, Target};
use util::{read_response, TestDir, TIMEOUT};

const UPGRADES: usize = 5;
const CLIENTS: usize = 4;
/// Answers each generation gives before the next one starts, so that every handoff happens under
/// load that has been running for a while.
const ANSWERS_PER_GENERATION: u64 = 50;

/// The generations of one example in one coordination directory, the newest serving.
struct Generations {
    name: &'static str,
    dir: TestDir,
    current: Example,
    addr: String,
}

impl Generations {
    fn start(name: &'static str) -> Generations {
        let dir = TestDir::new();
        let mut current = Example::start(name, &args(&dir.join("coord"), &["127.0.0.1:0"]));
        let addr = current.wait_for("ready").get("addr").to_string();
        Generations { name, dir, current, addr }
    }

    fn pid(&self) -> String {
        self.current.pid().to_string()
    }

    /// Starts the next generation, and waits until it serves and the previous one exited 0.
    fn upgrade(&mut self) {
        let mut next = Example::start(self.name, &args(&self.dir.join("coord"), &["127.0.0.1:0"]));
        assert_eq!(next.wait_for("ready").get("addr"), self.addr, "the new generation inherits the socket");
        self.current.wait_for("draining");
        self.current.expect_clean_exit();
        self.current = next;
    }
}

/// Upgrades `name` [`UPGRADES`] times under HTTP/1.1 load, each generation answering
/// [`ANSWERS_PER_GENERATION`] requests before the next starts.
fn http1_under_upgrades(name: &'static str, keep_alive: bool) -> Report {
    let mut generations = Generations::start(name);
    let target = vec![Target::Tcp(generations.addr.clone())];
    let load =
        if keep_alive { Load::start_keep_alive(target, CLIENTS) } else { Load::start(target, CLIENTS) };
    for _ in 0..UPGRADES {
        load.wait_served_by(&generations.pid(), ANSWERS_PER_GENERATION);
        generations.upgrade();
    }
    load.wait_served_by(&generations.pid(), ANSWERS_PER_GENERATION);
    let report = load.stop();
    assert_eq!(report.served_by.len(), UPGRADES + 1, "answers by pid: {:?}", report.served_by);
    report
}

#[track_caller]
fn assert_no_failure(what: &str, report: &Report) {
    let failures: Vec<String> =
        report.failures.iter().map(|f| format!("{:?}: {}", f.kind, f.detail)).collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} failed:\n{}",
        failures.len(),
        report.sent,
        failures.join("\n")
    );
    println!("{what}, {UPGRADES} upgrades: {}", report.summary());
}

/// Upgrades `name` [`UPGRADES`] times under `calls`; `per_generation` waits for the current
/// generation's share of answers.
fn async_under_upgrades(name: &'static str, calls: Calls) -> AsyncReport {
    let mut generations = Generations::start(name);
    let load = AsyncLoad::start(&generations.addr, calls, CLIENTS);
    // The gRPC answers do not say which process gave them: count them instead.
    let wait_answers = |load: &AsyncLoad, pid: &str| match calls {
        Calls::Http2NewConnection | Calls::Http2Shared => load.wait_served_by(pid, ANSWERS_PER_GENERATION),
        Calls::GrpcNewConnection | Calls::GrpcShared => load.wait_more_ok(ANSWERS_PER_GENERATION),
    };
    for _ in 0..UPGRADES {
        wait_answers(&load, &generations.pid());
        generations.upgrade();
    }
    wait_answers(&load, &generations.pid());
    load.stop()
}

#[track_caller]
fn assert_no_async_failure(what: &str, report: &AsyncReport) {
    assert!(
        report.failures.is_empty(),
        "{what}: {} of {} failed:\n{}",
        report.failures.len(),
        report.sent,
        report.failures.join("\n")
    );
    println!("{what}, {UPGRADES} upgrades: {}", report.summary());
}

#[test]
fn axum_http1_keep_alive_loses_nothing() {
    assert_no_failure("axum, HTTP/1.1 keep-alive", &http1_under_upgrades("axum", true));
}

#[test]
fn hyper_http1_new_connections_lose_nothing() {
    assert_no_failure(
        "hyper-util, HTTP/1.1, a connection per request",
        &http1_under_upgrades("hyper", false),
    );
}

#[test]
fn hyper_http1_keep_alive_loses_nothing() {
    assert_no_failure("hyper-util, HTTP/1.1 keep-alive", &http1_under_upgrades("hyper", true));
}

#[test]
fn hyper_http2_new_connections_lose_nothing() {
    let report = async_under_upgrades("hyper", Calls::Http2NewConnection);
    assert_eq!(report.served_by.len(), UPGRADES + 1, "answers by pid: {:?}", report.served_by);
    assert_no_async_failure("hyper-util, HTTP/2, a connection per request", &report);
}

/// A shared HTTP/2 connection: every upgrade completes and the clients move to each new
/// generation; the calls hyper's client queued on a connection that was going away are counted.
#[test]
fn hyper_http2_shared_connection_follows_every_upgrade() {
    let report = async_under_upgrades("hyper", Calls::Http2Shared);
    assert_eq!(report.served_by.len(), UPGRADES + 1, "answers by pid: {:?}", report.served_by);
    println!("hyper-util, HTTP/2 shared connection, {UPGRADES} upgrades: {}", report.summary());
    for failure in &report.failures {
        println!("  {failure}");
    }
}

#[test]
fn tonic_grpc_new_connections_lose_nothing() {
    assert_no_async_failure(
        "tonic, gRPC, a connection per call",
        &async_under_upgrades("tonic", Calls::GrpcNewConnection),
    );
}

/// A shared gRPC channel: every upgrade completes; calls lost by the channel at a `GOAWAY` are
/// counted.
#[test]
fn tonic_grpc_shared_channel_follows_every_upgrade() {
    let report = async_under_upgrades("tonic", Calls::GrpcShared);
    assert!(report.ok >= (UPGRADES as u64 + 1) * ANSWERS_PER_GENERATION, "{}", report.summary());
    println!("tonic, gRPC shared channel, {UPGRADES} upgrades: {}", report.summary());
    for failure in &report.failures {
        println!("  {failure}");
    }
}

/// Out of descriptors, accepting fails (`EMFILE`) with connections waiting: the listener, as a
/// `Stream`, pauses and goes on rather than ending the server, which serves the waiting
/// connections once descriptors are free again.
#[test]
fn hyper_serves_again_after_running_out_of_descriptors() {
    /// The server's descriptor limit: far fewer than the connections the test opens.
    const LIMIT: usize = 64;
    let dir = TestDir::new();
    let nofile = format!("--nofile={LIMIT}");
    let mut server = Example::start_under(
        &["prlimit", &nofile, "--"],
        "hyper",
        &args(&dir.join("coord"), &["127.0.0.1:0"]),
    );
    let addr = server.wait_for("ready").get("addr").to_string();

    // More connections than the server can have descriptors: it accepts until `EMFILE`, the
    // rest wait in the listen queue, the last one among them.
    let held: Vec<TcpStream> =
        (0..2 * LIMIT).map(|_| TcpStream::connect(&addr).expect("connecting")).collect();
    let mut last = TcpStream::connect(&addr).expect("connecting");
    last.set_read_timeout(Some(TIMEOUT)).unwrap();
    last.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    drop(held);

    let response = read_response(&mut last).expect("an answer once descriptors are free");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, format!("hello from {}\n", server.pid()));
}

/// A server stream open on the old generation across an upgrade: the tonic example ends it at
/// the drain (`NOT_SERVING`, then the end of the stream), so the old generation exits instead of
/// waiting for it, and the client can watch the new one.
#[test]
fn tonic_ends_a_watch_stream_at_the_drain_and_the_old_generation_exits() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut generations = Generations::start("tonic");
    // A worker thread drives the client's connection while the test waits for the upgrade (to
    // answer the server's PING at its graceful shutdown, as any running client does).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let uri = format!("http://{}", generations.addr);
    let mut stream = block_within(&runtime, async {
        let channel =
            tonic::transport::Endpoint::from_shared(uri).unwrap().connect().await.expect("connecting");
        let request = HealthCheckRequest { service: String::new() };
        HealthClient::new(channel).watch(request).await.expect("watching").into_inner()
    });
    let mut next_status =
        || block_within(&runtime, stream.message()).expect("a message or the end").map(|m| m.status);
    assert_eq!(next_status(), Some(1), "SERVING");

    generations.upgrade();
    assert_eq!(next_status(), Some(2), "NOT_SERVING from the old generation");
    assert_eq!(next_status(), None, "the stream ended");
}

/// Runs `future` on `runtime`, failing the test after [`TIMEOUT`].
fn block_within<T>(runtime: &tokio::runtime::Runtime, future: impl std::future::Future<Output = T>) -> T {
    runtime.block_on(async { tokio::time::timeout(TIMEOUT, future).await.expect("timed out") })
}

/// A client that sent one byte of a request head and stalls holds the old generation's drain
/// (until the request-head timeout, 10 s); a `SIGTERM` during the drain ends it at once.
#[test]
fn a_second_stop_signal_ends_a_drain_held_by_a_stalled_client() {
    let mut generations = Generations::start("axum");
    let mut stalled = TcpStream::connect(&generations.addr).expect("connecting");
    stalled.write_all(b"G").unwrap();
    // Served before the upgrade, so the byte was read before the drain.
    assert_eq!(util::http_get(&generations.addr, "/").expect("a request before the upgrade").status, 200);

    let dir_coord = generations.dir.join("coord");
    let mut next = Example::start("axum", &args(&dir_coord, &["127.0.0.1:0"]));
    next.wait_for("ready");
    let old = &mut generations.current;
    old.wait_for("draining");
    let pid = rustix::process::Pid::from_raw(old.pid() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("sending SIGTERM");
    old.wait_for("drain");
    old.expect_clean_exit();
    drop(stalled);
}
