//! The commit point: the owner file decides who owns the group. An owner steps down only when
//! the file names another live process, and stays the owner when a newcomer lets go without
//! recording itself, whatever goes wrong in between: a newcomer that keeps its session open, an
//! owner paused past the newcomer's patience, a write that fails, a reused id, a shortage of
//! descriptors, a second newcomer queued behind the first.
//!
//! Each test here failed before the commit point was built (see RELIABILITY.md).

mod util;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustix::process::{kill_process, prlimit, waitid, Pid, Resource, Rlimit, Signal, WaitId, WaitIdOptions};
use util::wire::{frame, read_frame, take_lock, FakeOwner, RawNewcomer};
use util::{
    assert_hello, http_get, inherited_ids, listen_addr, runnable_peer, serving, Peer, TestDir, NOBODY,
    TIMEOUT,
};

/// A serving owner with one TCP listener `web`; returns it and the listener's address.
fn tcp_owner(dir: &TestDir, id: &str) -> (Peer, String) {
    serving(dir, id, "127.0.0.1:0", &[])
}

/// A peer newcomer `id` for the listener at `addr`, started with `extra` arguments.
fn newcomer(dir: &Path, id: &str, addr: &str, extra: &[&str]) -> Peer {
    let listen = format!("web=tcp:{addr}");
    Peer::start(dir, &[&["--id", id, "--listen", &listen, "--serve"], extra].concat())
}

/// A newcomer `id` takes over from `owner` and serves `addr`.
fn takes_over(dir: &TestDir, owner: &mut Peer, id: &str, addr: &str) -> Peer {
    let mut next = newcomer(dir.path(), id, addr, &[]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"], "{}", owner.diagnostics());
    next.wait_for("ready");
    owner.wait_for("upgrade_complete");
    assert_eq!(dir.owner(), id);
    assert_hello(http_get(addr, "/"), id);
    next
}

/// Runs a raw newcomer's half of the version 1 handshake and checks the owner's answer.
fn handshake(raw: &RawNewcomer) {
    let mut request = vec![0x42];
    request.extend(frame(b"{\"version\":1}\n"));
    (&raw.stream).write_all(&request).unwrap();
    assert_eq!(read_frame(&raw.stream), b"{\"msg\":\"stepping down\"}\n");
}

fn signal(peer: &Peer, sig: Signal) {
    let pid = Pid::from_raw(peer.pid() as i32).expect("a pid");
    kill_process(pid, sig).expect("signalling the peer");
}

#[test]
fn a_newcomer_that_records_itself_but_keeps_the_session_open_is_the_owner_at_once() {
    let dir = TestDir::new();
    // The default upgrade timeout (60 s) is longer than the test waits for anything.
    let (mut owner, _addr) = tcp_owner(&dir, "o");
    let raw = RawNewcomer::join(dir.path());
    handshake(&raw);
    let _upgrade_socket = UnixListener::bind(dir.join("raw.sock")).unwrap();
    std::fs::write(dir.join("pid"), "raw").unwrap();
    // The lock and the session stay open: the file alone decides.
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
    drop(raw);
}

#[test]
fn an_owner_paused_past_the_newcomers_patience_stays_the_owner() {
    let dir = TestDir::new();
    let (mut owner, addr) = tcp_owner(&dir, "o");
    // A newcomer that stays alive after its ready failed (it drains what it served).
    let patient = tableroll::Upgrader::builder(dir.path())
        .id("n1")
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_eq!(patient.inherited_ids(), ["web"]);
    let _web = patient.fds().listen_tcp("web", &addr).unwrap();
    // The owner has sent everything and waits for the ready byte; it is paused there (every
    // thread: a stop signal is taken by one thread, and the others stop after it).
    signal(&owner, Signal::STOP);
    let pid = Pid::from_raw(owner.pid() as i32).unwrap();
    waitid(WaitId::Pid(pid), WaitIdOptions::STOPPED | WaitIdOptions::NOWAIT).expect("waiting for the stop");
    let err = patient.ready().unwrap_err();
    assert!(matches!(err.kind(), tableroll::ErrorKind::OwnerRefused), "{err}");
    // It wakes up, finds the handshake in its socket buffer and answers it: the newcomer let
    // go long ago, so it must remain the owner.
    signal(&owner, Signal::CONT);
    assert_hello(http_get(&addr, "/"), "o");
    let _next = takes_over(&dir, &mut owner, "n2", &addr);
    owner.expect_clean_exit();
    drop(patient);
}

#[test]
fn a_newcomer_whose_write_fails_leaves_the_owner_in_charge() {
    let dir = TestDir::new();
    let (mut owner, addr) = tcp_owner(&dir, "o");
    // A file size limit of zero makes the owner file write fail, as a full disk would; the
    // signal it raises is ignored so that the write reports EFBIG.
    let listen = format!("web=tcp:{addr}");
    let mut n1 = Peer::start_after_shell(
        dir.path(),
        "trap '' XFSZ; ulimit -f 0",
        &["--id", "n1", "--listen", &listen],
    );
    assert_eq!(inherited_ids(&n1.wait_for("inherited")), ["web"]);
    let message = n1.expect_error_exit();
    assert!(message.contains("writing the owner file"), "{message}");
    assert_eq!(dir.owner(), "o");
    assert_hello(http_get(&addr, "/"), "o");
    let _next = takes_over(&dir, &mut owner, "n2", &addr);
    owner.expect_clean_exit();
}

#[test]
fn a_reused_id_keeps_its_upgrade_socket_when_the_older_process_stops() {
    let dir = TestDir::new();
    // The first blue keeps its upgrader while it drains, as `tableroll run` does while its
    // program finishes its requests.
    let blue = tableroll::Upgrader::builder(dir.path()).id("blue").build().unwrap();
    let web = blue.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    let addr = web.local_addr().unwrap().to_string();
    blue.ready().unwrap();

    let mut green = newcomer(dir.path(), "green", &addr, &[]);
    assert_eq!(inherited_ids(&green.wait_for("inherited")), ["web"]);
    green.wait_for("ready");
    assert!(blue.upgrade_complete().wait_timeout(TIMEOUT), "the first blue never stepped down");
    let mut blue2 = takes_over(&dir, &mut green, "blue", &addr);
    green.expect_clean_exit();

    drop(web);
    drop(blue);
    assert!(dir.join("blue.sock").exists(), "the older blue removed the live one's upgrade socket");
    let _next = takes_over(&dir, &mut blue2, "green", &addr);
    blue2.expect_clean_exit();
}

/// The lowest descriptor number `pid` does not use: the next one it would get.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).unwrap()
}

/// The hard limit on open files of `pid`, from `/proc/<pid>/limits`.
fn nofile_hard_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    line.split_whitespace().nth(4).and_then(|hard| hard.parse().ok()).expect("a numeric hard limit")
}

#[test]
fn running_out_of_descriptors_only_delays_an_upgrade() {
    let dir = TestDir::new();
    let (mut owner, addr) = tcp_owner(&dir, "o");
    // Lower the owner's descriptor limit to the next descriptor it would get: every accept
    // fails with EMFILE until the limit is restored.
    let pid = Pid::from_raw(owner.pid() as i32).unwrap();
    let hard = nofile_hard_limit(owner.pid());
    let lowered = Rlimit { current: Some(lowest_free_fd(owner.pid())), maximum: Some(hard) };
    let before = prlimit(Some(pid), Resource::Nofile, lowered).unwrap();
    let mut n1 = newcomer(dir.path(), "n1", &addr, &[]);
    owner.wait_for_log("cannot accept");
    prlimit(Some(pid), Resource::Nofile, before).unwrap();
    assert_eq!(inherited_ids(&n1.wait_for("inherited")), ["web"], "{}", owner.diagnostics());
    n1.wait_for("ready");
    owner.wait_for("upgrade_complete");
    assert_eq!(dir.owner(), "n1");
    owner.expect_clean_exit();
}

#[test]
fn a_newcomer_queued_behind_one_that_let_go_is_served() {
    let dir = TestDir::new();
    let (mut owner, addr) = tcp_owner(&dir, "o");
    let raw = RawNewcomer::join(dir.path());
    handshake(&raw);
    // It releases the lock without recording itself, and keeps the session open.
    let RawNewcomer { lock, stream, .. } = raw;
    drop(lock);
    // The next newcomer (no connect timeout) takes the lock and waits on the owner.
    let _n2 = takes_over(&dir, &mut owner, "n2", &addr);
    drop(stream);
    owner.expect_clean_exit();
}

#[test]
fn an_idle_owner_steps_down_when_the_file_names_another_live_process() {
    let dir = TestDir::new();
    let (mut owner, _addr) = tcp_owner(&dir, "o");
    let lock = take_lock(dir.path());
    let _upgrade_socket = UnixListener::bind(dir.join("x.sock")).unwrap();
    std::fs::write(dir.join("pid"), "x").unwrap();
    drop(lock);
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
}

#[test]
fn stop_interrupts_a_ready_waiting_for_a_hung_owner() {
    let dir = TestDir::new();
    let fake = FakeOwner::new(dir.path());
    let path = dir.path().to_owned();
    let joining = std::thread::spawn(move || tableroll::Upgrader::builder(&path).id("n").build());
    let conn = fake.accept();
    (&conn).write_all(&frame(b"\t []\n")).unwrap();
    let newcomer = Arc::new(joining.join().unwrap().unwrap());
    let (tx, rx) = mpsc::channel();
    let readying = Arc::clone(&newcomer);
    std::thread::spawn(move || tx.send(readying.ready()));
    // The owner reads the handshake and never answers.
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut &conn, &mut byte).unwrap();
    assert_eq!(byte, [0x42]);
    let stopping = Arc::clone(&newcomer);
    std::thread::spawn(move || stopping.stop());
    let result = rx.recv_timeout(TIMEOUT).expect("ready() still waits after stop()");
    assert!(
        matches!(result.as_ref().map_err(|e| e.kind()), Err(tableroll::ErrorKind::Stopped)),
        "{result:?}"
    );
    assert!(!dir.join("n.sock").exists());
}

/// A process of `user` that holds every inotify instance the user may have (until killed):
/// inotify instances are counted per user, up to `fs.inotify.max_user_instances`.
struct InotifyHog(std::process::Child);

impl InotifyHog {
    fn start(user: u32) -> InotifyHog {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("600").uid(user).gid(user);
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (inotify_init1, no allocation, no lock); the instances are not close-on-exec, so
        // `sleep` keeps them.
        unsafe {
            cmd.pre_exec(|| {
                use rustix::fs::inotify::{init, CreateFlags};
                for _ in 0..100_000 {
                    match init(CreateFlags::empty()) {
                        Ok(fd) => std::mem::forget(fd),
                        Err(_) => break,
                    }
                }
                Ok(())
            });
        }
        InotifyHog(cmd.spawn().expect("starting the inotify hog"))
    }
}

impl Drop for InotifyHog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_owner_without_inotify_still_steps_down_and_stays() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: using up another user's inotify instances needs root");
        return;
    }
    let tmp = TestDir::new();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let coord = tmp.join("coord");
    std::fs::create_dir(&coord).unwrap();
    std::os::unix::fs::chown(&coord, Some(NOBODY), Some(NOBODY)).unwrap();
    let program = runnable_peer(&tmp, Some(NOBODY));
    let dir = coord.to_str().unwrap();
    let _hog = InotifyHog::start(NOBODY);

    let mut owner = Peer::start_as_user(
        &program,
        Some(NOBODY),
        &["--dir", dir, "--id", "o", "--listen", "web=tcp:127.0.0.1:0", "--serve"],
    );
    let addr = listen_addr(&owner.wait_for("listening"), "web");
    owner.wait_for("ready");
    owner.wait_for_log("no inotify watch");

    // A newcomer that lets go after the handshake leaves it the owner.
    let raw = RawNewcomer::join(&coord);
    handshake(&raw);
    drop(raw);
    assert_hello(http_get(&addr, "/"), "o");

    // A newcomer that records itself and keeps its session and the lock: only a look at the
    // file, on the period, can tell the owner.
    let raw = RawNewcomer::join(&coord);
    handshake(&raw);
    let raw_socket = UnixListener::bind(coord.join("raw.sock")).unwrap();
    std::fs::write(coord.join("pid"), "raw").unwrap();
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
    drop(raw);
    drop(raw_socket);
    // Made by root, the stale socket file is out of the next peer's reach: not its to judge.
    std::fs::remove_file(coord.join("raw.sock")).unwrap();

    // An idle owner, found by the same period, steps down when the file names another live
    // process.
    let mut idle = Peer::start_as_user(&program, Some(NOBODY), &["--dir", dir, "--id", "i"]);
    idle.wait_for("ready");
    idle.wait_for_log("no inotify watch");
    let lock = take_lock(&coord);
    let _x_socket = UnixListener::bind(coord.join("x.sock")).unwrap();
    std::fs::write(coord.join("pid"), "x").unwrap();
    drop(lock);
    idle.wait_for("upgrade_complete");
    idle.expect_clean_exit();
}
