//! The actix-web example (`examples/actix.rs`) upgraded as a real process under closed-loop
//! HTTP load, with a new connection per request and with kept-alive connections: no request
//! fails. Also: a request in flight on the old generation is answered by it after the new one
//! took over, and a second `SIGTERM` cuts a drain short.

mod example_process;
mod util;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use example_process::{args, expect_upload_answered_by, upgrade_with_upload_in_flight, Example, HeldUpload};
use rustix::process::{kill_process, Pid, Signal};
use util::load::{Load, Report, Target};
use util::{assert_hello, http_get, TestDir};

const UPGRADES: usize = 5;
const CLIENTS: usize = 4;
/// Answers each generation gives before the next one starts, so every handoff happens under
/// load that has been running for a while.
const ANSWERS_PER_GENERATION: u64 = 50;

/// Held by a test while it runs load: the two load tests take turns, so that neither starves the
/// other's servers of the machine's cores (a worker thread that does not run for longer than the
/// example's grace loses the connections queued to it; see the example's docs).
static LOAD: Mutex<()> = Mutex::new(());

/// Starts a generation of the actix server coordinated in `dir`/coord.
fn start(dir: &TestDir) -> Example {
    Example::start("actix", &args(&dir.join("coord"), &["127.0.0.1:0"]))
}

/// What [`upgrade_under_load`] saw.
struct Run {
    report: Report,
    /// For each upgrade, from just before the new generation started to just after the old
    /// one exited.
    drains: Vec<(Instant, Instant)>,
    started: Instant,
}

impl Run {
    /// Every failure, one a line, then the drains, with times from the start.
    fn failures(&self) -> String {
        let ms = |t: Instant| t.saturating_duration_since(self.started).as_secs_f64() * 1e3;
        let failures = self.report.failures.iter().map(|f| f.describe(self.started));
        let drains = self
            .drains
            .iter()
            .map(|&(from, to)| format!("drain from {:.3} ms to {:.3} ms", ms(from), ms(to)));
        failures.chain(drains).collect::<Vec<_>>().join("\n")
    }
}

/// Runs [`UPGRADES`] upgrades of the actix example under load from [`CLIENTS`] clients that keep
/// their connections alive or not. Checks that each upgrade completes (the new generation
/// inherits the socket, the old one drains and exits 0) and that each old generation answered
/// as many requests as it says it served.
fn upgrade_under_load(keep_alive: bool) -> Run {
    let _turn = LOAD.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = TestDir::new();
    let started = Instant::now();
    let mut current = start(&dir);
    let addr = current.wait_for("ready").get("addr").to_string();
    let targets = vec![Target::Tcp(addr.clone())];
    let load =
        if keep_alive { Load::start_keep_alive(targets, CLIENTS) } else { Load::start(targets, CLIENTS) };

    let mut drains = Vec::new();
    // What each generation that exited says it served.
    let mut served_by_exit = BTreeMap::new();
    for _ in 0..UPGRADES {
        load.wait_served_by(&current.pid().to_string(), ANSWERS_PER_GENERATION);
        let from = Instant::now();
        let mut next = start(&dir);
        assert_eq!(next.wait_for("ready").get("addr"), addr, "the new generation inherits the socket");
        current.wait_for("draining");
        let served: u64 = current.expect_clean_exit().get("served").parse().expect("served=N");
        drains.push((from, Instant::now()));
        served_by_exit.insert(current.pid().to_string(), served);
        current = next;
    }
    load.wait_served_by(&current.pid().to_string(), ANSWERS_PER_GENERATION);

    let report = load.stop();
    assert_eq!(report.served_by.len(), UPGRADES + 1, "answers by pid: {:?}", report.served_by);
    for (pid, served) in &served_by_exit {
        let answered = report.served_by.get(pid).copied().unwrap_or(0);
        assert_eq!(*served, answered, "generation {pid} says it served {served}, the load got {answered}");
    }
    Run { report, drains, started }
}

/// Fails the test if a request of `run` failed.
fn assert_every_request_answered(run: &Run, what: &str) {
    println!("{UPGRADES} upgrades, {what}: {}", run.report.summary());
    assert!(
        run.report.failures.is_empty(),
        "{} of {} requests failed over {UPGRADES} upgrades with {what}:\n{}",
        run.report.failures.len(),
        run.report.sent,
        run.failures()
    );
}

#[test]
fn upgrades_under_load_with_a_connection_per_request_answer_every_request() {
    let run = upgrade_under_load(false);
    assert_every_request_answered(&run, "a connection per request");
}

/// Without the drain's `Connection: close`, a kept-alive client's next request on the old
/// generation arrives as actix stops and closes the connection unread: a failed request for
/// nearly every client at every upgrade.
#[test]
fn upgrades_under_load_with_kept_alive_connections_answer_every_request() {
    let run = upgrade_under_load(true);
    assert_every_request_answered(&run, "kept-alive connections");
}

/// The request is slow because its body comes late: the test holds it in flight on the old
/// generation for exactly as long as it needs, rather than guessing a duration.
#[test]
fn a_slow_request_in_flight_on_the_old_generation_is_answered_after_the_upgrade() {
    let dir = TestDir::new();
    let mut old = start(&dir);
    let addr = old.wait_for("ready").get("addr").to_string();
    let (new, slow) = upgrade_with_upload_in_flight(&mut old, &addr, || start(&dir));
    // Not a check that new requests go to the new generation yet: `draining` comes when the
    // old one is told to drain, before actix's accepting thread has stopped.

    expect_upload_answered_by(slow, &mut old, "1");
    assert_hello(http_get(&addr, "/"), &new.pid().to_string());
}

#[test]
fn a_second_sigterm_cuts_the_drain_short() {
    let dir = TestDir::new();
    let mut server = start(&dir);
    let addr = server.wait_for("ready").get("addr").to_string();
    let held = HeldUpload::start(&addr);
    server.wait_for("upload");

    terminate(&server);
    server.wait_for("draining");
    terminate(&server);
    server.wait_for("forced");
    assert_eq!(server.expect_clean_exit().get("served"), "0");
    let outcome = held.try_finish();
    assert!(outcome.is_err(), "the held upload was answered after a forced stop: {outcome:?}");
}

fn terminate(example: &Example) {
    let pid = Pid::from_raw(example.pid() as i32).expect("a pid");
    kill_process(pid, Signal::TERM).expect("sending SIGTERM");
}
