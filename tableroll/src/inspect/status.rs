//! The report [`inspect`](super::inspect) returns: the public status types.

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// What a coordination directory holds, as [`inspect`](super::inspect) found it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DirectoryStatus {
    /// The directory, made absolute.
    #[serde(serialize_with = "lossy_path")]
    pub dir: PathBuf,
    /// The owner the owner file names, and whether it is alive.
    pub owner: OwnerStatus,
    /// The coordination lock: held while a newcomer takes over, i.e. an upgrade is in progress.
    pub lock: LockStatus,
    /// The newcomer taking over, when the lock is held by a process that holds a live upgrade
    /// socket of the group.
    pub handover: Option<Handover>,
    /// Every upgrade socket (`<id>.sock`), sorted by id, with its standby mark if it has one.
    pub sockets: Vec<SocketStatus>,
    /// Everything else in the directory, sorted by name.
    pub unexpected: Vec<UnexpectedEntry>,
}

/// The current owner, as the owner file `pid` names it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct OwnerStatus {
    /// What the owner file holds.
    pub file: OwnerFile,
    /// The owner's id when the file holds a valid one: the file's bytes exactly, nothing
    /// trimmed (a trailing newline is part of the id), lossily decoded if not UTF-8.
    pub id: Option<String>,
    /// The id's exact bytes when they are not UTF-8 (`id` is lossy then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_raw: Option<RawName>,
    /// Whether the owner's upgrade socket is live: the owner is serving and can be upgraded.
    pub alive: bool,
    /// The pid of the process holding the owner's upgrade socket, when alive and visible.
    pub pid: Option<u32>,
    /// Why the owner file could not be used, when [`OwnerFile::Invalid`].
    pub problem: Option<String>,
}

/// What the owner file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OwnerFile {
    /// There is no owner file: no process has joined the group yet.
    Missing,
    /// The owner file is empty: no process has become owner yet.
    Empty,
    /// The owner file holds a valid id.
    Valid,
    /// The owner file cannot be used: it is not a regular file, cannot be read, or does not
    /// hold a valid id. Processes of the group refuse to start until it is fixed.
    Invalid,
}

/// The coordination lock on the owner file.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct LockStatus {
    /// Whether a process holds it (a newcomer is taking over).
    pub held: LockHeld,
    /// The holder's pid, when held and the kernel names it.
    pub holder_pid: Option<u32>,
    /// Why it is [`LockHeld::Unknown`].
    pub problem: Option<String>,
}

/// A newcomer taking over: it holds the coordination lock and a live upgrade socket.
///
/// While it takes over, the owner file may name the previous owner (which may already have
/// stepped down, as a Go owner does before the newcomer records itself), or be in the middle of
/// being rewritten.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Handover {
    /// The id of the newcomer's upgrade socket (lossily decoded if not UTF-8).
    pub id: String,
    /// The id's exact bytes when they are not UTF-8 (`id` is lossy then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_raw: Option<RawName>,
    /// The newcomer's pid.
    pub pid: u32,
}

/// Whether the coordination lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LockHeld {
    /// Held: an upgrade is in progress.
    Yes,
    /// Not held (or held by a process of another PID namespace, which the kernel does not show).
    No,
    /// The kernel's table of locks could not be read.
    Unknown,
}

/// One upgrade socket `<id>.sock`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SocketStatus {
    /// The process id the socket is named after (lossily decoded if not UTF-8).
    pub id: String,
    /// The id's exact bytes when they are not UTF-8 (`id` is lossy then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_raw: Option<RawName>,
    /// Whether its process is still there.
    pub state: SocketState,
    /// The pid of the process holding the socket, when live and visible.
    pub pid: Option<u32>,
    /// Whether it is the owner's.
    pub owner: bool,
    /// Whether its process is a standby of our implementation (it has a standby mark
    /// `<id>.standby`): it is handing over, on probation after a newcomer took over, or
    /// draining, and still holds the group's descriptors, which it hands to a newcomer that
    /// finds the owner gone.
    pub standby: bool,
}

/// The state of an upgrade socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SocketState {
    /// A process has it open, listening (or bound and about to listen).
    Live,
    /// Its socket is closed: its process is gone. The next owner removes it.
    Stale,
}

/// An entry the directory should not hold.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct UnexpectedEntry {
    /// The file name (lossily decoded if not UTF-8).
    pub name: String,
    /// The name's exact bytes when they are not UTF-8 (`name` is lossy then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<RawName>,
    /// What it is.
    pub kind: EntryKind,
}

/// What a directory entry is (a symlink is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    RegularFile,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A Unix socket.
    Socket,
    /// A named pipe.
    Fifo,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// Something else, or it could not be inspected.
    Unknown,
}

impl EntryKind {
    pub(super) fn of(file_type: FileType) -> EntryKind {
        if file_type.is_file() {
            EntryKind::RegularFile
        } else if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_socket() {
            EntryKind::Socket
        } else if file_type.is_fifo() {
            EntryKind::Fifo
        } else if file_type.is_block_device() {
            EntryKind::BlockDevice
        } else if file_type.is_char_device() {
            EntryKind::CharDevice
        } else {
            EntryKind::Unknown
        }
    }

    /// How the kind reads in a sentence: "a symlink".
    pub(super) fn described(self) -> &'static str {
        match self {
            EntryKind::RegularFile => "a regular file",
            EntryKind::Directory => "a directory",
            EntryKind::Symlink => "a symlink",
            EntryKind::Socket => "a socket",
            EntryKind::Fifo => "a named pipe",
            EntryKind::BlockDevice => "a block device",
            EntryKind::CharDevice => "a character device",
            EntryKind::Unknown => "of an unknown kind",
        }
    }
}

/// A name's exact bytes, kept next to its lossy display form when it is not UTF-8. Serialized
/// as a string escaped as [`<[u8]>::escape_ascii`] escapes: printable ASCII as itself, `\\`,
/// `\'`, `\"`, `\t`, `\r`, `\n`, and every other byte as `\xHH`; the escaping can be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawName(pub Vec<u8>);

impl RawName {
    /// The bytes of `name` if they are not UTF-8: only then is the lossy form not exact.
    pub(super) fn if_lossy(name: &[u8]) -> Option<RawName> {
        std::str::from_utf8(name).is_err().then(|| RawName(name.to_vec()))
    }

    /// The escaped form (see [`RawName`]).
    pub fn escaped(&self) -> String {
        self.0.escape_ascii().to_string()
    }
}

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.escaped())
    }
}

fn lossy_path<S: Serializer>(path: &Path, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}
