//! `tableroll run` told to stop before it took over: wherever the stop lands (waiting for the
//! lock, or the program starting under each readiness mode), the newcomer gives up and exits 1,
//! and the running generation stays the owner and keeps serving. Every wait is for a line, a
//! file or a process exit, bounded by [`TIMEOUT`] only to fail a hung test.

mod util;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;
use tableroll_testkit::http::http_get;
use tableroll_testkit::TIMEOUT;
use util::instance::Instance;

/// The exit status of a supervisor that gave up before taking over.
const GAVE_UP: i32 = 1;

/// A serving generation 0 on a new loopback listener: the instance, its id and its address.
fn serving_owner(dir: &Path) -> (Instance, String, String) {
    let mut owner =
        Instance::start("gen-0", dir, &["--listen", "web=tcp:127.0.0.1:0"], &["--generation", "0"]);
    let id = owner.log("joined")["id"].as_str().expect("an id").to_string();
    let addr = owner.address("web");
    owner.log("owner");
    (owner, id, addr)
}

/// The old generation is still the owner, alive, and answers on the shared port.
fn assert_old_serves(dir: &Path, old: &mut Instance, old_id: &str, addr: &str) {
    let status = util::run(&["status", "--dir", dir.to_str().expect("a UTF-8 path"), "--json"]);
    let report = status.json();
    assert_eq!(report["owner"]["id"], old_id, "{}", status.describe());
    assert_eq!(report["owner"]["alive"], true, "{}", status.describe());
    let response = http_get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
    assert_eq!((response.status, response.body.as_str()), (200, "hello from gen-0\n"));
    assert!(old.process.is_running(), "the old supervisor exited");
    assert!(old.pending().all(|(_, v)| v["event"] != "taken_over"), "the old generation was taken over");
}

/// A newcomer on the owner's port: `tableroll run FLAGS --listen web=tcp:ADDR -- activated_server
/// --generation 1 SERVER_ARGS`, whose program never reports ready and ignores SIGTERM (so only
/// the supervisor's decision ends it).
fn newcomer(dir: &Path, addr: &str, flags: &[&str], server_args: &[&str]) -> Instance {
    let listen = format!("web=tcp:{addr}");
    let flags = [&["--listen", &listen, "--drain-timeout", "300ms"], flags].concat();
    let server_args = [&["--generation", "1", "--ready", "never", "--ignore-sigterm"], server_args].concat();
    Instance::start("gen-1", dir, &flags, &server_args)
}

/// The newcomer, told to stop, gives up: it says so, exits [`GAVE_UP`], and never owned.
fn assert_gave_up(new: &mut Instance) {
    new.log("cancelled");
    assert_eq!(new.wait_exit(), GAVE_UP);
    assert!(new.pending().all(|(_, v)| v["event"] != "owner"), "the newcomer took over");
}

/// Stop during `--ready notify`: the program's READY=1 arriving after the stop is ignored.
fn stopped_while_notify_pending(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_id, addr) = serving_owner(dir.path());
    let mut new = newcomer(dir.path(), &addr, &["--ready", "notify"], &[]);
    let started = new.program("started");
    let notify_socket = started["notify_socket"].as_str().expect("a NOTIFY_SOCKET").to_string();
    new.signal(signal);
    new.log("signal");
    // Readiness after the stop: the supervisor must not act on it (it may already be gone).
    let _ = tableroll::systemd::notify_to(OsStr::new(&notify_socket), "READY=1");
    assert_gave_up(&mut new);
    assert_old_serves(dir.path(), &mut old, &old_id, &addr);
}

#[test]
fn sigterm_while_waiting_for_readiness_by_notify_gives_up() {
    stopped_while_notify_pending(Signal::TERM);
}

#[test]
fn sigint_while_waiting_for_readiness_by_notify_gives_up() {
    stopped_while_notify_pending(Signal::INT);
}

#[test]
fn sigterm_while_waiting_for_readiness_by_delay_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_id, addr) = serving_owner(dir.path());
    // Long enough that the stop lands first; the supervisor does not wait it out.
    let mut new = newcomer(dir.path(), &addr, &["--ready", "delay:60s", "--ready-timeout", "90s"], &[]);
    new.program("started");
    new.signal(Signal::TERM);
    assert_gave_up(&mut new);
    assert_old_serves(dir.path(), &mut old, &old_id, &addr);
}

#[test]
fn sigterm_while_waiting_for_readiness_by_command_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_id, addr) = serving_owner(dir.path());
    let marker = dir.path().join("ready-marker");
    let ready = format!("cmd:test -e '{}'", marker.display());
    let mut new = newcomer(dir.path(), &addr, &["--ready", &ready], &[]);
    new.log("check_failed");
    new.signal(Signal::TERM);
    new.log("signal");
    // The check would succeed from now on: the supervisor must not act on it.
    std::fs::write(&marker, b"").unwrap();
    assert_gave_up(&mut new);
    assert_old_serves(dir.path(), &mut old, &old_id, &addr);
}

/// A library newcomer that joined (and holds the lock) but is not ready, built on a thread of
/// its own as a separate process would be.
fn lock_holder(dir: &Path) -> tableroll::Upgrader {
    let dir = dir.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(tableroll::Upgrader::builder(dir).id("holder").connect_timeout(TIMEOUT).build());
    });
    rx.recv_timeout(TIMEOUT).expect("the holder joined in time").expect("the holder joined")
}

/// The upgrade socket files in `dir` whose name starts with `prefix`.
fn sockets_named(dir: &Path, prefix: &str) -> Vec<String> {
    let entries = std::fs::read_dir(dir).expect("listing the directory");
    let names = entries.map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned());
    names.filter(|name| name.starts_with(prefix) && name.ends_with(".sock")).collect()
}

/// Waits until `dir` holds an upgrade socket named with `prefix` (bounded by [`TIMEOUT`]):
/// the process bound it and is waiting for the lock. A file appearing is the event; the pause
/// between looks only paces them.
fn wait_for_socket(dir: &Path, prefix: &str, new: &mut Instance) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(name) = sockets_named(dir, prefix).pop() {
            return name;
        }
        if Instant::now() > deadline || !new.process.is_running() {
            new.fail(&format!("no upgrade socket {prefix}* appeared"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigterm_while_waiting_for_the_lock_gives_up_and_leaves_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_id, addr) = serving_owner(dir.path());
    let holder = lock_holder(dir.path());
    let mut new = newcomer(dir.path(), &addr, &[], &[]);
    let prefix = format!("g2-{}-", new.pid());
    let socket = wait_for_socket(dir.path(), &prefix, &mut new);
    new.signal(Signal::TERM);
    assert_gave_up(&mut new);
    assert_eq!(sockets_named(dir.path(), &prefix), Vec::<String>::new(), "{socket} remains");
    let events: Vec<Value> = new.pending().map(|(_, v)| v["event"].clone()).collect();
    assert!(!events.contains(&Value::from("joined")), "{events:?}");
    // The other newcomer gives up too: the lock is free, and the owner still serves.
    drop(holder);
    assert_old_serves(dir.path(), &mut old, &old_id, &addr);
}
