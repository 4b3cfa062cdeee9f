//! `tableroll run` leaves no process of a generation behind: not the workers a program forked
//! (in its process group or out of it) when the program exits, and not the program when the
//! supervisor itself is killed. The processes are watched through pidfds opened while they are
//! known to be alive; every wait is for a line, an exit or a pidfd, bounded by [`TIMEOUT`] only
//! to fail a hung test.

mod util;

use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use serde_json::Value;
use tableroll_testkit::http::http_get;
use tableroll_testkit::TIMEOUT;
use util::instance::Instance;

/// A process of the test's, watched through a pidfd opened while it was known to be alive, and
/// killed through it when dropped (a pidfd cannot reach a reused pid).
struct Watched {
    pid: u64,
    pidfd: OwnedFd,
}

impl Watched {
    /// `line`'s `pid`, which printed `line` and so was alive a moment ago.
    fn from_line(line: &Value) -> Watched {
        let pid = line["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {line}"));
        let raw = Pid::from_raw(pid as i32).expect("a pid");
        let pidfd = pidfd_open(raw, PidfdFlags::empty()).unwrap_or_else(|e| panic!("pidfd of {pid}: {e}"));
        Watched { pid, pidfd }
    }

    /// Whether the process exited by the end of `timeout` (`None`: now).
    fn exited_within(&self, timeout: Option<std::time::Duration>) -> bool {
        let timeout = Timespec::try_from(timeout.unwrap_or_default()).unwrap();
        let mut fds = [PollFd::from_borrowed_fd(self.pidfd.as_fd(), PollFlags::IN)];
        loop {
            match poll(&mut fds, Some(&timeout)) {
                Ok(n) => return n > 0,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => panic!("polling the pidfd of {}: {e}", self.pid),
            }
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = pidfd_send_signal(&self.pidfd, Signal::KILL);
    }
}

fn body_of(addr: &str) -> String {
    let response = http_get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
    assert_eq!(response.status, 200);
    response.body
}

/// Generation 0 forks a worker (`fork` as `--fork-worker` takes it) and is replaced by
/// generation 1: once generation 0's supervisor exited, its worker is gone and only
/// generation 1 answers.
fn a_forked_worker_is_gone_when_its_supervisor_exits(
    fork: &str,
    flags: &[&str],
    server_args: &[&str],
) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let args = [&["--listen", "web=tcp:127.0.0.1:0"], flags].concat();
    let server_args = [&["--generation", "0", "--fork-worker", fork], server_args].concat();
    let mut old = Instance::start("gen-0", dir.path(), &args, &server_args);
    let addr = old.address("web");
    let program = Watched::from_line(&old.program("started"));
    let worker = Watched::from_line(&old.program("worker"));
    old.log("owner");
    let listen = format!("web=tcp:{addr}");
    let mut new = Instance::start("gen-1", dir.path(), &["--listen", &listen], &["--generation", "1"]);
    let new_program = Watched::from_line(&new.program("started"));
    new.log("owner");
    old.log("taken_over");
    let code = old.wait_exit();
    assert!(program.exited_within(None), "the program {} outlived its supervisor", program.pid);
    assert!(worker.exited_within(None), "the worker {} outlived its supervisor", worker.pid);
    for _ in 0..10 {
        assert_eq!(body_of(&addr), "hello from gen-1\n");
    }
    drop(new_program);
    new.process.kill();
    code
}

#[test]
fn a_worker_in_the_programs_group_is_stopped_when_the_program_exits() {
    assert_eq!(a_forked_worker_is_gone_when_its_supervisor_exits("group", &[], &[]), 0);
}

#[test]
fn a_worker_that_left_the_programs_group_is_stopped_when_the_program_exits() {
    assert_eq!(a_forked_worker_is_gone_when_its_supervisor_exits("detached", &[], &[]), 0);
}

#[test]
fn a_worker_that_ignores_the_stop_signal_is_killed_after_the_drain_timeout() {
    // The program ignores SIGTERM too: it is killed with its group after the drain timeout, and
    // the worker, out of that group, after the drain timeout it gets in turn.
    let code = a_forked_worker_is_gone_when_its_supervisor_exits(
        "detached",
        &["--drain-timeout", "200ms"],
        &["--ignore-sigterm"],
    );
    assert_eq!(code, 128 + 9);
}

#[test]
fn a_program_whose_supervisor_is_killed_gets_the_stop_signal_and_is_killed_after_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--listen", "web=tcp:127.0.0.1:0", "--stop-signal", "INT", "--drain-timeout", "300ms"];
    let mut owner = Instance::start("gen-0", dir.path(), &flags, &["--ignore-stop-signals"]);
    let program = Watched::from_line(&owner.program("started"));
    owner.log("owner");
    owner.process.kill();
    // The parent-death signal is the stop signal; the program ignores it and is killed when
    // the drain timeout ran out, with no supervisor left to do it.
    let signal = owner.program("signal");
    assert_eq!(signal["signal"], 2, "the program got {signal} instead of SIGINT");
    assert!(program.exited_within(Some(TIMEOUT)), "the program {} outlived its supervisor", program.pid);
}

#[test]
fn a_daemonized_worker_is_stopped_when_the_program_exits() {
    assert_eq!(a_forked_worker_is_gone_when_its_supervisor_exits("daemon", &[], &[]), 0);
}

#[test]
fn an_orphan_that_exits_while_the_program_runs_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--listen", "web=tcp:127.0.0.1:0"];
    let mut owner = Instance::start("gen-0", dir.path(), &flags, &["--fork-worker", "daemon"]);
    let _program = Watched::from_line(&owner.program("started"));
    let worker = Watched::from_line(&owner.program("worker"));
    owner.log("owner");
    pidfd_send_signal(&worker.pidfd, Signal::TERM).unwrap();
    let exited = owner.log("orphan_exited");
    assert_eq!(exited["orphan_pid"], worker.pid, "{exited}");
    // Reaped: no longer a child of the supervisor, zombie or not.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", worker.pid)).unwrap_or_default();
    let parent = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1));
    assert_ne!(parent, Some(owner.process.pid().to_string().as_str()), "{stat}");
    owner.process.kill();
}

/// A watchdog whose supervisor died before the watchdog looked for it has been handed to a
/// reaper: it must not take that reaper for its supervisor (and wait for it forever), but give
/// the program's group its drain timeout and end. Here it is started by this test, as if by a
/// supervisor that is gone: a pid that is not its parent's. It runs in a group of its own,
/// the group it drains.
#[test]
fn a_watchdog_whose_supervisor_died_before_it_started_drains_and_ends() {
    let mut gone = std::process::Command::new("true").spawn().expect("spawning true");
    let gone_pid = gone.id().to_string();
    gone.wait().expect("reaping true");
    let mut watchdog = std::process::Command::new(env!("CARGO_BIN_EXE_tableroll"));
    watchdog.args(["drain-watchdog", "--supervisor-pid", &gone_pid, "--stop-signal", "15"]);
    watchdog.args(["--drain-timeout-ms", "100"]).stdin(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
    let mut child = watchdog.spawn().expect("spawning the watchdog");
    let watched = Watched {
        pid: u64::from(child.id()),
        pidfd: pidfd_open(Pid::from_raw(child.id() as i32).expect("a pid"), PidfdFlags::empty())
            .expect("a pidfd of the watchdog"),
    };
    assert!(
        watched.exited_within(Some(TIMEOUT)),
        "the watchdog waited for a supervisor that is not its parent"
    );
    let status = child.wait().expect("reaping the watchdog");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed with its group at the deadline"
    );
}
