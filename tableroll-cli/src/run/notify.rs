//! The notification socket the program reports to, as it would report to systemd
//! (`sd_notify(3)`): a datagram socket in a private temporary directory.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

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

/// The socket, and the directory that keeps other users away from it.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    /// Binds a new socket in a new directory of mode 0700 under `$TMPDIR` or `/tmp`.
    pub fn bind() -> io::Result<NotifySocket> {
        let dir = tempfile::Builder::new().prefix("tableroll-notify-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
        socket.set_nonblocking(true)?;
        Ok(NotifySocket { socket, path, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Readable when a notification is waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Every notification waiting, oldest first.
    pub fn receive(&self) -> io::Result<Vec<Notification>> {
        let mut received = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => received.push(Notification::parse(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(received),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
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
    fn receives_what_is_sent_to_its_path() {
        let socket = NotifySocket::bind().unwrap();
        assert_eq!(socket.receive().unwrap(), vec![]);
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to(b"STATUS=starting", socket.path()).unwrap();
        sender.send_to(b"READY=1", socket.path()).unwrap();
        let got = socket.receive().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].status.as_deref(), Some("starting"));
        assert!(got[1].ready);
        let mode = std::fs::metadata(socket.path().parent().unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
