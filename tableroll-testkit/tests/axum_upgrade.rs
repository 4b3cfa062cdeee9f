//! The axum example (`examples/axum.rs`) upgraded as a real process: generation after
//! generation under closed-loop HTTP load without a failed request, and a request in flight on
//! the old generation answered by it after the new one took over.

mod example_process;
mod util;

use std::collections::BTreeMap;

use example_process::{args, expect_upload_answered_by, upgrade_with_upload_in_flight, Example};
use util::load::{Load, Target};
use util::{assert_hello, http_get, TestDir};

/// More than the three a walk-through needs: a race at the handoff that drops a request in one
/// upgrade out of a few (as axum's plain graceful shutdown does) fails this test nearly always.
const GENERATIONS: usize = 20;
const CLIENTS: usize = 3;
/// Answers each generation gives before the next one starts, so every handoff happens under
/// load that has been running for a while.
const ANSWERS_PER_GENERATION: u64 = 50;

/// Starts a generation of the axum server coordinated in `dir`/coord.
fn start(dir: &TestDir) -> Example {
    let coord = dir.join("coord");
    Example::start("axum", &args(&coord, &["127.0.0.1:0"]))
}

#[test]
fn twenty_generations_under_load_answer_every_request() {
    let dir = TestDir::new();
    let started = std::time::Instant::now();
    let mut current = start(&dir);
    let addr = current.wait_for("ready").get("addr").to_string();
    let load = Load::start(vec![Target::Tcp(addr.clone())], CLIENTS);

    // What each generation that exited says it served.
    let mut served_by_exit = BTreeMap::new();
    for _ in 1..GENERATIONS {
        load.wait_served_by(&current.pid().to_string(), ANSWERS_PER_GENERATION);
        let mut next = start(&dir);
        assert_eq!(next.wait_for("ready").get("addr"), addr, "the new generation inherits the socket");
        current.wait_for("draining");
        let exit = current.expect_clean_exit();
        let served: u64 = exit.get("served").parse().expect("served=N");
        served_by_exit.insert(current.pid().to_string(), served);
        current = next;
    }
    load.wait_served_by(&current.pid().to_string(), ANSWERS_PER_GENERATION);

    let report = load.stop();
    let failures: Vec<String> = report.failures.iter().map(|f| f.describe(started)).collect();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed over {GENERATIONS} generations:\n{}",
        report.failures.len(),
        report.sent,
        failures.join("\n")
    );
    assert_eq!(report.served_by.len(), GENERATIONS, "answers by pid: {:?}", report.served_by);
    for (pid, served) in &served_by_exit {
        let answered = report.served_by.get(pid).copied().unwrap_or(0);
        assert_eq!(*served, answered, "generation {pid} says it served {served}, the load got {answered}");
    }
    println!("{GENERATIONS} generations: {}", report.summary());
}

/// The request is slow because its body comes late: the test holds it in flight on the old
/// generation for exactly as long as it needs, rather than guessing a duration.
#[test]
fn a_slow_request_in_flight_on_the_old_generation_is_answered_after_the_upgrade() {
    let dir = TestDir::new();
    let mut old = start(&dir);
    let addr = old.wait_for("ready").get("addr").to_string();
    let (new, slow) = upgrade_with_upload_in_flight(&mut old, &addr, || start(&dir));
    // Stopped accepting, but not gone: new requests go to the new generation.
    assert_hello(http_get(&addr, "/"), &new.pid().to_string());

    expect_upload_answered_by(slow, &mut old, "1");
    assert_hello(http_get(&addr, "/"), &new.pid().to_string());
}

/// The case: the old generation drains a request while it still holds the listening
/// socket in its upgrader's store, and the new owner dies. The next generation gets the
/// listener from the draining one (a fresh bind would fail with "Address already in use"), and
/// the request in flight is still answered.
#[test]
fn a_draining_generation_hands_its_listener_on_when_the_new_owner_dies() {
    let dir = TestDir::new();
    let mut old = start(&dir);
    let addr = old.wait_for("ready").get("addr").to_string();
    let (mut dead, slow) = upgrade_with_upload_in_flight(&mut old, &addr, || start(&dir));
    dead.kill();

    let mut next = start(&dir);
    assert_eq!(next.wait_for("ready").get("addr"), addr, "{}", next.diagnostics());
    assert_hello(http_get(&addr, "/"), &next.pid().to_string());
    expect_upload_answered_by(slow, &mut old, "1");
    assert_hello(http_get(&addr, "/"), &next.pid().to_string());
}
