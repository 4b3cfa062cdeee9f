//! `tableroll run` end to end: real supervisors running the socket-activated test server
//! (`examples/activated_server.rs`), replacing each other under load. Every wait is for a line
//! a process printed or for a process to exit, bounded by [`TIMEOUT`] only to fail a hung test.

mod util;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tableroll_testkit::http::http_get;
use tableroll_testkit::load::{self, Load, Target};
use tableroll_testkit::TIMEOUT;
use util::instance::{activated_server, Instance};

fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn body_of(addr: &str) -> String {
    let response = http_get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
    assert_eq!(response.status, 200);
    response.body
}

/// Starts generation `n` on `listen`, taking over from whatever runs.
fn generation(dir: &Path, n: u32, listen: &str, flags: &[&str]) -> Instance {
    let args = [&["--listen", listen], flags].concat();
    Instance::start(&format!("gen-{n}"), dir, &args, &["--generation", &n.to_string()])
}

/// Runs `count` generations in a row under closed-loop load; each must be the owner, serve,
/// and hand over with its program drained and exiting 0. No request may fail.
fn upgrades_under_load(count: u32) {
    let dir = test_dir();
    let mut current = generation(dir.path(), 0, "web=tcp:127.0.0.1:0", &[]);
    assert_eq!(current.log("joined")["generation"], 1);
    assert_eq!(current.program("started")["tableroll_generation"], "1");
    let addr = current.address("web");
    current.log("owner");
    let listen = format!("web=tcp:{addr}");
    let load = Load::start(vec![Target::Tcp(addr.clone())], 4);
    load.wait_served_by("gen-0", 20);
    for n in 1..=count {
        let mut next = generation(dir.path(), n, &listen, &[]);
        let joined = next.log("joined");
        assert_eq!(joined["inherited"], serde_json::json!(["web"]));
        // Generation numbers count the instances of the group, carried in their ids.
        assert_eq!(joined["generation"], n + 1, "{joined}");
        assert!(joined["id"].as_str().unwrap().starts_with(&format!("g{}-", n + 1)), "{joined}");
        assert_eq!(next.program("started")["tableroll_generation"], (n + 1).to_string());
        next.log("owner");
        current.log("taken_over");
        assert_eq!(current.log("drained")["code"], 0);
        current.program("exiting");
        assert_eq!(current.wait_exit(), 0);
        load.wait_served_by(&format!("gen-{n}"), 20);
        current = next;
    }
    let report = load.stop();
    assert!(report.failures.is_empty(), "{}", report.summary());
    for n in 0..=count {
        assert!(report.served_by.get(&format!("gen-{n}")).copied().unwrap_or(0) > 0, "{}", report.summary());
    }
    eprintln!("{count} upgrades under load: {}", report.summary());
}

#[test]
fn two_generations_replace_each_other_under_load_without_a_failed_request() {
    upgrades_under_load(2);
}

#[test]
fn ten_generations_replace_each_other_under_load_without_a_failed_request() {
    upgrades_under_load(10);
}

#[test]
fn the_program_gets_exactly_the_activation_environment_and_descriptors() {
    let dir = test_dir();
    let group = dir.path().join("group");
    std::fs::create_dir(&group).unwrap();
    let admin = format!("admin=unix:{}", dir.path().join("admin.sock").display());
    let flags = ["--listen", "web=tcp:127.0.0.1:0", "--listen", "dns=udp:127.0.0.1:0", "--listen", &admin];
    let mut first = Instance::start("first", &group, &flags, &[]);
    let started = first.program("started");
    let pid = started["pid"].as_u64().unwrap();
    assert_eq!(started["listen_pid"], pid.to_string(), "{started}");
    assert_eq!(started["listen_fds"], "3");
    assert_eq!(started["listen_fdnames"], "web:dns:admin");
    assert_eq!(started["kinds"], serde_json::json!(["tcp-listener", "udp", "unix-listener"]));
    // stdin, stdout, stderr and the three listeners: nothing else of the supervisor's.
    assert_eq!(started["open_fds"], serde_json::json!([0, 1, 2, 3, 4, 5]), "{started}");
    // An abstract address: nothing on disk to leave behind.
    assert!(
        started["notify_socket"].as_str().is_some_and(|p| p.starts_with("@tableroll-notify-")),
        "{started}"
    );
    assert_eq!(first.log("started")["child_pid"], pid);
    assert_eq!(first.log("owner")["closed_unclaimed"], serde_json::json!([]));

    // The next instance's program gets the same sockets, in the same order, with its own pid.
    let web = first.address("web");
    let dns = first.address("dns");
    let listen_web = format!("web=tcp:{web}");
    let listen_dns = format!("dns=udp:{dns}");
    let flags = ["--listen", &listen_web, "--listen", &listen_dns, "--listen", &admin];
    let mut second = Instance::start("second", &group, &flags, &[]);
    let started = second.program("started");
    assert_eq!(started["listen_pid"], started["pid"].as_u64().unwrap().to_string(), "{started}");
    assert_eq!(started["listen_fdnames"], "web:dns:admin");
    assert_eq!(started["kinds"], serde_json::json!(["tcp-listener", "udp", "unix-listener"]));
    assert_eq!(started["open_fds"], serde_json::json!([0, 1, 2, 3, 4, 5]), "{started}");
    second.log("owner");
    assert_eq!(first.wait_exit(), 0);

    // A version that no longer listens on dns and admin: they are closed, not passed on.
    let mut third = Instance::start("third", &group, &["--listen", &listen_web], &[]);
    let started = third.program("started");
    assert_eq!(
        (started["listen_fds"].as_str(), started["listen_fdnames"].as_str()),
        (Some("1"), Some("web"))
    );
    assert_eq!(started["open_fds"], serde_json::json!([0, 1, 2, 3]), "{started}");
    assert_eq!(third.log("owner")["closed_unclaimed"], serde_json::json!(["admin", "dns"]));
    assert_eq!(second.wait_exit(), 0);
}

/// A serving generation 0 on a new TCP listener: the instance, its address and `--listen`.
fn serving_owner(dir: &Path, flags: &[&str], server_args: &[&str]) -> (Instance, String, String) {
    let args = [&["--listen", "web=tcp:127.0.0.1:0"], flags].concat();
    let server_args = [&["--generation", "0"], server_args].concat();
    let mut owner = Instance::start("gen-0", dir, &args, &server_args);
    let addr = owner.address("web");
    owner.log("owner");
    (owner, addr.clone(), format!("web=tcp:{addr}"))
}

/// The old owner still owns the group: a good newcomer takes over from it.
fn assert_still_owner(dir: &Path, old: &mut Instance, addr: &str, listen: &str) {
    assert_eq!(body_of(addr), "hello from gen-0\n");
    let mut next = generation(dir, 9, listen, &[]);
    next.log("owner");
    old.log("taken_over");
    assert_eq!(old.wait_exit(), 0);
    assert_eq!(body_of(addr), "hello from gen-9\n");
}

#[test]
fn a_program_that_dies_before_ready_leaves_the_old_generation_serving() {
    let dir = test_dir();
    let (mut old, addr, listen) = serving_owner(dir.path(), &[], &[]);
    let mut failed = Instance::start("dies", dir.path(), &["--listen", &listen], &["--ready", "exit:7"]);
    let message = failed.log("failed")["message"].as_str().unwrap().to_string();
    assert!(message.contains("exited with status 7 before it was ready"), "{message}");
    assert_eq!(failed.wait_exit(), 1);
    assert_still_owner(dir.path(), &mut old, &addr, &listen);
}

#[test]
fn a_program_that_is_not_ready_in_time_is_stopped_and_the_old_generation_keeps_serving() {
    let dir = test_dir();
    let (mut old, addr, listen) = serving_owner(dir.path(), &[], &[]);
    let flags = ["--listen", &listen, "--ready-timeout", "200ms"];
    let mut slow = Instance::start("never-ready", dir.path(), &flags, &["--ready", "never"]);
    slow.log("timeout");
    assert_eq!(slow.log("drained")["code"], 0);
    slow.program("exiting");
    assert_eq!(slow.wait_exit(), 1);
    assert_still_owner(dir.path(), &mut old, &addr, &listen);
}

#[test]
fn a_missing_program_fails_clearly() {
    let dir = test_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tableroll"));
    cmd.args(["run", "--listen", "web=tcp:127.0.0.1:0", "--dir"]).arg(dir.path());
    let output = cmd.args(["--", "/nonexistent/program"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot run /nonexistent/program"), "{stderr}");
    assert!(stderr.contains("exited with status 127 before it was ready"), "{stderr}");
}

#[test]
fn a_program_that_ignores_the_stop_signal_is_killed_after_the_drain_timeout() {
    let dir = test_dir();
    let (mut old, _addr, listen) =
        serving_owner(dir.path(), &["--drain-timeout", "100ms"], &["--ignore-sigterm"]);
    let mut next = generation(dir.path(), 1, &listen, &[]);
    next.log("owner");
    old.log("taken_over");
    old.log("draining");
    old.log("killed");
    // The program's status: killed by SIGKILL.
    assert_eq!(old.wait_exit(), 128 + 9);
}

#[test]
fn restart_on_failure_keeps_the_port_open() {
    let dir = test_dir();
    let (mut owner, addr, _) = serving_owner(dir.path(), &["--restart", "on-failure"], &[]);
    let first_pid = owner.program("started")["pid"].as_u64().unwrap();
    assert_eq!(owner.log("started")["run"], 1);
    let load = Load::start(vec![Target::Tcp(addr.clone())], 2);
    load.wait_served_by("gen-0", 10);
    // The program crashes; the listener stays open in the supervisor while it restarts.
    let _ = http_get(&addr, "/crash");
    let exited = owner.log("child_exited");
    assert_eq!((exited["code"].as_u64(), exited["restart"].as_bool()), (Some(3), Some(true)), "{exited}");
    owner.log("restarting");
    let restarted = owner.program("started");
    assert_ne!(restarted["pid"].as_u64().unwrap(), first_pid);
    assert_eq!(owner.log("started")["run"], 2);
    load.wait_more_served_by("gen-0", 20);
    let report = load.stop();
    // Requests the crashing program had accepted may fail; none may be refused.
    assert!(!report.failures_by_kind().contains_key(&load::FailureKind::Refused), "{}", report.summary());
}

#[test]
fn signals_are_passed_on_and_sigterm_stops_without_a_restart() {
    let dir = test_dir();
    let (mut owner, addr, _) = serving_owner(dir.path(), &["--restart", "on-failure"], &[]);
    owner.signal(rustix::process::Signal::HUP);
    assert_eq!(owner.log("signal")["signal"], "SIGHUP");
    owner.program("sighup");
    assert_eq!(body_of(&addr), "hello from gen-0\n");
    owner.signal(rustix::process::Signal::TERM);
    assert_eq!(owner.log("signal")["signal"], "SIGTERM");
    owner.program("exiting");
    assert_eq!(owner.log("drained")["code"], 0);
    assert_eq!(owner.wait_exit(), 0);
    let events: Vec<Value> = owner.pending().map(|(_, v)| v["event"].clone()).collect();
    assert!(!events.contains(&Value::from("restarting")), "{events:?}");
}

#[test]
fn readiness_by_command_waits_until_the_command_succeeds() {
    let dir = test_dir();
    let (mut old, addr, listen) = serving_owner(dir.path(), &[], &[]);
    let marker = dir.path().join("ready-marker");
    let ready = format!("cmd:test -e '{}' && kill -0 \"$TABLEROLL_CHILD_PID\"", marker.display());
    let flags = ["--listen", &listen, "--ready", &ready];
    let mut next = Instance::start("gen-1", dir.path(), &flags, &["--generation", "1", "--ready", "never"]);
    next.log("check_failed");
    // Checked and not ready: the old generation is still the owner.
    assert!(next.pending().all(|(_, v)| v["event"] != "owner"));
    std::fs::write(&marker, b"").unwrap();
    assert_eq!(next.log("child_ready")["message"], "program ready: the readiness command succeeded");
    next.log("owner");
    old.log("taken_over");
    assert_eq!(old.wait_exit(), 0);
    assert_eq!(body_of(&addr), "hello from gen-1\n");
}

#[test]
fn readiness_by_delay_takes_over_after_the_delay() {
    let dir = test_dir();
    let (mut old, addr, listen) = serving_owner(dir.path(), &[], &[]);
    let flags = ["--listen", &listen, "--ready", "delay:50ms"];
    let mut next = Instance::start("gen-1", dir.path(), &flags, &["--generation", "1", "--ready", "never"]);
    let started = next.program("started");
    assert_eq!(started["notify_socket"], Value::Null, "no NOTIFY_SOCKET unless --ready notify");
    assert_eq!(next.log("child_ready")["message"], "program ready: the readiness delay passed");
    next.log("owner");
    old.log("taken_over");
    assert_eq!(old.wait_exit(), 0);
    assert_eq!(body_of(&addr), "hello from gen-1\n");
}

#[test]
fn a_program_that_dies_of_the_stop_signal_counts_as_a_clean_stop() {
    // `sleep` knows nothing of sockets or SIGTERM: it dies of the stop signal, which is how a
    // drain ends for many programs. The supervisor exits 0 then, as systemd counts it.
    let dir = test_dir();
    let flags = ["--listen", "web=tcp:127.0.0.1:0", "--ready", "delay:1ms"];
    let mut old = Instance::start_command("sleep-1", dir.path(), &flags, &["sleep", "1000"], None);
    let addr = old.address("web");
    old.log("owner");
    let listen = format!("web=tcp:{addr}");
    let flags = ["--listen", &listen, "--ready", "delay:1ms"];
    let mut new = Instance::start_command("sleep-2", dir.path(), &flags, &["sleep", "1000"], None);
    new.log("owner");
    old.log("taken_over");
    let drained = old.log("drained");
    assert_eq!(drained["code"], 128 + 15, "{drained}");
    assert_eq!(old.wait_exit(), 0);
    assert_eq!(old.log("exit")["code"], 0);
}

/// The next datagram on a fake systemd notification socket, as its lines.
fn notification(socket: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned).collect()
}

#[test]
fn under_systemd_the_supervisor_reports_ready_and_stopping_and_the_program_does_not_see_systemd() {
    let dir = test_dir();
    let systemd_path = dir.path().join("systemd-notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&systemd_path).unwrap();
    systemd.set_read_timeout(Some(TIMEOUT)).unwrap();
    let server = activated_server().to_str().unwrap();
    let program = [server, "--generation", "0"];
    let flags = ["--listen", "web=tcp:127.0.0.1:0"];
    let mut old = Instance::start_command("gen-0", dir.path(), &flags, &program, Some(&systemd_path));
    let addr = old.address("web");
    let started = old.program("started");
    // The program reports to the supervisor, never to systemd directly.
    assert_ne!(started["notify_socket"].as_str(), systemd_path.to_str(), "{started}");
    old.log("owner");
    let ready = notification(&systemd);
    assert_eq!(ready[..2], ["READY=1".to_string(), format!("MAINPID={}", old.pid())]);

    // A takeover: the library reports STOPPING=1 for the old supervisor.
    let mut new = generation(dir.path(), 1, &format!("web=tcp:{addr}"), &[]);
    new.log("owner");
    old.log("taken_over");
    assert_eq!(notification(&systemd)[0], "STOPPING=1");
    assert_eq!(old.wait_exit(), 0);

    // Told to stop by a signal (systemctl stop): the supervisor reports STOPPING=1 itself.
    let group = dir.path().join("another-group");
    std::fs::create_dir(&group).unwrap();
    let program = [server, "--generation", "2"];
    let mut other = Instance::start_command("gen-2", &group, &flags, &program, Some(&systemd_path));
    other.log("owner");
    assert_eq!(notification(&systemd)[0], "READY=1");
    other.signal(rustix::process::Signal::TERM);
    assert_eq!(notification(&systemd)[0], "STOPPING=1");
    assert_eq!(other.wait_exit(), 0);
}

#[test]
fn a_program_whose_supervisor_dies_is_told_to_stop() {
    let dir = test_dir();
    let (mut owner, _addr, _) = serving_owner(dir.path(), &[], &[]);
    owner.program("started");
    owner.signal(rustix::process::Signal::KILL);
    // The program does not outlive its supervisor holding the listeners: it gets SIGTERM
    // (the parent-death signal), drains and exits.
    owner.program("exiting");
    let _ = owner.wait_exit_by_signal();
}

#[test]
fn a_supervisor_killed_by_sigkill_leaves_no_notification_socket_behind() {
    let dir = test_dir();
    // The supervisor's $TMPDIR is the test's directory (see `Instance`): anything it left in a
    // temporary directory would be found here.
    let (mut owner, _addr, _) = serving_owner(dir.path(), &[], &[]);
    let started = owner.program("started");
    owner.signal(rustix::process::Signal::KILL);
    owner.program("exiting");
    let _ = owner.wait_exit_by_signal();
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("tableroll-notify-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "left behind; the program had {started}");
}
