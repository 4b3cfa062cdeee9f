//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// A specialized `Result` for tableroll operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tableroll.
///
/// The first three variants are the ownership states of the Go original: they are returned when
/// the descriptor store may not be changed. I/O errors keep the original [`io::Error`] intact
/// (so `raw_os_error()` works) along with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handoff to a newcomer is in progress: the store may not change until it ends.
    #[error("an upgrade is in progress")]
    UpgradeInProgress,
    /// A newcomer took over: descriptors may be removed, not added.
    #[error("an upgrade has completed")]
    UpgradeCompleted,
    /// [`Upgrader::stop`](crate::Upgrader::stop) was called, or the upgrader was dropped, or
    /// its `ready` failed.
    #[error("the upgrader is stopped")]
    Stopped,
    /// A bounded wait ran out.
    #[error("timed out while {operation}")]
    Timeout {
        /// What was being waited for.
        operation: &'static str,
    },
    /// An id cannot name a process or socket in the coordination directory.
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id as given (lossily decoded if it was not UTF-8).
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A socket path does not fit `sockaddr_un.sun_path` (107 bytes on Linux).
    #[error("socket path {path:?} is {len} bytes long, more than the {max} a Unix socket address holds")]
    PathTooLong {
        /// The path that was too long.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Another live process is using this process's id.
    #[error("id {id:?} is in use by a live process (its upgrade socket {path:?} is listening)")]
    IdInUse {
        /// The id.
        id: String,
        /// The upgrade socket that is alive.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{operation}{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or socket involved, if any.
        path: Option<PathBuf>,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The other process broke the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer on the upgrade socket runs as a user the peer policy does not allow.
    #[error("peer pid {pid} runs as uid {uid}, which the peer policy refuses")]
    PeerRefused {
        /// The peer's process id, as the kernel reported it (0: not visible from this PID
        /// namespace).
        pid: i32,
        /// The peer's user id.
        uid: u32,
    },
    /// The current owner is alive but did not accept this process's ready handshake.
    #[error("the current owner refused the handoff: {0}")]
    OwnerRefused(String),
    /// A descriptor exists under this id, but of another kind than asked for.
    #[error("descriptor {id:?} is a {found}, not a {expected}")]
    KindMismatch {
        /// The store id.
        id: String,
        /// What the caller asked for.
        expected: crate::Kind,
        /// What the store holds.
        found: crate::Kind,
    },
    /// Creating a descriptor for the store failed (binding, connecting, opening, or the
    /// caller's closure).
    #[error("creating descriptor {id:?}: {source}")]
    Create {
        /// The store id.
        id: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No descriptor is stored under this id.
    #[error("no descriptor with id {0:?}")]
    UnknownId(String),
}

impl Error {
    pub(crate) fn io(operation: &'static str, source: io::Error) -> Self {
        Error::Io { operation, path: None, source }
    }

    pub(crate) fn io_at(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { operation, path: Some(path.into()), source }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        Error::Protocol(detail.into())
    }

    /// Prefixes a protocol error's detail with what was being done; other errors (a timeout,
    /// a stop, an I/O error) keep their own variant.
    pub(crate) fn in_context(self, context: impl FnOnce() -> String) -> Self {
        match self {
            Error::Protocol(detail) => Error::Protocol(format!("{}: {detail}", context())),
            other => other,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::Io { source, .. } | Error::Create { source, .. } => source.kind(),
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::InvalidId { .. } | Error::PathTooLong { .. } => io::ErrorKind::InvalidInput,
            Error::IdInUse { .. } => io::ErrorKind::AddrInUse,
            Error::PeerRefused { .. } => io::ErrorKind::PermissionDenied,
            Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::UnknownId(_) => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        match err {
            Error::Io { source, .. } | Error::Create { source, .. } if source.raw_os_error().is_some() => {
                source
            }
            err => io::Error::new(kind, err),
        }
    }
}
