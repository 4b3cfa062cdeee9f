//! `tableroll status` end to end: the real binary against real coordination directories, set
//! up here with the library (a ready `Upgrader` is a live owner; one built but not ready holds
//! the lock, i.e. an upgrade is in progress). Nothing here sleeps or measures time; every wait
//! is bounded by [`util::LIMIT`] only to fail a hung run.

mod util;

use std::fs;
use std::io;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;

use serde_json::Value;
use tableroll::Upgrader;
use util::{run, run_in, Run, LIMIT};

fn status(dir: &Path) -> Run {
    run(&["status", "--dir", dir.to_str().expect("a UTF-8 temp path")])
}

fn status_json(dir: &Path) -> (Run, Value) {
    let run = run(&["status", "--dir", dir.to_str().expect("a UTF-8 temp path"), "--json"]);
    let report = run.json();
    (run, report)
}

/// A process of the group that became the owner.
fn owner(dir: &Path, id: &str) -> Upgrader {
    let upgrader = Upgrader::builder(dir).id(id).connect_timeout(LIMIT).build().expect("joining the group");
    upgrader.ready().expect("becoming the owner");
    upgrader
}

/// A newcomer that took the owner's descriptors but is not ready: it holds the lock. Built on
/// a thread of its own, as a separate process would be.
fn newcomer(dir: &Path, id: &str) -> Upgrader {
    let (dir, id) = (dir.to_owned(), id.to_owned());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Upgrader::builder(dir).id(id).connect_timeout(LIMIT).build());
    });
    rx.recv_timeout(LIMIT).expect("the newcomer was built in time").expect("the newcomer joined")
}

/// Leaves `<dir>/<id>.sock` behind as a crashed process would: a socket file nobody listens on.
fn stale_socket(dir: &Path, id: &str) {
    drop(UnixListener::bind(dir.join(format!("{id}.sock"))).expect("binding"));
}

/// The first line of the text report that contains `needle`.
fn line_with<'a>(run: &'a Run, needle: &str) -> &'a str {
    lines(run)
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}\n{}", run.describe()))
}

/// The line of the text report labelled `label` (`owner`, `upgrade`, `verdict`...).
fn labelled<'a>(run: &'a Run, label: &str) -> &'a str {
    lines(run)
        .find(|line| line.strip_prefix(label).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no line labelled {label:?}\n{}", run.describe()))
}

fn lines(run: &Run) -> std::str::Lines<'_> {
    std::str::from_utf8(&run.output.stdout).unwrap_or_else(|e| panic!("stdout not UTF-8: {e}")).lines()
}

/// The socket entry with `id` in a JSON report.
fn json_socket<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["sockets"]
        .as_array()
        .and_then(|sockets| sockets.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no socket {id} in {report:#}"))
}

#[test]
fn a_live_owner_with_an_upgrade_in_progress_and_a_stale_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let me = std::process::id();
    let owner = owner(dir, "owner-1");
    stale_socket(dir, "crashed");
    let newcomer = newcomer(dir, "newcomer-2");

    let text = status(dir);
    let context = text.describe();
    assert_eq!(text.code(), Some(0), "{context}");
    assert!(labelled(&text, "owner").ends_with(&format!("owner-1: alive, pid {me}")), "{context}");
    assert!(
        labelled(&text, "upgrade")
            .ends_with(&format!("in progress: newcomer-2 is taking over; the lock is held by pid {me}")),
        "{context}"
    );
    // The owner serves the newcomer: its standby mark is made when the handoff starts.
    assert!(
        line_with(&text, "owner-1.sock").ends_with(&format!("live   pid {me}  (owner, handing over)")),
        "{context}"
    );
    assert!(line_with(&text, "newcomer-2.sock").ends_with(&format!("live   pid {me}")), "{context}");
    assert!(line_with(&text, "crashed.sock").ends_with("stale"), "{context}");
    assert!(labelled(&text, "unexpected").ends_with("none"), "{context}");
    assert!(
        labelled(&text, "verdict").ends_with("OK: the owner is serving; an upgrade is in progress"),
        "{context}"
    );

    let (json, report) = status_json(dir);
    let context = json.describe();
    assert_eq!(json.code(), Some(0), "{context}");
    assert_eq!(report["dir"], dir.to_str().unwrap(), "{context}");
    assert_eq!(report["owner"]["file"], "valid", "{context}");
    assert_eq!(report["owner"]["id"], "owner-1", "{context}");
    assert_eq!(report["owner"]["alive"], true, "{context}");
    assert_eq!(report["owner"]["pid"], me, "{context}");
    assert_eq!(report["lock"]["held"], "yes", "{context}");
    assert_eq!(report["lock"]["holder_pid"], me, "{context}");
    assert_eq!(report["handover"]["id"], "newcomer-2", "{context}");
    assert_eq!(report["handover"]["pid"], me, "{context}");
    assert_eq!(report["sockets"].as_array().map(Vec::len), Some(3), "{context}");
    let socket = json_socket(&report, "owner-1");
    assert_eq!(
        (&socket["state"], &socket["pid"], &socket["owner"], &socket["standby"]),
        (&"live".into(), &me.into(), &true.into(), &true.into())
    );
    let socket = json_socket(&report, "newcomer-2");
    assert_eq!(
        (&socket["state"], &socket["owner"], &socket["standby"]),
        (&"live".into(), &false.into(), &false.into()),
        "{context}"
    );
    let socket = json_socket(&report, "crashed");
    assert_eq!((&socket["state"], &socket["pid"]), (&"stale".into(), &Value::Null), "{context}");
    assert_eq!(report["unexpected"], Value::Array(vec![]), "{context}");

    // The newcomer gives up: the lock is free again and the owner still serves.
    drop(newcomer);
    let (json, report) = status_json(dir);
    assert_eq!(json.code(), Some(0), "{}", json.describe());
    assert_eq!(report["lock"]["held"], "no", "{}", json.describe());
    assert_eq!(report["lock"]["holder_pid"], Value::Null, "{}", json.describe());
    assert!(report["verdict"].as_str().is_some_and(|v| v == "OK: the owner is serving"), "{report:#}");
    assert!(!owner.upgrade_complete().is_complete());
}

/// A newcomer taking over from an owner that handed over and removed its socket (as a Go
/// owner does before the newcomer records itself) is a handover, not a group without owner;
/// one taking over from an owner that crashed (its socket stale) is not served meanwhile.
#[test]
fn a_newcomer_taking_over_is_a_handover_unless_the_owner_crashed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("pid"), b"stepped-down").unwrap();
    let newcomer = newcomer(dir, "next-2");
    let (json, report) = status_json(dir);
    let context = json.describe();
    assert_eq!(json.code(), Some(0), "{context}");
    assert_eq!(report["owner"]["alive"], false, "{context}");
    assert_eq!(report["handover"]["id"], "next-2", "{context}");
    assert!(
        report["verdict"].as_str().is_some_and(|v| v.starts_with("OK: a handover is in progress")),
        "{context}"
    );

    stale_socket(dir, "stepped-down");
    let text = status(dir);
    let context = text.describe();
    assert_eq!(text.code(), Some(1), "{context}");
    assert!(labelled(&text, "upgrade").contains("next-2 is taking over"), "{context}");
    assert!(
        labelled(&text, "verdict").contains("NO OWNER: the owner is gone; a new process is taking over"),
        "{context}"
    );
    drop(newcomer);
}

#[test]
fn an_owner_file_naming_a_stale_socket_is_a_dead_owner() {
    let tmp = tempfile::tempdir().unwrap();
    stale_socket(tmp.path(), "gone-7");
    fs::write(tmp.path().join("pid"), b"gone-7").unwrap();

    let text = status(tmp.path());
    let context = text.describe();
    assert_eq!(text.code(), Some(1), "{context}");
    assert!(labelled(&text, "owner").contains("gone-7: dead (its upgrade socket is stale"), "{context}");
    assert!(line_with(&text, "gone-7.sock").ends_with("stale  (owner)"), "{context}");
    assert!(labelled(&text, "verdict").contains("NO OWNER: the owner is gone"), "{context}");

    let (json, report) = status_json(tmp.path());
    assert_eq!(json.code(), Some(1), "{}", json.describe());
    assert_eq!(report["owner"]["id"], "gone-7");
    assert_eq!(report["owner"]["alive"], false);
    assert_eq!(report["owner"]["pid"], Value::Null);
    assert_eq!(json_socket(&report, "gone-7")["owner"], true);
}

#[test]
fn an_empty_directory_has_no_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let text = status(tmp.path());
    assert_eq!(text.code(), Some(1), "{}", text.describe());
    assert!(labelled(&text, "owner").ends_with("none (no owner file)"), "{}", text.describe());
    assert!(labelled(&text, "sockets").ends_with("none"), "{}", text.describe());
    assert!(labelled(&text, "verdict").contains("NO OWNER"), "{}", text.describe());

    fs::write(tmp.path().join("pid"), b"").unwrap();
    let (json, report) = status_json(tmp.path());
    assert_eq!(json.code(), Some(1), "{}", json.describe());
    assert_eq!(report["owner"]["file"], "empty", "{report:#}");
    assert_eq!(report["lock"]["held"], "no", "{report:#}");
}

#[test]
fn a_missing_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("never-created");
    let path = missing.to_str().unwrap();
    for run in [status(&missing), run(&["status", "--dir", path, "--json"])] {
        let context = run.describe();
        assert_eq!(run.code(), Some(2), "{context}");
        assert!(run.stdout().is_empty(), "{context}");
        assert!(run.stderr().contains("never-created"), "{context}");
        assert!(run.stderr().contains("No such file or directory"), "{context}");
    }
    assert!(!missing.exists(), "status created the directory");
}

#[test]
fn an_invalid_owner_file_and_strange_entries_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("pid"), b"../../etc/passwd").unwrap();
    fs::write(dir.join("notes.txt"), b"x").unwrap();
    fs::write(dir.join("planted.sock"), b"not a socket").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();

    let text = status(dir);
    let context = text.describe();
    assert_eq!(text.code(), Some(1), "{context}");
    assert!(labelled(&text, "owner").contains("invalid: the owner file holds"), "{context}");
    assert!(line_with(&text, "planted.sock").ends_with("regular file"), "{context}");
    assert!(line_with(&text, "sub ").ends_with("directory"), "{context}");
    assert!(line_with(&text, "link ").ends_with("symlink"), "{context}");
    assert!(labelled(&text, "verdict").contains("the owner file is invalid"), "{context}");

    let (json, report) = status_json(dir);
    assert_eq!(json.code(), Some(1), "{}", json.describe());
    assert_eq!(report["owner"]["file"], "invalid");
    assert_eq!(report["owner"]["id"], Value::Null);
    assert!(report["owner"]["problem"].as_str().is_some_and(|p| p.contains("not a valid id")), "{report:#}");
    let kinds: Vec<(&str, &str)> = report["unexpected"]
        .as_array()
        .expect("unexpected")
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("link", "symlink"),
            ("notes.txt", "regular_file"),
            ("planted.sock", "regular_file"),
            ("sub", "directory")
        ]
    );
    assert_eq!(report["sockets"], Value::Array(vec![]));
}

#[test]
fn a_relative_directory_finds_the_live_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group");
    fs::create_dir(&dir).unwrap();
    let _owner = owner(&dir, "rel-1");
    let run = run_in(tmp.path(), &["status", "--dir", "group", "--json"]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let report = run.json();
    assert_eq!(report["owner"]["alive"], true, "{report:#}");
    assert_eq!(report["dir"], dir.to_str().unwrap(), "{report:#}");
}

#[test]
fn status_never_connects_to_an_upgrade_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A fake owner that only listens: any connection would wait in its backlog.
    let fake = UnixListener::bind(dir.join("fake.sock")).unwrap();
    fake.set_nonblocking(true).unwrap();
    fs::write(dir.join("pid"), b"fake").unwrap();
    for run in [status(dir), status_json(dir).0] {
        assert_eq!(run.code(), Some(0), "{}", run.describe());
    }
    match fake.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("status connected to the owner's socket: {other:?}"),
    }
}

#[test]
fn status_leaves_a_real_owner_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let owner = owner(dir, "real-1");
    let before = fs::read(dir.join("pid")).unwrap();
    for run in [status(dir), status_json(dir).0] {
        assert_eq!(run.code(), Some(0), "{}", run.describe());
    }
    assert!(!owner.upgrade_complete().is_complete(), "the owner was told it was replaced");
    assert_eq!(fs::read(dir.join("pid")).unwrap(), before);
    // And the group still upgrades as usual: the signal was observable all along.
    let next = newcomer(dir, "real-2");
    next.ready().expect("the next process took over");
    assert!(owner.upgrade_complete().wait_timeout(LIMIT), "the owner was not told of the upgrade");
}

#[test]
fn help_says_what_status_reads_and_how_it_exits() {
    let help = run(&["status", "--help"]);
    let text = help.stdout();
    assert_eq!(help.code(), Some(0), "{}", help.describe());
    for needle in [
        "--dir",
        "--json",
        "never connects",
        "never takes the lock",
        "/proc/net/unix",
        "/proc/locks",
        "Exit status",
        "0  an owner is alive",
        "1  there is no live owner",
        "2  DIR cannot be read",
    ] {
        assert!(text.contains(needle), "{needle:?} missing\n{}", help.describe());
    }
}

#[test]
fn names_that_are_not_utf8_are_kept_exact_in_json() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("pid"), b"g1-\xff").unwrap();
    drop(UnixListener::bind(dir.join(OsStr::from_bytes(b"w\xfe.sock"))).unwrap());
    stale_socket(dir, "plain");
    fs::write(dir.join(OsStr::from_bytes(b"odd\xfd\n")), b"").unwrap();
    let (json, report) = status_json(dir);
    let context = json.describe();
    // The display form is lossy; the exact bytes come escaped next to it.
    assert_eq!(report["owner"]["id"], "g1-\u{fffd}", "{context}");
    assert_eq!(report["owner"]["id_raw"], "g1-\\xff", "{context}");
    assert_eq!(json_socket(&report, "w\u{fffd}")["id_raw"], "w\\xfe", "{context}");
    assert_eq!(report["unexpected"][0]["name"], "odd\u{fffd}\n", "{context}");
    assert_eq!(report["unexpected"][0]["name_raw"], "odd\\xfd\\n", "{context}");
    // A UTF-8 name is exact as it is: no second form.
    assert_eq!(json_socket(&report, "plain").get("id_raw"), None, "{context}");
}

#[test]
fn an_owner_file_is_read_byte_for_byte_by_status_and_run() {
    // The library's rule: the file's bytes are the id, nothing trimmed. `echo g1-x > pid` names
    // the owner "g1-x\n", whose socket "g1-x\n.sock" does not exist, even with a live g1-x.sock.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("pid"), b"g1-x\n").unwrap();
    let _not_the_owner = UnixListener::bind(dir.join("g1-x.sock")).unwrap();
    let (json, report) = status_json(dir);
    assert_eq!(report["owner"]["id"], "g1-x\n", "{}", json.describe());
    assert_eq!(report["owner"]["alive"], false, "{}", json.describe());
    assert_eq!(json.code(), Some(1), "{}", json.describe());
    let text = status(dir);
    assert_eq!(labelled(&text, "owner"), "owner       g1-x\\n: dead (it has no upgrade socket g1-x\\n.sock)");

    // `tableroll run` reads it the same way: no owner to take over from (it would wait on
    // g1-x.sock otherwise), and the id's generation is 1.
    let mut new = util::instance::Instance::start("gen-2", dir, &["--listen", "web=tcp:127.0.0.1:0"], &[]);
    let joined = new.log("joined");
    assert_eq!(
        (joined["inherited"].clone(), joined["generation"].clone()),
        (Value::from(Vec::<String>::new()), Value::from(2))
    );
    new.log("owner");
    let (json, report) = status_json(dir);
    assert_eq!(report["owner"]["id"], joined["id"], "{}", json.describe());
    assert_eq!(report["owner"]["alive"], true, "{}", json.describe());
}
