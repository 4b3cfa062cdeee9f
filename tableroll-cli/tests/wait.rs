//! `tableroll wait` against real upgrades of `tableroll run` instances (and, to be refused, a
//! library owner in this process): its verdict and exit status for a success, with and
//! without probation, for each way an attempt fails, and when nothing happens in time. Each
//! wait is started, and seen watching (its first line), before the newcomer is.

mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;
use tableroll_testkit::events::{Events, Missed};
use tableroll_testkit::process::Process;
use tableroll_testkit::TIMEOUT;
use util::instance::Instance;
use util::{signal, wait_stopped};

/// The bound every wait gets, to fail a hung test: within the test's own (TIMEOUT, 30 s).
const BOUND: &str = "20s";

/// One `tableroll wait --json` process, its lines waited on.
struct Waiter {
    process: Process,
    lines: Events<Value>,
}

impl Waiter {
    /// Starts `tableroll wait --dir DIR --json FLAGS` and waits until it watches the group;
    /// the `from` it announced.
    fn start(dir: &Path, flags: &[&str]) -> (Waiter, Value) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tableroll"));
        cmd.arg("wait").arg("--dir").arg(dir).arg("--json").args(flags);
        let (tx, lines) = Events::channel();
        let mut process = Process::spawn(&mut cmd);
        process.read_stdout(move |at, line| match serde_json::from_str::<Value>(&line) {
            Ok(value) => tx.send((at, value)).is_ok(),
            Err(_) => true,
        });
        process.set_heading(format!("tableroll wait (pid {})", process.pid()));
        let mut waiter = Waiter { process, lines };
        let watching = waiter.line("watching");
        (waiter, watching["from"].clone())
    }

    fn line(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        match self.lines.wait(deadline, |v| v["event"] == event, |_| false) {
            Ok((_, value)) => value,
            Err(Missed::TimedOut) => self.process.fail(&format!("no {event:?} line")),
            Err(Missed::Ended | Missed::Stopped(..)) => self.process.fail(&format!("no {event:?} line")),
        }
    }

    /// The verdict line and the exit code.
    fn verdict(&mut self) -> (Value, i32) {
        let verdict = self.line("verdict");
        let status = self.process.wait();
        let code = status.code().unwrap_or_else(|| self.process.fail(&format!("ended by {status}")));
        (verdict, code)
    }

    /// Checks that the verdict is a failure for `reason`, with exit status 1, and that stderr
    /// is quiet (the reason is in the JSON line).
    #[track_caller]
    fn assert_failed(&mut self, reason: &str, newcomer: &str) -> Value {
        let (verdict, code) = self.verdict();
        let context = self.process.diagnostics();
        assert_eq!(code, 1, "{context}");
        assert_eq!(verdict["verdict"], "failed", "{context}");
        assert_eq!(verdict["reason"], reason, "{context}");
        assert_eq!(verdict["newcomer"], newcomer, "{context}");
        verdict
    }
}

/// Generation `n` of the test server under `tableroll run FLAGS --listen LISTEN`.
fn generation(dir: &Path, n: u32, listen: &str, flags: &[&str], server_args: &[&str]) -> Instance {
    let args = [&["--listen", listen], flags].concat();
    let n = n.to_string();
    let server_args = [&["--generation", n.as_str()], server_args].concat();
    Instance::start(&format!("gen-{n}"), dir, &args, &server_args)
}

/// A first instance serving on a new port: it, its id, and the `--listen` of its listener.
fn first(dir: &Path, flags: &[&str]) -> (Instance, String, String) {
    let mut old = generation(dir, 0, "web=tcp:127.0.0.1:0", flags, &[]);
    let listen = format!("web=tcp:{}", old.address("web"));
    let id = old.log("owner")["id"].as_str().expect("an id").to_owned();
    (old, id, listen)
}

fn kill(pid: u64) {
    signal(u32::try_from(pid).expect("a pid"), Signal::KILL);
}

#[test]
fn a_newcomer_taking_over_is_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let (_old, old_id, listen) = first(dir.path(), &[]);
    let (mut wait, from) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    assert_eq!(from, old_id.as_str());
    let mut new = generation(dir.path(), 1, &listen, &[], &[]);
    let new_id = new.log("owner")["id"].clone();
    let (verdict, code) = wait.verdict();
    assert_eq!(code, 0, "{}", wait.process.diagnostics());
    assert_eq!(verdict["verdict"], "succeeded");
    assert_eq!(verdict["new_owner"], new_id);
    assert_eq!(verdict["how"], "stepped_down");
    assert_eq!(verdict["from"], old_id.as_str());
}

#[test]
fn a_newcomer_passing_the_probation_is_a_success_once_it_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_id, listen) = first(dir.path(), &["--probation", "300ms"]);
    let (mut wait, _) = Waiter::start(dir.path(), &["--from", &old_id, "--timeout", BOUND]);
    let mut new = generation(dir.path(), 1, &listen, &[], &[]);
    let new_id = new.log("owner")["id"].clone();
    let (verdict, code) = wait.verdict();
    assert_eq!((verdict["verdict"].as_str(), code), (Some("succeeded"), 0), "{verdict}");
    assert_eq!(verdict["how"], "probation_passed");
    assert_eq!(verdict["new_owner"], new_id);
    old.log("taken_over");
}

#[test]
fn a_newcomer_dying_during_the_probation_is_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, _, listen) = first(dir.path(), &["--probation", "600s"]);
    let (mut wait, _) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    let mut new = generation(dir.path(), 1, &listen, &[], &[]);
    let owner_line = new.log("owner");
    kill(owner_line["child_pid"].as_u64().expect("the program's pid"));
    assert_eq!(new.wait_exit(), 128 + 9);
    let verdict = wait.assert_failed("rolled_back", owner_line["id"].as_str().unwrap());
    assert!(verdict["message"].as_str().unwrap().starts_with("rolled back: "), "{verdict}");
    old.log("rolled_back");
}

#[test]
fn a_newcomer_killed_before_it_was_ready_died() {
    let dir = tempfile::tempdir().unwrap();
    let (_old, _, listen) = first(dir.path(), &[]);
    let (mut wait, _) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    let mut new = generation(dir.path(), 1, &listen, &[], &["--ready", "never"]);
    let joined = new.log("joined");
    new.process.kill();
    let id = joined["id"].as_str().expect("an id");
    let verdict = wait.assert_failed("died", id);
    // What the owner said about the broken handoff follows, if it wrote it before the wait
    // saw the death.
    let message = verdict["message"].as_str().expect("a message");
    assert!(message.starts_with(&format!("{id} (pid {}) died before it was ready", new.pid())), "{verdict}");
}

#[test]
fn a_newcomer_whose_program_fails_before_ready_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_old, _, listen) = first(dir.path(), &[]);
    let (mut wait, _) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    let mut new = generation(dir.path(), 1, &listen, &[], &["--ready", "exit:3"]);
    let id = new.log("joined")["id"].as_str().expect("an id").to_owned();
    assert_eq!(new.wait_exit(), 1);
    wait.assert_failed("stopped", &id);
}

#[test]
fn a_newcomer_not_ready_within_the_owners_upgrade_timeout_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    // The owner, in this process, waits 200 ms for a newcomer's ready; the newcomer's
    // readiness check passes only once the owner wrote that it gave up.
    let owner = tableroll::Upgrader::builder(dir.path())
        .id("owner")
        .upgrade_timeout(Duration::from_millis(200))
        .build()
        .expect("building the owner");
    owner.ready().expect("the owner is ready");
    let (mut wait, from) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    assert_eq!(from, "owner");
    let journal = dir.path().join("journal");
    let ready = format!("cmd:grep -q handoff_failed '{}'", journal.display());
    let mut new =
        generation(dir.path(), 1, "web=tcp:127.0.0.1:0", &["--ready", &ready], &["--ready", "never"]);
    let id = new.log("joined")["id"].as_str().expect("an id").to_owned();
    let verdict = wait.assert_failed("timed_out", &id);
    let message = verdict["message"].as_str().unwrap();
    assert!(message.starts_with("timed out: owner gave up waiting for"), "{verdict}");
    // Ready after that, the newcomer is refused and gives up.
    assert_eq!(new.wait_exit(), 1);
    assert_eq!(tableroll::inspect::owner_id(dir.path()).unwrap().as_deref(), Some("owner"));
}

#[test]
fn a_newcomer_whose_ready_the_owner_does_not_answer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_id, _) = first(dir.path(), &[]);
    let (mut wait, from) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    assert_eq!(from, old_id.as_str());
    // A newcomer in this process, patient for 300 ms at each step; the owner (its supervisor)
    // is stopped between the newcomer's join and its ready, and continued after the verdict.
    let new = tableroll::Upgrader::builder(dir.path())
        .id("patient")
        .connect_timeout(Duration::from_millis(300))
        .build()
        .expect("joining from the owner");
    signal(old.pid(), Signal::STOP);
    wait_stopped(old.pid());
    let refused = new.ready().expect_err("a stopped owner cannot answer the handshake");
    assert_eq!(refused.kind(), tableroll::ErrorKind::OwnerRefused, "{refused}");
    let verdict = wait.assert_failed("refused", "patient");
    assert!(
        verdict["message"].as_str().unwrap().starts_with("refused: the owner did not accept patient"),
        "{verdict}"
    );
    signal(old.pid(), Signal::CONT);
    drop(new);
    assert_eq!(tableroll::inspect::owner_id(dir.path()).unwrap().as_deref(), Some(old_id.as_str()));
}

#[test]
fn nothing_happening_within_the_timeout_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (_old, old_id, _) = first(dir.path(), &[]);
    let (mut wait, _) = Waiter::start(dir.path(), &["--timeout", "100ms"]);
    let (verdict, code) = wait.verdict();
    assert_eq!(code, 2, "{}", wait.process.diagnostics());
    assert_eq!(verdict["verdict"], "timed_out");
    assert_eq!(verdict["message"], format!("no verdict within 100ms: no newcomer joined from {old_id}"));
}

#[test]
fn sigterm_ends_the_wait_after_a_last_look() {
    let dir = tempfile::tempdir().unwrap();
    let (_old, old_id, listen) = first(dir.path(), &[]);
    let (mut wait, _) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    signal(wait.process.pid(), Signal::TERM);
    let (verdict, code) = wait.verdict();
    assert_eq!(code, 2, "{}", wait.process.diagnostics());
    assert_eq!(verdict["verdict"], "interrupted");
    assert_eq!(verdict["message"], format!("no verdict before SIGTERM: no newcomer joined from {old_id}"));

    // As a script does once `systemctl start` failed: the newcomer is dead, and reaped.
    let (mut wait, _) = Waiter::start(dir.path(), &["--timeout", BOUND]);
    let mut new = generation(dir.path(), 1, &listen, &[], &["--ready", "never"]);
    let id = new.log("joined")["id"].as_str().expect("an id").to_owned();
    new.process.kill();
    signal(wait.process.pid(), Signal::TERM);
    wait.assert_failed("died", &id);
}

#[test]
fn text_output_and_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().expect("a UTF-8 path");
    let run = util::run(&["wait", "--dir", path, "--timeout", "10ms"]);
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    assert_eq!(run.stdout(), format!("watching {path}: no live owner; judging the first process to join\n"));
    assert_eq!(run.stderr(), "tableroll wait: no verdict within 10ms: no member joined the group\n");

    let missing = dir.path().join("missing");
    let run = util::run(&["wait", "--dir", missing.to_str().unwrap()]);
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    assert!(run.stdout().is_empty() && run.stderr().contains("missing"), "{}", run.describe());
}

#[test]
fn the_directory_removed_or_moved_during_the_wait_exits_3() {
    let parent = tempfile::tempdir().unwrap();
    // With a journal, wait holds it open, and the directory's own watch hears of its removal
    // only once that is closed.
    for (remove, journal) in [(true, false), (true, true), (false, true)] {
        let dir = parent.path().join("group");
        std::fs::create_dir(&dir).unwrap();
        if journal {
            std::fs::write(dir.join("journal"), b"").unwrap();
        }
        let (mut wait, _) = Waiter::start(&dir, &["--timeout", BOUND]);
        if remove {
            std::fs::remove_dir_all(&dir).unwrap();
        } else {
            std::fs::rename(&dir, parent.path().join("group.old")).unwrap();
        }
        let message = format!(
            "tableroll wait: {} was removed or moved away during the wait, so no verdict can come: \
             no member joined the group",
            dir.display()
        );
        let said = wait.process.wait_for_stderr(&message, TIMEOUT);
        let status = wait.process.wait();
        let context = wait.process.diagnostics();
        assert_eq!(status.code(), Some(3), "{context}");
        assert!(said, "{context}");
    }
}
