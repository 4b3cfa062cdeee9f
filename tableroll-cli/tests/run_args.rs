//! `tableroll run`'s command line: what is refused at parsing (exit status 2, nothing created),
//! and errors that say their cause once. No test here serves anything or waits for time.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `tableroll run --dir DIR FLAGS -- PROGRAM` to its end, with the supervisor's private
/// files kept in `tmp`.
fn run(dir: &Path, tmp: &Path, flags: &[&str], program: &str) -> (Option<i32>, String) {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_tableroll"))
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .args(flags)
        .args(["--", program])
        .env("TMPDIR", tmp)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("running tableroll");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs `tableroll run` with `flags`, expects bad usage (exit status 2) with a message
/// containing each of `expected`, and nothing created in the directory.
fn refused(flags: &[&str], expected: &[&str]) {
    let temp = tempfile::tempdir().unwrap();
    let (dir, tmp) = (temp.path().join("group"), temp.path().join("tmp"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let (code, stderr) = run(&dir, &tmp, flags, "/bin/true");
    assert_eq!(code, Some(2), "{flags:?}\n{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "{flags:?}: no {text:?} in\n{stderr}");
    }
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for empty in [&dir, &tmp] {
        let left: Vec<_> = std::fs::read_dir(empty).unwrap().collect();
        assert!(left.is_empty(), "{flags:?} left {left:?} in {}", empty.display());
    }
}

#[test]
fn two_listeners_with_the_same_name_are_refused() {
    refused(
        &["--listen", "web=tcp:127.0.0.1:0", "--listen", "web=tcp:127.0.0.1:0"],
        &["--listen name \"web\" is given twice", "web=tcp:127.0.0.1:0 and web=tcp:127.0.0.1:0"],
    );
    refused(
        &["--listen", "web=tcp:127.0.0.1:0", "--listen", "web=unix:/tmp/web.sock"],
        &["--listen name \"web\" is given twice"],
    );
}

#[test]
fn two_listeners_on_the_same_socket_are_refused() {
    refused(
        &["--listen", "a=unix:/tmp/same.sock", "--listen", "b=unix:/tmp/same.sock"],
        &["--listen a=unix:/tmp/same.sock and --listen b=unix:/tmp/same.sock are the same socket"],
    );
}

#[test]
fn an_address_without_a_port_is_refused() {
    refused(
        &["--listen", "web=tcp:localhost"],
        &["invalid value 'web=tcp:localhost' for '--listen <NAME=SPEC>'", "\"localhost\" has no port"],
    );
    refused(&["--listen", "dns=udp:127.0.0.1:"], &["'dns=udp:127.0.0.1:'", "has no port"]);
}

#[test]
fn a_port_out_of_range_or_not_a_number_is_refused() {
    refused(
        &["--listen", "web=tcp:127.0.0.1:99999"],
        &["'web=tcp:127.0.0.1:99999' for '--listen <NAME=SPEC>'", "port 99999 is out of range"],
    );
    refused(&["--listen", "web=tcp:localhost:http"], &["port \"http\" is not a number"]);
}

#[test]
fn unknown_host_forms_are_refused() {
    refused(&["--listen", "web=tcp::8080"], &["'web=tcp::8080'", "has no host"]);
    refused(&["--listen", "web=tcp:::1:8080"], &["needs brackets, as in [::1]:8080"]);
    refused(&["--listen", "web=tcp:[::1:8080"], &["not an IPv6 address"]);
    refused(&["--listen", "web=tcp:999.0.0.1:80"], &["999.0.0.1 is not an IPv4 address"]);
    refused(&["--listen", "web=tcp:no/such:80"], &["\"no/such\" is not an IP address or a host name"]);
    refused(&["--listen", "web=unix:"], &["'web=unix:'", "the unix socket path is empty"]);
    refused(&["--listen", "web=sctp:127.0.0.1:80"], &["unknown socket kind \"sctp\""]);
}

#[test]
fn a_huge_duration_is_refused_not_a_panic() {
    let listen = ["--listen", "web=tcp:127.0.0.1:0"];
    refused(
        &[&listen[..], &["--ready-timeout", "10000000000000000000s"]].concat(),
        &[
            "invalid value '10000000000000000000s' for '--ready-timeout <DURATION>'",
            "too long: at most 365 days",
        ],
    );
    refused(
        &[&listen[..], &["--drain-timeout", "525601m"]].concat(),
        &["'--drain-timeout <DURATION>'", "too long"],
    );
    refused(&[&listen[..], &["--ready", "delay:9999999999s"]].concat(), &["'--ready <MODE>'", "too long"]);
}

/// How many times `text` says the OS's "No such file or directory".
fn enoent_count(text: &str) -> usize {
    text.matches("No such file or directory").count()
}

#[test]
fn a_missing_directory_is_reported_with_its_cause_once() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");
    let (code, stderr) = run(&missing, temp.path(), &["--listen", "web=tcp:127.0.0.1:0"], "/bin/true");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("joining the group in {}", missing.display())), "{stderr}");
    assert_eq!(enoent_count(&stderr), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_missing_program_is_reported_with_its_cause_once() {
    let temp = tempfile::tempdir().unwrap();
    let (code, stderr) =
        run(temp.path(), temp.path(), &["--listen", "web=tcp:127.0.0.1:0"], "/nonexistent/program");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot run /nonexistent/program: No such file or directory"), "{stderr}");
    assert_eq!(enoent_count(&stderr), 1, "{stderr}");
}

#[test]
fn a_unix_listener_in_a_missing_directory_is_reported_with_its_cause_once() {
    let temp = tempfile::tempdir().unwrap();
    let socket = temp.path().join("missing").join("web.sock");
    let listen = format!("web=unix:{}", socket.display());
    let (code, stderr) = run(temp.path(), temp.path(), &["--listen", &listen], "/bin/true");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("listener web on unix:{}", socket.display())), "{stderr}");
    assert_eq!(enoent_count(&stderr), 1, "{stderr}");
}

#[test]
fn the_notification_socket_needs_no_temporary_directory() {
    // Its address is abstract: a missing $TMPDIR does not matter.
    let temp = tempfile::tempdir().unwrap();
    let (code, stderr) =
        run(temp.path(), &temp.path().join("missing"), &["--listen", "web=tcp:127.0.0.1:0"], "/bin/true");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("notification socket"), "{stderr}");
    assert!(stderr.contains("exited with status 0 before it was ready"), "{stderr}");
}
