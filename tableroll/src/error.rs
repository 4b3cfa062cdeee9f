//! The crate's one error type: an opaque [`Error`] with a [`kind`](Error::kind), what was
//! being done, the path or id involved, and the underlying error kept intact.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::descriptor::Kind;

/// A specialized `Result` for tableroll operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tableroll.
///
/// What happened is [`kind`](Error::kind); what was being done, to which path and under which
/// id, are [`operation`](Error::operation), [`path`](Error::path) and [`id`](Error::id); a
/// system call's error is kept intact ([`io_error`](Error::io_error),
/// [`raw_os_error`](Error::raw_os_error), and [`source`](std::error::Error::source)). The
/// message says all of it.
pub struct Error {
    inner: Box<Inner>,
}

/// What went wrong, in categories stable enough to match on. More may be added.
///
/// The first three are the ownership states of the Go original: they are returned when the
/// descriptor store may not be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A handoff to a newcomer is in progress: the store may not change until it ends.
    UpgradeInProgress,
    /// A newcomer took over: descriptors may be removed, not added.
    UpgradeCompleted,
    /// [`Upgrader::stop`](crate::Upgrader::stop) was called, or the upgrader was dropped, or
    /// its `ready` failed.
    Stopped,
    /// A bounded wait ran out.
    Timeout,
    /// An id cannot name a process or socket in the coordination directory.
    InvalidId,
    /// A socket path does not fit `sockaddr_un.sun_path` (107 bytes on Linux).
    PathTooLong,
    /// Another live process is using this process's id.
    IdInUse,
    /// A system call failed.
    Io,
    /// The other process broke the wire protocol, or the owner file holds something that is
    /// not an id.
    Protocol,
    /// The peer on the upgrade socket runs as a user the peer policy does not allow.
    PeerRefused,
    /// The current owner is alive but did not accept this process's ready handshake.
    OwnerRefused,
    /// A descriptor exists under this id, but of another kind than asked for.
    KindMismatch,
    /// Creating a descriptor for the store failed (binding, connecting, opening, or the
    /// caller's closure).
    Create,
    /// No descriptor is stored under this id.
    UnknownId,
}

struct Inner {
    kind: ErrorKind,
    /// What was being done (a system call's purpose, a timed-out wait).
    operation: Option<&'static str>,
    path: Option<PathBuf>,
    /// The descriptor id, or the process id of an invalid or taken id.
    id: Option<String>,
    /// The rest of the message.
    detail: Option<String>,
    source: Option<Source>,
}

enum Source {
    Io(io::Error),
    Tableroll(Error),
}

impl Error {
    fn new(kind: ErrorKind) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                operation: None,
                path: None,
                id: None,
                detail: None,
                source: None,
            }),
        }
    }

    fn with(mut self, set: impl FnOnce(&mut Inner)) -> Error {
        set(&mut self.inner);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// What was being done, for a failed system call or a wait that timed out.
    pub fn operation(&self) -> Option<&str> {
        self.inner.operation
    }

    /// The file, socket or directory involved, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The descriptor id (for the store's errors) or the process id (for an invalid id or
    /// one in use) involved, if any.
    pub fn id(&self) -> Option<&str> {
        self.inner.id.as_deref()
    }

    /// The underlying I/O error, for [`ErrorKind::Io`] and [`ErrorKind::Create`].
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.inner.source {
            Some(Source::Io(e)) => Some(e),
            _ => None,
        }
    }

    /// The OS error number of the underlying I/O error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    pub(crate) fn upgrade_in_progress() -> Error {
        Error::new(ErrorKind::UpgradeInProgress)
    }

    pub(crate) fn upgrade_completed() -> Error {
        Error::new(ErrorKind::UpgradeCompleted)
    }

    pub(crate) fn stopped() -> Error {
        Error::new(ErrorKind::Stopped)
    }

    pub(crate) fn timeout(operation: &'static str) -> Error {
        Error::new(ErrorKind::Timeout).with(|e| e.operation = Some(operation))
    }

    pub(crate) fn invalid_id(id: &[u8], reason: &'static str) -> Error {
        let id = crate::id::text(id);
        Error::new(ErrorKind::InvalidId).with(|e| {
            e.id = Some(id);
            e.detail = Some(reason.into());
        })
    }

    pub(crate) fn path_too_long(path: PathBuf, len: usize, max: usize) -> Error {
        let detail = format!("{len} bytes long, more than the {max} a Unix socket address holds");
        Error::new(ErrorKind::PathTooLong).with(|e| {
            e.path = Some(path);
            e.detail = Some(detail);
        })
    }

    pub(crate) fn id_in_use(id: &str, path: &Path) -> Error {
        Error::new(ErrorKind::IdInUse).with(|e| {
            e.id = Some(id.into());
            e.path = Some(path.into());
        })
    }

    pub(crate) fn io(operation: &'static str, source: io::Error) -> Error {
        Error::new(ErrorKind::Io).with(|e| {
            e.operation = Some(operation);
            e.source = Some(Source::Io(source));
        })
    }

    pub(crate) fn io_at(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::io(operation, source).with(|e| e.path = Some(path.into()))
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Error {
        let detail = detail.into();
        Error::new(ErrorKind::Protocol).with(|e| e.detail = Some(detail))
    }

    pub(crate) fn peer_refused(pid: i32, uid: u32) -> Error {
        let detail = format!("peer pid {pid} runs as uid {uid}, which the peer policy refuses");
        Error::new(ErrorKind::PeerRefused).with(|e| e.detail = Some(detail))
    }

    pub(crate) fn owner_refused(cause: Error) -> Error {
        Error::new(ErrorKind::OwnerRefused).with(|e| e.source = Some(Source::Tableroll(cause)))
    }

    pub(crate) fn kind_mismatch(id: &str, expected: &Kind, found: &Kind) -> Error {
        let detail = format!("is a {found}, not a {expected}");
        Error::new(ErrorKind::KindMismatch).with(|e| {
            e.id = Some(id.into());
            e.detail = Some(detail);
        })
    }

    pub(crate) fn create(id: &str, source: io::Error) -> Error {
        Error::new(ErrorKind::Create).with(|e| {
            e.id = Some(id.into());
            e.source = Some(Source::Io(source));
        })
    }

    pub(crate) fn unknown_id(id: &str) -> Error {
        Error::new(ErrorKind::UnknownId).with(|e| e.id = Some(id.into()))
    }

    /// Prefixes a protocol error's detail with what was being done; other errors (a timeout,
    /// a stop, an I/O error) are returned as they are.
    pub(crate) fn in_context(mut self, context: impl FnOnce() -> String) -> Error {
        if self.inner.kind == ErrorKind::Protocol {
            let detail = self.inner.detail.take().unwrap_or_default();
            self.inner.detail = Some(format!("{}: {detail}", context()));
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let detail = i.detail.as_deref().unwrap_or_default();
        let id = i.id.as_deref().unwrap_or_default();
        let path = i.path.as_deref().map(Path::display);
        match i.kind {
            ErrorKind::UpgradeInProgress => f.write_str("an upgrade is in progress"),
            ErrorKind::UpgradeCompleted => f.write_str("an upgrade has completed"),
            ErrorKind::Stopped => f.write_str("the upgrader is stopped"),
            ErrorKind::Timeout => write!(f, "timed out while {}", i.operation.unwrap_or("waiting")),
            ErrorKind::InvalidId => write!(f, "invalid id {id:?}: {detail}"),
            ErrorKind::PathTooLong => match path {
                Some(path) => write!(f, "socket path {path} is {detail}"),
                None => write!(f, "a socket path is {detail}"),
            },
            ErrorKind::IdInUse => match path {
                Some(path) => write!(
                    f,
                    "id {id:?} is in use by a live process (its upgrade socket {path} is listening)"
                ),
                None => write!(f, "id {id:?} is in use by a live process"),
            },
            ErrorKind::Io => {
                f.write_str(i.operation.unwrap_or("a system call failed"))?;
                if let Some(path) = path {
                    write!(f, " {path}")?;
                }
                match &i.source {
                    Some(Source::Io(e)) => write!(f, ": {e}"),
                    _ => Ok(()),
                }
            }
            ErrorKind::Protocol => write!(f, "protocol error: {detail}"),
            ErrorKind::PeerRefused => f.write_str(detail),
            ErrorKind::OwnerRefused => match &i.source {
                Some(Source::Tableroll(cause)) => write!(f, "the current owner refused the handoff: {cause}"),
                _ => f.write_str("the current owner refused the handoff"),
            },
            ErrorKind::KindMismatch => write!(f, "descriptor {id:?} {detail}"),
            ErrorKind::Create => match &i.source {
                Some(Source::Io(e)) => write!(f, "creating descriptor {id:?}: {e}"),
                _ => write!(f, "creating descriptor {id:?} failed"),
            },
            ErrorKind::UnknownId => write!(f, "no descriptor with id {id:?}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind);
        if let Some(operation) = i.operation {
            d.field("operation", &operation);
        }
        if let Some(path) = &i.path {
            d.field("path", path);
        }
        if let Some(id) = &i.id {
            d.field("id", id);
        }
        if let Some(detail) = &i.detail {
            d.field("detail", detail);
        }
        match &i.source {
            Some(Source::Io(e)) => d.field("source", e),
            Some(Source::Tableroll(e)) => d.field("source", e),
            None => &mut d,
        };
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.source {
            // The message already shows it: a chain printer would repeat it. Callers that
            // want the OS error have `io_error` and `raw_os_error`.
            Some(Source::Io(_)) => None,
            Some(Source::Tableroll(e)) => Some(e),
            None => None,
        }
    }
}

/// An [`io::Error`] with the whole message (the operation, the path, the cause), of the
/// matching [`io::ErrorKind`]. The tableroll error stays inside: `get_ref()` and
/// `downcast_ref::<tableroll::Error>()` give it back, with its `raw_os_error()`.
impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind() {
            ErrorKind::Io | ErrorKind::Create => err.io_error().map_or(io::ErrorKind::Other, io::Error::kind),
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::InvalidId | ErrorKind::PathTooLong => io::ErrorKind::InvalidInput,
            ErrorKind::IdInUse => io::ErrorKind::AddrInUse,
            ErrorKind::PeerRefused => io::ErrorKind::PermissionDenied,
            ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::UnknownId => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_done_and_keep_the_cause() {
        let cause = io::Error::from_raw_os_error(2);
        let e = Error::io_at("opening the owner file", "/run/app/pid", cause);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.path(), Some(Path::new("/run/app/pid")));
        assert_eq!(e.raw_os_error(), Some(2));
        let message = e.to_string();
        assert!(message.starts_with("opening the owner file /run/app/pid: "), "{message}");
        assert_eq!(message.matches("os error 2").count(), 1, "the cause once: {message}");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert!(io.to_string().contains("opening the owner file"), "{io}");
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<Error>()).expect("the tableroll error");
        assert_eq!(inner.raw_os_error(), Some(2));
    }

    #[test]
    fn a_descriptor_id_has_its_own_place() {
        let e = Error::create("web", io::Error::from(io::ErrorKind::AddrInUse));
        assert_eq!((e.kind(), e.id(), e.path()), (ErrorKind::Create, Some("web"), None));
        let e = Error::unknown_id("web");
        assert_eq!(e.to_string(), "no descriptor with id \"web\"");
    }

    #[test]
    fn a_refusal_keeps_its_cause() {
        let e = Error::owner_refused(Error::timeout("waiting for the owner to step down"));
        assert_eq!(e.kind(), ErrorKind::OwnerRefused);
        let cause = std::error::Error::source(&e).and_then(|c| c.downcast_ref::<Error>()).unwrap();
        assert_eq!(cause.kind(), ErrorKind::Timeout);
        assert!(e.to_string().ends_with("timed out while waiting for the owner to step down"), "{e}");
        let protocol = Error::protocol("bad frame").in_context(|| "reading the list".into());
        assert_eq!(protocol.to_string(), "protocol error: reading the list: bad frame");
    }

    #[test]
    fn errors_are_small_and_thread_safe() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
