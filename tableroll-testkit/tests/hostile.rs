//! Hostile peers on a live owner's upgrade socket. Each connects without taking the lock and
//! then closes at once, takes the descriptors and vanishes, answers with garbage, a malformed or
//! foreign handshake, or descriptors of its own, stays silent, or writes without ever reading.
//!
//! After each one the owner still serves HTTP, has not stepped down, and holds exactly as many
//! descriptors as when idle. Descriptor counts are compared only at quiet moments: when the
//! owner has just closed a hostile connection (seen here as the end of the stream, or a hang-up),
//! or after a probe session of our own, which the owner accepts only once the previous session
//! ended (it runs one at a time). At the end the owner hands over to a real newcomer.

mod util;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use serde_json::Value;
use util::wire::{connect_owner, frame, read_frame, recv_fd};
use util::{assert_hello, fd_count, http_get, inherited_ids, listen_addr, Peer, TestDir, TIMEOUT};

const OWNER: &str = "owner";

/// A serving owner `owner` with one TCP listener `web`, its descriptor count when idle, and its
/// peak virtual memory size then.
struct Owner {
    peer: Peer,
    addr: String,
    idle_fds: usize,
    idle_vm_peak_kib: u64,
}

/// How much the owner's peak virtual memory may grow over a test: room for thread stacks and
/// malloc arenas, far less than the 2 GiB and more than hostile length prefixes ask for.
const VM_GROWTH_LIMIT_KIB: u64 = 1 << 20;

/// The peak virtual memory size of process `pid` (`VmPeak`), in KiB.
fn vm_peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmPeak in /proc/{pid}/status"))
}

impl Owner {
    fn start(dir: &TestDir, upgrade_timeout_ms: &str, extra: &[&str]) -> Owner {
        let mut args =
            vec!["--id", OWNER, "--listen", "web=tcp:127.0.0.1:0", "--serve", "--upgrade-timeout-ms"];
        args.push(upgrade_timeout_ms);
        args.extend_from_slice(extra);
        let mut peer = Peer::start(dir.path(), &args);
        assert_eq!(inherited_ids(&peer.wait_for("inherited")), Vec::<String>::new());
        let addr = listen_addr(&peer.wait_for("listening"), "web");
        peer.wait_for("ready");
        // Idle: `ready` returned (the lock is released, the upgrade server runs), no session,
        // and this request's connection is closed (the client reads to the end of the stream,
        // which comes only once the server closed its side).
        assert_hello(http_get(&addr, "/"), OWNER);
        let idle_fds = fd_count(peer.pid());
        let idle_vm_peak_kib = vm_peak_kib(peer.pid());
        Owner { peer, addr, idle_fds, idle_vm_peak_kib }
    }

    /// The owner holds exactly as many descriptors as when idle. Call at a quiet moment only.
    #[track_caller]
    fn check_fds(&self, case: &str, moment: &str) {
        let now = fd_count(self.peer.pid());
        if now != self.idle_fds {
            self.peer.fail(&format!(
                "{case}: the owner holds {now} descriptors {moment}, {} when idle",
                self.idle_fds
            ));
        }
    }

    /// A session of our own after a case. The owner accepts it only once the case's session
    /// ended; we receive everything and answer a wrong ready byte. Returns once the owner
    /// closed it: a quiet moment.
    #[track_caller]
    fn probe(&self, dir: &TestDir, case: &str) {
        let stream = connect_owner(dir.path());
        let ids = receive_all(&stream);
        if !ids.iter().any(|id| id == "web") {
            self.peer.fail(&format!("{case}: the probe after it received {ids:?}, without web"));
        }
        (&stream).write_all(&[0x00]).unwrap();
        let rest = read_until_closed(&stream);
        if !rest.is_empty() {
            self.peer.fail(&format!("{case}: the owner answered a probe's wrong ready byte: {rest:?}"));
        }
    }

    /// The owner's peak virtual memory grew by less than [`VM_GROWTH_LIMIT_KIB`].
    #[track_caller]
    fn check_memory(&self, case: &str) {
        // Lengths from the wire are bounded before anything is allocated (an untouched
        // allocation would not show in the resident size, but does in the virtual one).
        let grown = vm_peak_kib(self.peer.pid()).saturating_sub(self.idle_vm_peak_kib);
        if grown > VM_GROWTH_LIMIT_KIB {
            self.peer.fail(&format!("{case}: the owner's peak virtual memory grew by {} MiB", grown >> 10));
        }
    }

    /// Still running, still the owner, never told it to step down, still serving, and the
    /// directory holds only its socket, the owner file and `others`.
    #[track_caller]
    fn check_in_charge(&mut self, dir: &TestDir, case: &str, others: &[&str]) {
        if !self.peer.is_running() {
            let _ = self.peer.wait_exit();
            self.peer.fail(&format!("{case}: the owner died"));
        }
        if self.peer.has_pending("upgrade_complete") {
            self.peer.fail(&format!("{case}: the owner stepped down"));
        }
        if dir.owner() != OWNER {
            self.peer.fail(&format!("{case}: the owner file names {:?}", dir.owner()));
        }
        match http_get(&self.addr, "/") {
            Ok(r) if r.status == 200 && r.body == format!("hello from {OWNER}\n") => {}
            other => self.peer.fail(&format!("{case}: the owner stopped serving: {other:?}")),
        }
        let mut expected: BTreeSet<String> = others.iter().map(|o| o.to_string()).collect();
        expected.extend([format!("{OWNER}.sock"), "pid".into()]);
        if dir.entries() != expected {
            self.peer.fail(&format!("{case}: the directory holds {:?}", dir.entries()));
        }
    }

    /// Everything to check after each case: a probe session (so the case's session is over),
    /// then the owner's standing, its descriptors at that quiet moment, and its memory.
    #[track_caller]
    fn after(&mut self, dir: &TestDir, case: &str) {
        self.probe(dir, case);
        // Still quiet: the request in `check_in_charge` is over when it returns.
        self.check_in_charge(dir, case, &[]);
        self.check_fds(case, "after a probe session that followed it");
        self.check_memory(case);
    }

    /// A real newcomer `next` takes over: it inherits `web` and is ready; the owner is told,
    /// exits cleanly, and `next` serves.
    fn hand_over(mut self, dir: &TestDir) -> Peer {
        let listen = format!("web=tcp:{}", self.addr);
        let mut next = Peer::start(dir.path(), &["--id", "next", "--listen", &listen, "--serve"]);
        let inherited = inherited_ids(&next.wait_for("inherited"));
        if !inherited.iter().any(|id| id == "web") {
            next.fail(&format!("the real newcomer inherited {inherited:?}, without web"));
        }
        next.wait_for("ready");
        self.peer.wait_for("upgrade_complete");
        self.peer.expect_clean_exit();
        assert_eq!(dir.owner(), "next");
        assert_hello(http_get(&self.addr, "/"), "next");
        next
    }
}

/// Receives the descriptor list and every descriptor (closing each at once); returns the ids.
fn receive_all(stream: &UnixStream) -> Vec<String> {
    let body = read_frame(stream);
    let entries: Vec<Value> = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("the list frame is not a JSON array ({e}): {:?}", String::from_utf8_lossy(&body))
    });
    entries
        .iter()
        .map(|entry| {
            drop(recv_fd(stream));
            entry["id"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// Reads until the owner closes the connection; returns what came before. A close that left
/// our bytes unread on the owner's side reaches us as `ECONNRESET`: a close as well.
fn read_until_closed(stream: &UnixStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("waiting (at most {TIMEOUT:?}) for the owner to close the connection: {e}"),
        }
        assert!(got.len() <= 1 << 20, "the owner sent more than 1 MiB: {:?}", &got[..64]);
    }
}

/// Waits (at most [`TIMEOUT`]) for the other end of `fd` to hang up, without reading.
fn wait_hangup(fd: BorrowedFd<'_>, what: &str) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let timeout = Timespec { tv_sec: TIMEOUT.as_secs() as i64, tv_nsec: 0 };
    loop {
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::RDHUP)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => panic!("{what}: no hang-up within {TIMEOUT:?}"),
            Ok(_) => {
                let hung_up = PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR;
                assert!(fds[0].revents().intersects(hung_up), "{what}: {:?}", fds[0].revents());
                return;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("{what}: poll: {e}"),
        }
    }
}

/// Sends `payload` with `fds` attached, as one message.
fn send_fds(stream: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> rustix::io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)), "at most 4 descriptors");
    rustix::net::sendmsg(stream, &[io::IoSlice::new(payload)], &mut control, SendFlags::NOSIGNAL)
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// `0x42` followed by `body` as a frame: a version 1 handshake start with a chosen request.
fn v1(body: &[u8]) -> Vec<u8> {
    [&[0x42][..], &frame(body)].concat()
}

#[test]
fn connections_that_leave_or_stay_silent_leave_the_owner_in_charge() {
    let dir = TestDir::new();
    let mut owner = Owner::start(&dir, "500", &[]);

    let case = "close at once";
    drop(connect_owner(dir.path()));
    owner.after(&dir, case);

    let case = "read the list's length, then vanish";
    let mut stream = connect_owner(dir.path());
    stream.read_exact(&mut [0u8; 4]).unwrap();
    drop(stream);
    owner.after(&dir, case);

    let case = "take the descriptors and vanish";
    let stream = connect_owner(dir.path());
    assert_eq!(receive_all(&stream), ["web"]);
    drop(stream);
    owner.after(&dir, case);

    let case = "take the descriptors, then end the stream";
    let stream = connect_owner(dir.path());
    assert_eq!(receive_all(&stream), ["web"]);
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&stream), b"", "{case}");
    owner.check_fds(case, "once it closed the connection");
    drop(stream);
    owner.after(&dir, case);

    let case = "end the stream at once, never reading";
    let stream = connect_owner(dir.path());
    stream.shutdown(Shutdown::Write).unwrap();
    wait_hangup(stream.as_fd(), case);
    owner.check_fds(case, "once it closed the connection");
    drop(stream);
    owner.after(&dir, case);

    // The silent ones: only the owner's upgrade timeout ends them.
    let case = "take the descriptors, then stay silent";
    let stream = connect_owner(dir.path());
    assert_eq!(receive_all(&stream), ["web"]);
    assert_eq!(read_until_closed(&stream), b"", "{case}");
    owner.check_fds(case, "once it closed the connection");
    drop(stream);
    owner.after(&dir, case);

    let case = "stay silent, never reading";
    let stream = connect_owner(dir.path());
    wait_hangup(stream.as_fd(), case);
    owner.check_fds(case, "once it closed the connection");
    drop(stream);
    owner.after(&dir, case);

    // A silent one holds the session while a real newcomer queues behind it: the newcomer is
    // served once the silent one is dropped, and takes over.
    let silent = connect_owner(dir.path());
    assert_eq!(receive_all(&silent), ["web"]);
    let next = owner.hand_over(&dir);
    assert_eq!(read_until_closed(&silent), b"", "the silent connection got more than the list");
    let expected: BTreeSet<String> = ["next.sock", "pid"].map(String::from).into();
    if dir.entries() != expected {
        next.fail(&format!("the directory holds {:?}", dir.entries()));
    }
}

#[test]
fn malformed_handshakes_leave_the_owner_in_charge() {
    let dir = TestDir::new();
    let mut owner = Owner::start(&dir, "500", &[]);

    // What the hostile peer sends once it received everything, and whether it then ends its
    // side of the stream (otherwise it waits for the owner to close).
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("HTTP instead of the ready byte", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        ("ready byte 0x00", vec![0x00], false),
        ("ready byte 0x2B", vec![0x2B], false),
        ("ready byte 0x41", vec![0x41], false),
        ("ready byte 0xFF", vec![0xFF], false),
        ("v1 start, then end of stream", vec![0x42], true),
        ("huge length", vec![0x42, 0x7f, 0xff, 0xff, 0xff], false),
        ("negative length -1", vec![0x42, 0xff, 0xff, 0xff, 0xff], false),
        ("negative length i32::MIN", vec![0x42, 0x80, 0, 0, 0], false),
        ("1 MiB length, a few bytes, end of stream", vec![0x42, 0, 0x10, 0, 0, b'{', b' '], true),
        ("truncated length, then end of stream", vec![0x42, 0, 0], true),
        ("truncated length, then silence", vec![0x42, 0, 0], false),
        ("truncated body, then end of stream", [&[0x42, 0, 0, 0, 14][..], b"{\"vers"].concat(), true),
        ("empty frame", v1(b""), false),
        ("invalid JSON", v1(b"{\"version\":\n"), false),
        ("not text", v1(b"\xff\xfe\x00\x01garbage\n"), false),
        ("JSON array [1]", v1(b"[1]\n"), false),
        ("JSON null", v1(b"null\n"), false),
        ("version as a string", v1(b"{\"version\":\"1\"}\n"), false),
        ("empty object", v1(b"{}\n"), false),
        ("unknown version 2", v1(b"{\"version\":2}\n"), false),
        ("negative version", v1(b"{\"version\":-1}\n"), false),
        ("fractional version", v1(b"{\"version\":1.5}\n"), false),
        ("version 2^32+1 (1 if truncated to 32 bits)", v1(b"{\"version\":4294967297}\n"), false),
        (
            "version prefix over 32 bits",
            v1(&[" \t".repeat(9).as_bytes(), b"{\"version\":1}\n"].concat()),
            false,
        ),
    ];
    for (case, bytes, end_stream) in cases {
        let stream = connect_owner(dir.path());
        assert_eq!(receive_all(&stream), ["web"], "{case}");
        (&stream).write_all(&bytes).unwrap_or_else(|e| owner.peer.fail(&format!("{case}: writing: {e}")));
        if end_stream {
            stream.shutdown(Shutdown::Write).unwrap();
        }
        let answer = read_until_closed(&stream);
        if !answer.is_empty() {
            owner.peer.fail(&format!("{case}: the owner answered {:?}", String::from_utf8_lossy(&answer)));
        }
        owner.check_fds(case, "once it closed the connection");
        drop(stream);
        owner.after(&dir, case);
    }
    owner.hand_over(&dir);
}

#[test]
fn descriptors_sent_to_the_owner_are_not_kept() {
    let dir = TestDir::new();
    let mut owner = Owner::start(&dir, "500", &[]);

    // Each case sends the write end of a pipe and one end of a socket pair, keeping the other
    // ends: once the owner closed the connection, both must be closed everywhere, which the
    // kept ends see as a hang-up.
    type Send = fn(&UnixStream, BorrowedFd<'_>, BorrowedFd<'_>);
    let cases: Vec<(&str, bool, Send)> = vec![
        ("a pipe instead of the ready byte", true, |s, w, _| {
            send_fds(s, b"x", &[w]).unwrap();
        }),
        ("a socket instead of the ready byte", true, |s, _, a| {
            send_fds(s, b"y", &[a]).unwrap();
        }),
        ("several descriptors in one message", true, |s, w, a| {
            send_fds(s, b"\x07several", &[w, a, w]).unwrap();
        }),
        ("descriptors on a version 1 handshake start", true, |s, w, a| {
            send_fds(s, &v1(b"{\"version\":2}\n"), &[w, a]).unwrap();
        }),
        ("descriptors on a truncated handshake", true, |s, w, a| {
            send_fds(s, &[0x42, 0, 0], &[w, a]).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        }),
        ("descriptors before the list is read", false, |s, w, a| {
            send_fds(s, b"\x00", &[w, a]).unwrap();
        }),
        ("a flood of descriptor messages", true, |s, w, a| {
            // The owner closes after the first byte; later sends may find it gone.
            for _ in 0..64 {
                if send_fds(s, b"z", &[w, a]).is_err() {
                    break;
                }
            }
        }),
    ];
    for (case, read_list_first, send) in cases {
        let (pipe_read, pipe_write) = pipe();
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(TIMEOUT)).unwrap();

        let stream = connect_owner(dir.path());
        if read_list_first {
            assert_eq!(receive_all(&stream), ["web"], "{case}");
        }
        send(&stream, pipe_write.as_fd(), theirs.as_fd());
        drop((pipe_write, theirs));
        if read_list_first {
            let answer = read_until_closed(&stream);
            if !answer.is_empty() {
                owner
                    .peer
                    .fail(&format!("{case}: the owner answered {:?}", String::from_utf8_lossy(&answer)));
            }
        } else {
            wait_hangup(stream.as_fd(), case);
        }
        owner.check_fds(case, "once it closed the connection");
        drop(stream);

        wait_hangup(pipe_read.as_fd(), &format!("{case}: the pipe's write end is still open somewhere"));
        match (&ours).read(&mut [0u8; 1]) {
            Ok(0) => {}
            other => {
                owner.peer.fail(&format!("{case}: the socket sent to the owner is still open: {other:?}"))
            }
        }
        owner.after(&dir, case);
    }
    owner.hand_over(&dir);
}

#[test]
fn a_writer_that_never_reads_is_dropped_at_the_upgrade_timeout() {
    // Enough listeners that the list and the descriptor messages do not fit in the socket
    // buffers: the owner's sends block until someone reads. A descriptor message takes at
    // least a few hundred bytes of send buffer.
    let wmem: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992);
    let many = (wmem / 256).max(800);
    let total = many + 1;
    let dir = TestDir::new();
    let mut owner = Owner::start(&dir, "500", &["--many", &many.to_string()]);

    let stream = connect_owner(dir.path());
    stream.set_nonblocking(true).unwrap();
    // Pseudo-random bytes (xorshift), the first never a ready byte, until our own sends block
    // too: the owner reads none of them while it is stuck sending.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = [0u8; 4096];
    let mut blocked = false;
    for round in 0..100_000 {
        for byte in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        if round == 0 && matches!(chunk[0], 0x2A | 0x42) {
            chunk[0] = 0x00;
        }
        match (&stream).write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => owner.peer.fail(&format!("writing random bytes: {e}")),
        }
    }
    assert!(blocked, "400 MB were written without ever blocking");
    // The upgrade thread is stuck sending; the application is not.
    assert_hello(http_get(&owner.addr, "/"), OWNER);
    wait_hangup(stream.as_fd(), "the owner closing a connection that never reads");
    let case = "a writer that never reads";
    owner.check_fds(case, "once it closed the connection");

    // What arrived before the owner gave up: it must have stopped partway, else its sends never
    // blocked and this test did not test what it says.
    stream.set_nonblocking(false).unwrap();
    let received = count_received_fds(&stream);
    assert!(received < total, "all {total} descriptors fitted in the socket buffers; raise --many");
    drop(stream);

    owner.after(&dir, case);
    owner.hand_over(&dir);
}

/// Reads everything left on `stream` (descriptors closed at once) until the end of the stream
/// or a reset; returns how many descriptors came.
fn count_received_fds(stream: &UnixStream) -> usize {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut count = 0;
    let mut buf = vec![0u8; 64 << 10];
    for _ in 0..1_000_000 {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        match rustix::net::recvmsg(
            stream,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) if msg.bytes == 0 => return count,
            Ok(_) => {
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(fds) = message {
                        count += fds.count();
                    }
                }
            }
            Err(rustix::io::Errno::CONNRESET) => return count,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("reading what the owner sent: {e}"),
        }
    }
    panic!("the owner's stream never ended")
}

#[test]
fn hostile_connections_during_a_handoff_wait_and_do_not_break_it() {
    let dir = TestDir::new();
    let owner = Owner::start(&dir, "30000", &[]);
    let addr = owner.addr.clone();
    let listen = format!("web=tcp:{addr}");
    // The delay keeps the newcomer in its session with the owner while the hostile connections
    // arrive; nothing waits on it.
    let mut new =
        Peer::start(dir.path(), &["--id", "new", "--listen", &listen, "--serve", "--ready-delay-ms", "2000"]);
    assert_eq!(inherited_ids(&new.wait_for("inherited")), ["web"]);

    let garbage = connect_owner(dir.path());
    (&garbage).write_all(b"\x00GET / HTTP/1.1\r\n\r\n").unwrap();
    let (pipe_read, pipe_write) = pipe();
    let with_fd = connect_owner(dir.path());
    send_fds(&with_fd, b"\x07", &[pipe_write.as_fd()]).unwrap();
    drop(pipe_write);
    let silent = connect_owner(dir.path());
    let handshake = connect_owner(dir.path());
    (&handshake).write_all(&v1(b"{\"version\":1}\n")).unwrap();
    drop(connect_owner(dir.path()));
    if new.has_pending("ready") {
        new.fail("the newcomer's ready delay ran out before the hostile connections were made");
    }

    new.wait_for("ready");
    let mut owner = owner.peer;
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
    assert_eq!(dir.owner(), "new");
    assert_hello(http_get(&addr, "/"), "new");

    // The queued connections were never served by an owner that stepped down: closed, with
    // nothing sent, and the descriptor sent in the backlog closed with them.
    for (name, stream) in [("garbage", &garbage), ("with a descriptor", &with_fd), ("silent", &silent)] {
        let got = read_until_closed(stream);
        if !got.is_empty() {
            new.fail(&format!("the queued {name} connection received {} bytes", got.len()));
        }
    }
    let got = read_until_closed(&handshake);
    if !got.is_empty() {
        new.fail(&format!("the queued handshake connection received {:?}", String::from_utf8_lossy(&got)));
    }
    wait_hangup(pipe_read.as_fd(), "the pipe sent in the backlog is still open somewhere");

    // The group goes on: the new owner hands over in turn.
    let mut next = Peer::start(dir.path(), &["--id", "next", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"]);
    next.wait_for("ready");
    new.wait_for("upgrade_complete");
    new.expect_clean_exit();
    assert_eq!(dir.owner(), "next");
}

#[test]
fn a_hostile_connection_queued_behind_a_failed_handoff_is_served_after_it() {
    let dir = TestDir::new();
    let mut owner = Owner::start(&dir, "30000", &[]);
    let listen = format!("web=tcp:{}", owner.addr);
    let mut stuck = Peer::start(dir.path(), &["--id", "stuck", "--listen", &listen, "--no-ready"]);
    assert_eq!(inherited_ids(&stuck.wait_for("inherited")), ["web"]);

    // Queued while `stuck` holds the session.
    let queued = connect_owner(dir.path());
    stuck.kill();
    // Served once the owner saw `stuck` go: the whole list, then it misbehaves.
    assert_eq!(receive_all(&queued), ["web"], "the queued connection was not served after the failed one");
    (&queued).write_all(b"\x07").unwrap();
    assert_eq!(read_until_closed(&queued), b"");
    let case = "queued behind a killed newcomer";
    owner.check_fds(case, "once it closed the queued connection");
    drop(queued);
    owner.probe(&dir, case);
    // The killed newcomer's socket stays until the next owner sweeps it.
    owner.check_in_charge(&dir, case, &["stuck.sock"]);
    owner.check_fds(case, "after a probe session that followed it");
    let next = owner.hand_over(&dir);
    let expected: BTreeSet<String> = ["next.sock", "pid"].map(String::from).into();
    if dir.entries() != expected {
        next.fail(&format!("the directory holds {:?}", dir.entries()));
    }
}
