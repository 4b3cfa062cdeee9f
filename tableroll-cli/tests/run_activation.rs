//! `tableroll run` under systemd's socket activation and with its file descriptor store:
//! `systemd-socket-activate` (a binary of Debian's systemd package) passing the supervisor a
//! listener, which it adopts; and `--fd-store` against a fake `NOTIFY_SOCKET` that receives the
//! listeners and passes them back as `LISTEN_FDS` to the next start after every process of the
//! last one was killed, under load. Every wait is for a line, a datagram or a process exit,
//! bounded by [`TIMEOUT`] only to fail a hung test.

mod util;

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use serde_json::json;
use tableroll_testkit::http::http_get;
use tableroll_testkit::load::{FailureKind, Load, Target};
use tableroll_testkit::TIMEOUT;
use util::instance::{activated_server, run_args, Instance};

const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

fn body_of(addr: &str) -> String {
    let response = http_get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
    assert_eq!(response.status, 200);
    response.body
}

/// A loopback address with a port free a moment ago, for a program that binds it itself.
fn free_tcp_address() -> String {
    let probe = TcpListener::bind("127.0.0.1:0").expect("binding a probe");
    probe.local_addr().unwrap().to_string()
}

/// `systemd-socket-activate` listening on each of `listen` with the names `names`, which runs
/// `tableroll run` once the first connection comes (in its own process: the pid stays).
fn socket_activated(
    label: &str,
    dir: &Path,
    listen: &[&str],
    names: &str,
    flags: &[&str],
    n: u32,
) -> Instance {
    let mut cmd = Command::new(SOCKET_ACTIVATE);
    for address in listen {
        cmd.arg(format!("--listen={address}"));
    }
    // It passes on only the variables it is told to.
    cmd.arg(format!("--fdname={names}")).arg(format!("--setenv=TMPDIR={}", dir.display()));
    let server = activated_server().to_str().unwrap().to_string();
    let generation = n.to_string();
    cmd.arg("--").arg(env!("CARGO_BIN_EXE_tableroll"));
    cmd.args(run_args(dir, flags, &[&server, "--generation", &generation]));
    let instance = Instance::spawn(label, cmd);
    // Bound and listening from this line on: a connection now waits in the backlog.
    if !instance.process.wait_for_stderr("Listening on", TIMEOUT) {
        instance.fail("systemd-socket-activate did not say it listens");
    }
    instance
}

#[test]
fn a_socket_activated_supervisor_adopts_the_listener_and_hands_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_tcp_address();
    let extra = dir.path().join("extra.sock");
    let listen = format!("web=tcp:{addr}");
    let listens = [addr.as_str(), extra.to_str().unwrap()];
    let mut first = socket_activated("gen-0", dir.path(), &listens, "web:extra", &["--listen", &listen], 0);
    // The first connection starts `tableroll run`, whose program answers it.
    assert_eq!(body_of(&addr), "hello from gen-0\n");
    let adopted = first.log("adopted");
    assert_eq!(
        (&adopted["name"], &adopted["fd"], &adopted["address"]),
        (&json!("web"), &json!(3), &json!(addr))
    );
    let unused = first.log("activation_unused");
    assert_eq!((&unused["name"], &unused["fd"]), (&json!("extra"), &json!(4)), "{unused}");
    let listener = first.log("listener");
    assert_eq!((&listener["activated"], &listener["inherited"]), (&json!(true), &json!(false)), "{listener}");
    // The program gets its own activation, not the supervisor's: one listener, its own pid.
    let started = first.program("started");
    assert_eq!((&started["listen_fds"], &started["listen_fdnames"]), (&json!("1"), &json!("web")));
    assert_eq!(started["listen_pid"], started["pid"].as_u64().unwrap().to_string(), "{started}");
    first.log("owner");

    // An upgrade by a plain `tableroll run`: it inherits the adopted socket from the owner.
    let load = Load::start(vec![Target::Tcp(addr.clone())], 4);
    load.wait_served_by("gen-0", 20);
    let mut second = Instance::start("gen-1", dir.path(), &["--listen", &listen], &["--generation", "1"]);
    assert_eq!(second.log("joined")["inherited"], json!(["web"]));
    let listener = second.log("listener");
    assert_eq!((&listener["activated"], &listener["inherited"]), (&json!(false), &json!(true)), "{listener}");
    second.log("owner");
    first.log("taken_over");
    assert_eq!(first.wait_exit(), 0);
    load.wait_served_by("gen-1", 20);
    let report = load.stop();
    assert!(report.failures.is_empty(), "{}", report.summary());
    assert_eq!(body_of(&addr), "hello from gen-1\n");
}

#[test]
fn an_activated_socket_unlike_its_listen_is_refused_with_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    // A TCP listener where --listen asks for UDP on the same address.
    let addr = free_tcp_address();
    let udp = format!("web=udp:{addr}");
    let mut tcp_for_udp = socket_activated("udp", dir.path(), &[&addr], "web", &["--listen", &udp], 0);
    let _trigger = TcpStream::connect(&addr).expect("connecting to the activated socket");
    let error = tcp_for_udp.log("error")["message"].as_str().unwrap().to_string();
    let expected =
        format!("it is a TCP listener on {addr}, but --listen {udp} asks for a UDP socket on {addr}");
    assert!(error.contains("adopting descriptor 3 (web) passed by socket activation"), "{error}");
    assert!(error.contains(&expected), "{error}");
    assert_eq!(tcp_for_udp.wait_exit(), 1);

    // A Unix listener at another path than --listen names.
    let (bound, wanted) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let unix = format!("web=unix:{}", wanted.display());
    let mut elsewhere =
        socket_activated("unix", dir.path(), &[bound.to_str().unwrap()], "web", &["--listen", &unix], 0);
    let _trigger = UnixStream::connect(&bound).expect("connecting to the activated socket");
    let error = elsewhere.log("error")["message"].as_str().unwrap().to_string();
    let expected = format!(
        "it is a Unix stream listener at {}, but --listen {unix} asks for a Unix stream listener at {}",
        bound.display(),
        wanted.display()
    );
    assert!(error.contains(&expected), "{error}");
    assert_eq!(elsewhere.wait_exit(), 1);
    // Nothing was started, and nothing was bound at the path --listen names.
    assert!(elsewhere.pending().all(|(_, line)| line["event"] != "started"));
    assert!(!wanted.exists());
}

/// A malformed activation, or a descriptor that is no socket, ends the supervisor with an error
/// that says what is wrong, before it joins the group or starts anything.
#[test]
fn a_malformed_activation_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind(dir.path());
    let listen = ["--listen", "web=tcp:127.0.0.1:0"];

    let file = std::fs::File::create(dir.path().join("not-a-socket")).unwrap();
    let mut not_a_socket =
        start_activated("file", dir.path(), &systemd, &listen, 0, &[("web", file.as_fd())]);
    let error = not_a_socket.log("error")["message"].as_str().unwrap().to_string();
    assert!(
        error.contains(
            "it is not a socket, but --listen web=tcp:127.0.0.1:0 asks for a TCP listener on 127.0.0.1:0"
        ),
        "{error}"
    );
    assert_eq!(not_a_socket.wait_exit(), 1);

    for (fds, names, expected) in [
        ("abc", "web", "LISTEN_FDS \"abc\" is not a number from 0 to 4096"),
        ("2", "web", "LISTEN_FDNAMES has 1 names for LISTEN_FDS=2"),
        // Nothing open at 3 and 4: every descriptor of the test is close-on-exec.
        ("2", "web:admin", "taking descriptor 3 (web) of LISTEN_FDS: it is not open"),
    ] {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#).arg(env!("CARGO_BIN_EXE_tableroll"));
        cmd.args(run_args(dir.path(), &listen, &[activated_server().to_str().unwrap()]));
        cmd.env("LISTEN_FDS", fds).env("LISTEN_FDNAMES", names).env_remove("NOTIFY_SOCKET");
        let mut malformed = Instance::spawn(&format!("LISTEN_FDS={fds}"), cmd);
        let error = malformed.log("error")["message"].as_str().unwrap().to_string();
        assert!(error.contains(expected), "LISTEN_FDS={fds} LISTEN_FDNAMES={names}: {error}");
        assert_eq!(malformed.wait_exit(), 1);
        assert!(malformed.pending().all(|(_, line)| line["event"] != "joined"));
    }
}

/// The fake `NOTIFY_SOCKET`: a datagram socket the supervisors report to, as to systemd.
struct FakeSystemd {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl FakeSystemd {
    /// Generation `n` of the test server under `tableroll run FLAGS`, reporting to this socket.
    fn start(&self, dir: &Path, n: u32, flags: &[&str]) -> Instance {
        let server = activated_server().to_str().unwrap();
        let generation = n.to_string();
        let program = [server, "--generation", generation.as_str()];
        Instance::start_command(&format!("gen-{n}"), dir, flags, &program, Some(&self.path))
    }

    fn bind(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("binding the notification socket");
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        FakeSystemd { socket, path }
    }

    /// The next datagram and the descriptors it carried.
    fn receive(&self) -> (String, Vec<OwnedFd>) {
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = rustix::net::recvmsg(&self.socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
            .unwrap_or_else(|e| panic!("no notification within {TIMEOUT:?}: {e}"));
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        (String::from_utf8_lossy(&buf[..msg.bytes]).into_owned(), fds)
    }

    /// Reads datagrams until one is `state` exactly; its descriptors. The ones before it
    /// (READY=1, STOPPING=1, ...) must carry none.
    fn receive_exactly(&self, state: &str) -> Vec<OwnedFd> {
        loop {
            let (got, fds) = self.receive();
            if got == state {
                return fds;
            }
            assert!(fds.is_empty(), "{got:?} carried descriptors");
        }
    }
}

/// Starts `tableroll run FLAGS -- activated_server --generation N` reporting to `systemd`, with
/// `passed` (name and socket) as its socket activation: descriptors 3, 4, ... and `LISTEN_PID`
/// its own pid, as systemd starts a unit's main process.
fn start_activated(
    label: &str,
    dir: &Path,
    systemd: &FakeSystemd,
    flags: &[&str],
    n: u32,
    passed: &[(&str, BorrowedFd<'_>)],
) -> Instance {
    let server = activated_server().to_str().unwrap().to_string();
    let generation = n.to_string();
    let mut cmd = Command::new("/bin/sh");
    // The shell's pid is the supervisor's: exec keeps it.
    cmd.arg("-c").arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#).arg(env!("CARGO_BIN_EXE_tableroll"));
    cmd.args(run_args(dir, flags, &[&server, "--generation", &generation]));
    let names: Vec<&str> = passed.iter().map(|(name, _)| *name).collect();
    cmd.env("LISTEN_FDS", passed.len().to_string()).env("LISTEN_FDNAMES", names.join(":"));
    cmd.env("NOTIFY_SOCKET", &systemd.path).env("TMPDIR", dir);
    let sources: Vec<RawFd> = passed.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    // Copies of the sources above every target first, so that no placement overwrites a source.
    let above = 3 + sources.len() as RawFd + 100;
    // SAFETY: the closure runs in the child between fork and exec and makes only system calls
    // (fcntl, dup2) on descriptors the child inherited: each source is open in this process
    // (borrowed above, alive for this call), and the targets 3, 4, ... are free to replace in
    // the child. The `OwnedFd`s built for the targets are forgotten: the program inherits them.
    unsafe {
        cmd.pre_exec(move || {
            let mut copies = Vec::with_capacity(sources.len());
            for &source in &sources {
                copies.push(rustix::io::fcntl_dupfd_cloexec(BorrowedFd::borrow_raw(source), above)?);
            }
            for (target, copy) in (3..).zip(&copies) {
                let mut placed = OwnedFd::from_raw_fd(target);
                let result = rustix::io::dup2(copy, &mut placed)
                    .and_then(|()| rustix::io::fcntl_setfd(&placed, rustix::io::FdFlags::empty()));
                std::mem::forget(placed);
                result?;
            }
            Ok(())
        });
    }
    Instance::spawn(label, cmd)
}

/// Waits until process `pid` exited (it may be another's child: watched through a pidfd).
fn wait_gone(pidfd: &OwnedFd) {
    let mut fds = [rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec { tv_sec: TIMEOUT.as_secs() as i64, tv_nsec: 0 };
    let ready = rustix::event::poll(&mut fds, Some(&timeout)).expect("polling a pidfd");
    assert_eq!(ready, 1, "process still running after {TIMEOUT:?}");
}

fn pidfd_of(pid: u64) -> OwnedFd {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("opening a pidfd")
}

#[test]
fn the_fd_store_gives_the_listener_back_after_every_process_was_killed_and_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind(dir.path());
    let flags = ["--fd-store", "--listen", "web=tcp:127.0.0.1:0"];
    let mut first = systemd.start(dir.path(), 0, &flags);
    let addr = first.address("web");
    let owner_line = first.log("owner");
    assert!(systemd.receive().0.starts_with("READY=1\n"));
    let mut stored = systemd.receive_exactly("FDSTORE=1\nFDNAME=web");
    assert_eq!(stored.len(), 1, "one descriptor per FDSTORE=1");
    let stored = stored.remove(0);
    assert_eq!(first.log("fd_stored")["name"], "web");

    let load = Load::start(vec![Target::Tcp(addr.clone())], 4);
    load.wait_served_by("gen-0", 20);
    // Every process of the instance is killed, as in a crash of the whole unit: the supervisor,
    // then its program. Only the fake systemd's copy of the socket keeps it open.
    let program = pidfd_of(owner_line["child_pid"].as_u64().expect("the program's pid"));
    let killed = Instant::now();
    first.process.kill();
    rustix::process::pidfd_send_signal(&program, rustix::process::Signal::KILL).expect("killing the program");
    wait_gone(&program);
    let gone = Instant::now();
    // Clients keep connecting meanwhile: their connections wait in the backlog of the socket,
    // which stays open in the fake systemd.

    // The unit started again: the stored listener passed back as socket activation, and a
    // name no --listen has any more (dropped from the store once the new instance owns).
    let leftover = UdpSocket::bind("127.0.0.1:0").unwrap();
    let passed = [("web", stored.as_fd()), ("gone", leftover.as_fd())];
    let listen = format!("web=tcp:{addr}");
    let mut second =
        start_activated("gen-1", dir.path(), &systemd, &["--fd-store", "--listen", &listen], 1, &passed);
    assert_eq!(second.log("joined")["inherited"], json!([]));
    let adopted = second.log("adopted");
    assert_eq!((&adopted["name"], &adopted["address"]), (&json!("web"), &json!(addr)));
    assert_eq!(second.log("activation_unused")["name"], "gone");
    assert_eq!(second.log("listener")["activated"], true);
    second.log("owner");
    load.wait_served_by("gen-1", 20);
    let report = load.stop();
    assert!(
        !report.failures.iter().any(|f| f.kind == FailureKind::Refused),
        "a connection was refused: {}",
        report.summary()
    );
    report.assert_only_losses_inside(killed, gone);
    eprintln!("killed and restarted from the fd store under load: {}", report.summary());

    // The new owner stores its listener too (systemd keeps one copy of the same socket), and
    // drops the name it no longer uses.
    assert_eq!(systemd.receive_exactly("FDSTORE=1\nFDNAME=web").len(), 1);
    assert!(systemd.receive_exactly("FDSTOREREMOVE=1\nFDNAME=gone").is_empty());
    assert_eq!(second.log("fd_store_removed")["name"], "gone");

    // An upgrade started with the same activation, as a second instance sharing a socket unit
    // is: the owner hands web over, and its socket is kept rather than the activated one.
    // What was stored under web is replaced: the activated socket may be another than the one
    // handed over.
    let passed = [("web", stored.as_fd())];
    let flags = ["--fd-store", "--listen", &listen];
    let mut third = start_activated("gen-2", dir.path(), &systemd, &flags, 2, &passed);
    assert_eq!(third.log("joined")["inherited"], json!(["web"]));
    assert_eq!(third.log("activation_superseded")["name"], "web");
    let listener = third.log("listener");
    assert_eq!((&listener["activated"], &listener["inherited"]), (&json!(false), &json!(true)), "{listener}");
    third.log("owner");
    assert!(systemd.receive_exactly("FDSTOREREMOVE=1\nFDNAME=web").is_empty());
    assert_eq!(systemd.receive_exactly("FDSTORE=1\nFDNAME=web").len(), 1);
    let stored_again = third.log("fd_stored");
    assert_eq!((&stored_again["name"], &stored_again["replaced"]), (&json!("web"), &json!(true)));
    second.log("taken_over");
    assert_eq!(second.wait_exit(), 0);
    assert_eq!(body_of(&addr), "hello from gen-2\n");
}

#[test]
fn a_listener_no_longer_listened_on_is_removed_from_the_fd_store() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind(dir.path());
    let flags = ["--fd-store", "--listen", "web=tcp:127.0.0.1:0", "--listen", "admin=tcp:127.0.0.1:0"];
    let mut first = systemd.start(dir.path(), 0, &flags);
    let web = first.address("web");
    first.log("owner");
    assert_eq!(systemd.receive_exactly("FDSTORE=1\nFDNAME=web").len(), 1);
    assert_eq!(systemd.receive_exactly("FDSTORE=1\nFDNAME=admin").len(), 1);

    let listen = format!("web=tcp:{web}");
    let flags = ["--fd-store", "--listen", listen.as_str()];
    let mut second = systemd.start(dir.path(), 1, &flags);
    assert_eq!(second.log("owner")["closed_unclaimed"], json!(["admin"]));
    assert_eq!(systemd.receive_exactly("FDSTORE=1\nFDNAME=web").len(), 1);
    assert!(systemd.receive_exactly("FDSTOREREMOVE=1\nFDNAME=admin").is_empty());
    assert_eq!(second.log("fd_store_removed")["name"], "admin");
    assert_eq!(first.wait_exit(), 0);
    assert_eq!(body_of(&web), "hello from gen-1\n");
}

/// Without `NOTIFY_SOCKET`, `--fd-store` says that nothing was stored, and serves on.
#[test]
fn the_fd_store_without_systemd_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut only =
        Instance::start("gen-0", dir.path(), &["--fd-store", "--listen", "web=tcp:127.0.0.1:0"], &[]);
    let web = only.address("web");
    only.log("owner");
    only.log("fd_store_unavailable");
    assert_eq!(body_of(&web), "hello from gen-0\n");
}
