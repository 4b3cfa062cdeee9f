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
