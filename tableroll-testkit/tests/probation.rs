//! Probation and rollback (`Builder::probation`, the peer's `--probation-ms`): a new owner
//! killed inside the window is replaced by the owner before it, with no failure beyond the
//! requests inside the killed process and no refused connection; newcomers that find the new
//! owner dead take the listeners from the process that still holds them.

mod util;

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Instant;

use tableroll::inspect::{inspect, LockHeld};
use util::load::{Load, Target};
use util::{assert_hello, http_get, inherited_ids, read_response, serving, Peer, TestDir, TIMEOUT};

/// Long enough that no test sees a window pass unless it means to.
const LONG_PROBATION: &str = "600000";

/// The owner file names `id`, whose upgrade socket is live, and nobody is taking over.
#[track_caller]
fn assert_sole_owner(dir: &TestDir, id: &str) {
    assert_eq!(dir.owner(), id);
    let status = inspect(dir.path()).expect("inspecting the directory");
    assert!(status.owner.alive, "the owner {id} is not live: {status:?}");
    assert_eq!(status.lock.held, LockHeld::No, "{status:?}");
}

/// The answer comes from one of `ids`.
#[track_caller]
fn assert_hello_from_one_of(result: io::Result<util::Response>, ids: &[&str]) {
    let response = result.expect("a request to the group");
    let from = response.body.strip_prefix("hello from ").and_then(|s| s.strip_suffix('\n'));
    assert!(from.is_some_and(|from| ids.contains(&from)), "{response:?} is not from one of {ids:?}");
}

/// Kills `peer`; returns the moments just before the kill and just after it was reaped.
fn kill_timed(peer: &mut Peer) -> (Instant, Instant) {
    let killed = Instant::now();
    peer.kill();
    (killed, Instant::now())
}

#[test]
fn a_new_owner_killed_right_after_it_committed_is_replaced_by_the_owner_before_it() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &["--probation-ms", LONG_PROBATION]);
    let (mut new, _) = serving(&dir, "new", &addr, &[]);
    assert_eq!(dir.owner(), "new");
    // On probation the old process serves on: both accept on the one listening socket.
    assert_hello_from_one_of(http_get(&addr, "/"), &["old", "new"]);
    let status = inspect(dir.path()).expect("inspecting the directory");
    let roles: Vec<(&str, bool, bool)> =
        status.sockets.iter().map(|s| (s.id.as_str(), s.owner, s.standby)).collect();
    assert_eq!(roles, [("new", true, false), ("old", false, true)], "{status:?}");

    new.kill();
    let rolled_back = old.wait_for("rolled_back");
    assert_eq!(rolled_back["failed_owner"], "new", "{rolled_back}");
    assert_sole_owner(&dir, "old");
    assert_hello(http_get(&addr, "/"), "old");
    assert!(!old.has_pending("upgrade_complete"), "the application was told to drain");

    // And it is the owner in full: the next one takes over from it.
    let (_next, _) = serving(&dir, "next", &addr, &[]);
    assert_sole_owner(&dir, "next");
}

#[test]
fn a_new_owner_killed_under_load_loses_only_the_requests_inside_it() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &["--probation-ms", LONG_PROBATION]);
    let load = Load::start(vec![Target::Tcp(addr.clone())], 4);
    load.wait_served_by("old", 20);
    let (mut new, _) = serving(&dir, "new", &addr, &[]);
    load.wait_served_by("new", 50);

    let (killed, reaped) = kill_timed(&mut new);
    assert_eq!(old.wait_for("rolled_back")["failed_owner"], "new");
    load.wait_more_served_by("old", 200);
    let report = load.stop();
    report.assert_only_losses_inside(killed, reaped);
    assert_sole_owner(&dir, "old");
}

#[test]
fn a_new_owner_killed_after_it_handed_over_to_a_third_changes_nothing() {
    let dir = TestDir::new();
    let probation = ["--probation-ms", LONG_PROBATION];
    let (mut first, addr) = serving(&dir, "first", "127.0.0.1:0", &probation);
    let load = Load::start(vec![Target::Tcp(addr.clone())], 4);
    let (mut second, _) = serving(&dir, "second", &addr, &probation);
    load.wait_served_by("second", 20);
    let (_third, _) = serving(&dir, "third", &addr, &[]);
    // The owner file moved on past the process the first one watched: its probation is over.
    first.wait_for("upgrade_complete");
    first.expect_clean_exit();
    load.wait_served_by("third", 20);

    let (killed, reaped) = kill_timed(&mut second);
    load.wait_more_served_by("third", 100);
    let report = load.stop();
    report.assert_only_losses_inside(killed, reaped);
    assert_sole_owner(&dir, "third");
}

#[test]
fn the_window_passing_with_the_new_owner_alive_ends_the_probation() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &["--probation-ms", "200"]);
    let (mut new, _) = serving(&dir, "new", &addr, &[]);
    old.wait_for("upgrade_complete");
    old.expect_clean_exit();
    assert!(new.is_running());
    assert_sole_owner(&dir, "new");
    assert_hello(http_get(&addr, "/"), "new");
    assert!(old.printed().iter().all(|event| event["event"] != "rolled_back"));
}

#[test]
fn a_newcomer_that_finds_the_new_owner_dead_takes_the_listeners_from_the_one_on_probation() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &["--probation-ms", LONG_PROBATION]);
    let (mut new, _) = serving(&dir, "new", &addr, &[]);

    // The third process takes the lock and stops there: the old one cannot roll back while it
    // holds the lock. Then the new owner dies, and the third goes on to find it dead.
    let listen = format!("web=tcp:{addr}");
    let mut third = Peer::start(
        dir.path(),
        &["--id", "third", "--listen", &listen, "--serve", "--fault", "newcomer-after-lock=stop"],
    );
    third.wait_for("fault");
    util::wait_stopped(third.pid());
    new.kill();
    util::continue_process(third.pid());

    assert_eq!(inherited_ids(&third.wait_for("inherited")), ["web"], "{}", third.diagnostics());
    third.wait_for("ready");
    assert_sole_owner(&dir, "third");
    assert_hello_from_one_of(http_get(&addr, "/"), &["old", "third"]);
    assert!(!old.has_pending("rolled_back"), "the old process served the third instead");

    // The old process backs up the third one now, with a new window.
    third.kill();
    assert_eq!(old.wait_for("rolled_back")["failed_owner"], "third");
    assert_sole_owner(&dir, "old");
    assert_hello(http_get(&addr, "/"), "old");
}

/// The process on probation is paused (SIGSTOP) when the new owner dies. A newcomer finds it
/// as the standby, which does not answer: with a connect timeout, the newcomer gives up with an
/// error and changes nothing. Clients wait in the backlog of the listening socket the paused
/// process holds; continued, it rolls back and answers them.
#[test]
fn a_paused_process_on_probation_fails_a_newcomer_cleanly_and_rolls_back_once_continued() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &["--probation-ms", LONG_PROBATION]);
    let (mut new, _) = serving(&dir, "new", &addr, &[]);
    util::stop_process(old.pid());
    util::wait_stopped(old.pid());
    new.kill();

    let mut waiting = TcpStream::connect(&addr).expect("the listening socket is open in the paused process");
    waiting.set_read_timeout(Some(TIMEOUT)).unwrap();
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();

    let listen = format!("web=tcp:{addr}");
    let args = ["--id", "third", "--listen", &listen, "--serve", "--connect-timeout-ms", "300"];
    let mut third = Peer::start(dir.path(), &args);
    let error = third.expect_error_exit();
    assert!(error.contains("in use"), "the port is held by the paused process: {error}");
    assert_eq!(dir.owner(), "new", "the newcomer that failed changed the owner file");

    util::continue_process(old.pid());
    assert_eq!(old.wait_for("rolled_back")["failed_owner"], "new");
    assert_sole_owner(&dir, "old");
    let response = read_response(&waiting).unwrap_or_else(|e| old.fail(&format!("the waiting request: {e}")));
    assert_eq!(response.body, "hello from old\n");
    assert_hello(http_get(&addr, "/"), "old");
}

/// Without probation, a stepped-down peer drops its upgrader (its standby mark, its socket and
/// the store's copies) as soon as it is told to drain, while a request keeps it alive. A
/// newcomer after the new owner's death either still finds it as a standby and inherits, or no
/// longer finds it, and then its copies are closed already: binding afresh never fails.
#[test]
fn a_newcomer_after_the_new_owner_died_binds_or_inherits_never_address_in_use() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &[]);
    // A request whose head is not complete keeps the old process draining after it stepped
    // down. The old process is the only one accepting and accepts in order: once it answered
    // a later connection, it has accepted this one.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n").unwrap();
    assert_hello(http_get(&addr, "/"), "old");
    let (mut new, _) = serving(&dir, "new", &addr, &[]);
    old.wait_for("upgrade_complete");
    new.kill();

    let (_next, next_addr) = serving(&dir, "next", &addr, &[]);
    assert_eq!(next_addr, addr);
    assert_sole_owner(&dir, "next");
    assert_hello(http_get(&addr, "/"), "next");

    slow.write_all(b"\r\n").unwrap();
    let response =
        read_response(&slow).unwrap_or_else(|e| old.fail(&format!("the slow request failed: {e}")));
    assert_eq!(response.body, "hello from old\n");
    old.expect_clean_exit();
    assert_sole_owner(&dir, "next");
}

#[test]
fn the_id_of_a_process_on_probation_cannot_be_reused() {
    let dir = TestDir::new();
    let (mut blue, addr) = serving(&dir, "blue", "127.0.0.1:0", &["--probation-ms", LONG_PROBATION]);
    let (_green, _) = serving(&dir, "green", &addr, &[]);
    // The backup must stay reachable under its id: a newer "blue" is refused.
    let listen = format!("web=tcp:{addr}");
    let mut reuse = Peer::start(dir.path(), &["--id", "blue", "--listen", &listen, "--serve"]);
    let error = reuse.expect_error_exit();
    assert!(error.contains("in use by a live process"), "{error}");
    assert!(blue.is_running() && !blue.has_pending("upgrade_complete"));
    assert_sole_owner(&dir, "green");
}
