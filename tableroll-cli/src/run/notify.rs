//! The notification socket the program reports to, as it would report to systemd
//! (`sd_notify(3)`): a datagram socket with an abstract address (`@tableroll-notify-…`), which
//! the kernel removes with the last descriptor, so even a supervisor killed by SIGKILL leaves
//! no file behind. An abstract address has no permissions: a datagram is read only if its
//! sender runs as this user (or root), as the kernel vouches (`SO_PASSCRED`).

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketAddrUnix, SocketFlags,
    SocketType,
};

/// How many random names are tried before binding gives up (a taken name is a coincidence).
const BIND_ATTEMPTS: usize = 8;

/// One datagram from the program, its `KEY=VALUE` lines read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notification {
    pub ready: bool,
    pub stopping: bool,
    pub reloading: bool,
    pub status: Option<String>,
}

impl Notification {
    pub fn parse(datagram: &[u8]) -> Notification {
        let mut parsed = Notification::default();
        for line in String::from_utf8_lossy(datagram).lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => parsed.ready = true,
                Some(("STOPPING", "1")) => parsed.stopping = true,
                Some(("RELOADING", "1")) => parsed.reloading = true,
                Some(("STATUS", status)) => parsed.status = Some(status.to_string()),
                _ => {}
            }
        }
        parsed
    }
}

/// The socket, and its address as `NOTIFY_SOCKET` spells it (`@` and the abstract name).
pub struct NotifySocket {
    socket: OwnedFd,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a new socket to a fresh abstract name, `@tableroll-notify-<pid>-<random>`.
    pub fn bind() -> io::Result<NotifySocket> {
        let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
        let socket = rustix::net::socket_with(AddressFamily::UNIX, SocketType::DGRAM, flags, None)?;
        rustix::net::sockopt::set_socket_passcred(&socket, true)?;
        let mut last = io::Error::other("no name tried");
        for _ in 0..BIND_ATTEMPTS {
            let name = format!("tableroll-notify-{}-{:016x}", std::process::id(), random());
            match rustix::net::bind(&socket, &SocketAddrUnix::new_abstract_name(name.as_bytes())?) {
                Ok(()) => return Ok(NotifySocket { socket, path: PathBuf::from(format!("@{name}")) }),
                Err(rustix::io::Errno::ADDRINUSE) => last = io::Error::from(rustix::io::Errno::ADDRINUSE),
                Err(e) => return Err(io::Error::new(e.kind(), format!("binding @{name}: {e}"))),
            }
        }
        Err(last)
    }

    /// The address for `NOTIFY_SOCKET`: `@` and the abstract name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Readable when a notification is waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Every notification waiting from a sender allowed to send, oldest first.
    pub fn receive(&self) -> io::Result<Vec<Notification>> {
        let mut received = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            match rustix::net::recvmsg(&self.socket, &mut iov, &mut control, RecvFlags::empty()) {
                Ok(msg) => {
                    let allowed = control.drain().any(|message| match message {
                        RecvAncillaryMessage::ScmCredentials(sender) => may_notify(sender.uid),
                        _ => false,
                    });
                    if allowed {
                        received.push(Notification::parse(&buf[..msg.bytes.min(buf.len())]));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(received),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether a process running as `uid` may report for the program: this user or root.
fn may_notify(uid: rustix::process::Uid) -> bool {
    uid == rustix::process::geteuid() || uid.is_root()
}

/// 64 random bits, or a mix of the pid and the clock if the kernel gives none.
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(bytes),
        _ => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            u64::from(std::process::id()).rotate_left(32) ^ nanos.as_nanos() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_it_acts_on() {
        let n = Notification::parse(b"READY=1\nSTATUS=serving on 2 sockets\nMAINPID=7\nX=Y");
        assert_eq!(
            n,
            Notification { ready: true, status: Some("serving on 2 sockets".into()), ..Default::default() }
        );
        assert_eq!(Notification::parse(b"READY=0"), Notification::default());
        assert!(Notification::parse(b"STOPPING=1").stopping);
        assert_eq!(Notification::parse(&[0xff, b'\n']), Notification::default());
    }

    #[test]
    fn receives_what_is_sent_to_its_abstract_address() {
        let socket = NotifySocket::bind().unwrap();
        let address = socket.path().to_str().unwrap().to_owned();
        assert!(address.starts_with("@tableroll-notify-"), "{address}");
        assert_eq!(socket.receive().unwrap(), vec![]);
        // As a program sends it: through sd_notify's reading of NOTIFY_SOCKET.
        tableroll::systemd::notify_to(address.as_ref(), "STATUS=starting").unwrap();
        tableroll::systemd::notify_to(address.as_ref(), "READY=1").unwrap();
        let got = socket.receive().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].status.as_deref(), Some("starting"));
        assert!(got[1].ready);
    }

    #[test]
    fn the_address_goes_with_the_socket() {
        let socket = NotifySocket::bind().unwrap();
        let address = socket.path().to_owned();
        drop(socket);
        // A child that another test is starting holds a copy of every descriptor from its fork
        // to its exec, and the name is bound until the last copy closes. Nothing signals that
        // moment, so the name is tried until it is free, within a bound far past any exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tableroll::systemd::notify_to(address.as_os_str(), "READY=1").is_ok() {
            assert!(std::time::Instant::now() < deadline, "{address:?} is still bound");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn only_this_user_or_root_may_notify() {
        assert!(may_notify(rustix::process::geteuid()));
        assert!(may_notify(rustix::process::Uid::ROOT));
        let other = rustix::process::Uid::from_raw(rustix::process::geteuid().as_raw().wrapping_add(1));
        assert!(other.is_root() || !may_notify(other));
    }
}
