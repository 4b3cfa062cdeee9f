//! The wire protocol by hand (PROTOCOL.md), for peers the tests simulate with raw sockets.

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use serde_json::Value;

use tableroll_testkit::TIMEOUT;

/// The largest frame the raw helpers accept.
const MAX_FRAME: usize = 1 << 20;

/// The coordination lock, held until drop.
pub struct Lock(fs::File);

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlock explicitly: closing is not enough while a child that another test thread is
        // spawning still has a copy of the descriptor (between its fork and its exec).
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// Takes the coordination lock without waiting; panics if another process holds it.
pub fn take_lock(dir: &Path) -> Lock {
    try_lock(dir).expect("taking the coordination lock (another process holds it?)")
}

/// Opens (creating) the owner file, as every member of a group does before locking it.
fn open_owner_file(dir: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("pid"))
        .expect("opening the owner file")
}

/// Takes the coordination lock if it is free; `None` if another process holds it.
pub fn try_lock(dir: &Path) -> Option<Lock> {
    let file = open_owner_file(dir);
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Some(Lock(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => None,
        Err(e) => panic!("trying the coordination lock: {e}"),
    }
}

/// Takes the coordination lock, waiting while another process holds it; panics after
/// `timeout` (the waiting thread is then left blocked until the lock comes or the test exits).
pub fn wait_lock(dir: &Path, timeout: std::time::Duration) -> Lock {
    let file = open_owner_file(dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive);
        let _ = tx.send(locked.map(|()| file));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(file)) => Lock(file),
        Ok(Err(e)) => panic!("taking the coordination lock: {e}"),
        Err(_) => panic!("the coordination lock was not free within {timeout:?}"),
    }
}

/// Connects to the upgrade socket of the owner named in the owner file.
pub fn connect_owner(dir: &Path) -> UnixStream {
    let owner = fs::read_to_string(dir.join("pid")).expect("reading the owner file");
    assert!(!owner.is_empty(), "the owner file is empty");
    let stream = UnixStream::connect(dir.join(format!("{owner}.sock")))
        .unwrap_or_else(|e| panic!("connecting to the upgrade socket of {owner:?}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Reads one frame: a 4-byte big-endian length, then exactly that many bytes.
pub fn read_frame(mut stream: &UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("reading a frame length");
    let len = i32::from_be_bytes(len);
    assert!((0..=MAX_FRAME as i32).contains(&len), "frame length {len} out of bounds");
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).expect("reading a frame body");
    body
}

/// The bytes of a frame with `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Receives one descriptor message: exactly one descriptor, a non-empty payload.
pub fn recv_fd(stream: &UnixStream) -> (String, OwnedFd) {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut payload = vec![0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        stream,
        &mut [io::IoSliceMut::new(&mut payload)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg for a descriptor");
    assert!(!msg.flags.contains(ReturnFlags::CTRUNC), "control data truncated");
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    assert_eq!(fds.len(), 1, "a descriptor message must carry exactly one descriptor");
    assert!(msg.bytes > 0, "a descriptor message must have a payload");
    let payload = String::from_utf8_lossy(&payload[..msg.bytes]).into_owned();
    (payload, fds.pop().expect("one descriptor"))
}

/// Sends one descriptor message.
pub fn send_fd(stream: &UnixStream, payload: &str, fd: BorrowedFd<'_>) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(
        stream,
        &[io::IoSlice::new(payload.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .expect("sendmsg with a descriptor");
    assert_eq!(sent, payload.len());
}

/// A newcomer written by hand: holds the lock and a session with the owner, and has received
/// the descriptor list and every descriptor.
pub struct RawNewcomer {
    pub lock: Lock,
    pub stream: UnixStream,
    /// The list frame's body, with its version prefix.
    pub list_body: Vec<u8>,
    pub entries: Vec<Value>,
    pub fds: Vec<(String, OwnedFd)>,
}

impl RawNewcomer {
    /// Takes the lock, connects to the owner and receives everything it sends.
    pub fn join(dir: &Path) -> RawNewcomer {
        let lock = take_lock(dir);
        let stream = connect_owner(dir);
        let list_body = read_frame(&stream);
        let entries: Vec<Value> = serde_json::from_slice(&list_body).unwrap_or_else(|e| {
            panic!("the list frame is not a JSON array ({e}): {:?}", String::from_utf8_lossy(&list_body))
        });
        let fds = entries.iter().map(|_| recv_fd(&stream)).collect();
        RawNewcomer { lock, stream, list_body, entries, fds }
    }

    /// The received descriptor of the entry with `id`.
    pub fn fd(&self, id: &str) -> BorrowedFd<'_> {
        let i = self.entries.iter().position(|e| e["id"] == id).unwrap_or_else(|| panic!("no entry {id:?}"));
        self.fds[i].1.as_fd()
    }

    /// Ends the handoff as PROTOCOL.md's step 8 says: writes `id` to the owner file, releases
    /// the lock and closes the connection. The owner steps down once it sees this. A newcomer
    /// listens on its own upgrade socket from step 1; this one does from here on (the owner
    /// only needs it live once the file names it), and returns it with the descriptors.
    pub fn become_owner(self, dir: &Path, id: &str) -> (Vec<(String, OwnedFd)>, UnixListener) {
        let upgrade_socket =
            UnixListener::bind(dir.join(format!("{id}.sock"))).expect("binding the upgrade socket");
        fs::write(dir.join("pid"), id).expect("writing the owner file");
        drop(self.lock);
        drop(self.stream);
        (self.fds, upgrade_socket)
    }

    /// Reads until the owner closes the connection; returns what came before.
    pub fn read_to_eof(&self) -> Vec<u8> {
        let mut rest = Vec::new();
        (&self.stream).read_to_end(&mut rest).expect("reading until the owner closes the connection");
        rest
    }
}

/// Waits (at most [`TIMEOUT`]) until `fd` is readable, e.g. a listener with a connection.
pub fn wait_readable(fd: BorrowedFd<'_>) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let timeout = Timespec { tv_sec: TIMEOUT.as_secs() as i64, tv_nsec: 0 };
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    let n = poll(&mut fds, Some(&timeout)).expect("poll");
    assert_eq!(n, 1, "nothing readable within {TIMEOUT:?}");
}

/// An owner written by hand: its upgrade socket `<dir>/fake.sock`, named in the owner file.
pub struct FakeOwner {
    pub listener: std::os::unix::net::UnixListener,
}

impl FakeOwner {
    pub fn new(dir: &Path) -> FakeOwner {
        let listener =
            std::os::unix::net::UnixListener::bind(dir.join("fake.sock")).expect("binding fake.sock");
        fs::write(dir.join("pid"), "fake").expect("writing the owner file");
        FakeOwner { listener }
    }

    /// Accepts the newcomer's connection (waiting at most [`TIMEOUT`]).
    pub fn accept(&self) -> UnixStream {
        wait_readable(self.listener.as_fd());
        let (stream, _) = self.listener.accept().expect("accepting the newcomer");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream
    }
}
