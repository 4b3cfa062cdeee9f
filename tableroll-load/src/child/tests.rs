//! The core against small shell scripts.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::sync::mpsc::{self, Receiver};

use rustix::process::{test_kill_process, Pid};

use super::*;

/// Only to detect a failure: every wait below ends as soon as what it waits for happens.
const TIMEOUT: Duration = Duration::from_secs(30);

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).stdin(Stdio::null());
    cmd
}

/// Reads `child`'s stdout into a channel: each line, then `None` at the end.
fn lines(child: &mut Child) -> Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel();
    child.read_stdout(move |_, line| tx.send(line).is_ok()).unwrap();
    rx
}

fn next(rx: &Receiver<Option<String>>) -> Option<String> {
    rx.recv_timeout(TIMEOUT).expect("a line or the end")
}

#[test]
fn lines_arrive_in_order_then_the_end_and_stderr_apart() {
    let mut child = Child::spawn(&mut sh("echo a; echo b >&2; echo c; exit 3"), None).unwrap();
    let rx = lines(&mut child);
    assert_eq!(next(&rx).as_deref(), Some("a"));
    assert_eq!(next(&rx).as_deref(), Some("c"));
    assert_eq!(next(&rx), None);
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert_eq!(child.status().and_then(|s| s.code()), Some(3));
    assert!(child.wait_for_stderr("b", TIMEOUT));
    assert_eq!(child.stderr(), "b\n");
}

#[test]
fn the_callback_stops_the_reading() {
    let mut child = Child::spawn(&mut sh("echo a; echo b; echo c"), None).unwrap();
    let (tx, rx) = mpsc::channel();
    child
        .read_stdout(move |_, line| {
            let _ = tx.send(line);
            false
        })
        .unwrap();
    assert_eq!(next(&rx).as_deref(), Some("a"));
    // The thread dropped its sender without another call.
    assert!(rx.recv_timeout(TIMEOUT).is_err());
    assert!(child.read_stdout(|_, _| true).is_err(), "stdout is read once");
}

#[test]
fn stderr_lines_go_to_their_callback() {
    let (tx, rx) = mpsc::channel();
    let mut cmd = sh("echo one >&2; printf 'two\\nthree' >&2");
    let mut child =
        Child::spawn_reading_stderr(&mut cmd, None, move |_, line| tx.send(line).is_ok()).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), "one");
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), "two");
    // No newline after `three`: not a line, but kept.
    assert!(rx.recv_timeout(TIMEOUT).is_err());
    child.wait().unwrap();
    assert_eq!(child.stderr(), "one\ntwo\nthree");
}

#[test]
fn the_stderr_tail_is_bounded_at_a_character() {
    let child = Child::spawn(&mut sh("printf 0123456789 >&2; printf abcdef >&2"), Some(8)).unwrap();
    assert!(child.wait_for_stderr("cdef", TIMEOUT));
    assert_eq!(child.stderr(), "89abcdef");
    // `a`, `é` (2 bytes), `€` (3 bytes): the last 4 bytes start inside the `é`.
    let child = Child::spawn(&mut sh(r"printf 'a\303\251\342\202\254' >&2"), Some(4)).unwrap();
    assert!(child.wait_for_stderr("€", TIMEOUT));
    assert_eq!(child.stderr(), "€");
}

#[test]
fn waiting_for_stderr_ends_when_it_closes() {
    let child = Child::spawn(&mut sh("echo something >&2"), None).unwrap();
    assert!(!child.wait_for_stderr("something else", Duration::from_secs(3600)));
}

#[test]
fn kill_reaps_and_drop_kills_by_pid() {
    let mut child = Child::spawn(&mut sh("exec sleep 1000"), Some(0)).unwrap();
    assert_eq!(child.try_wait().unwrap(), None);
    assert_eq!(child.kill().unwrap().signal(), Some(9));
    assert_eq!(child.kill().unwrap().signal(), Some(9), "killing again reports the status");

    let child = Child::spawn(&mut sh("exec sleep 1000"), Some(0)).unwrap();
    let pid = Pid::from_raw(child.pid() as i32).unwrap();
    assert!(test_kill_process(pid).is_ok());
    drop(child);
    // Not even a zombie: reaped.
    assert_eq!(test_kill_process(pid), Err(Errno::SRCH));
}

#[test]
fn stdin_is_the_callers() {
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped());
    let mut child = Child::spawn(&mut cmd, None).unwrap();
    let rx = lines(&mut child);
    let mut stdin = child.take_stdin().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    assert_eq!(next(&rx).as_deref(), Some("hello"));
    drop(stdin);
    assert_eq!(next(&rx), None);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_missing_program_is_an_error() {
    let err = Child::spawn(&mut Command::new("/nonexistent/program"), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
