//! What a coordination directory holds, read without disturbing its group.
//!
//! [`inspect`] reports the owner named in the owner file and whether it is alive, whether an
//! upgrade is in progress (the coordination lock is held), every upgrade socket with its state,
//! and anything else found in the directory. It is what `tableroll status` prints.
//!
//! Nothing is connected to, locked, created or removed. Connecting to an owner's upgrade
//! socket would start a handoff (the owner answers any connection by sending every
//! descriptor), and taking the lock would make a newcomer wait; so liveness is read from the
//! kernel's table of Unix sockets (`/proc/net/unix`), the lock from its table of file locks
//! (`/proc/locks`), and the processes behind sockets from `/proc/<pid>/fd`. Linux only.
//!
//! What the kernel shows depends on where the reader stands: a socket bound in another network
//! namespace is not in this namespace's table and reads as stale, a lock held by a process of
//! another PID namespace is left out of the lock table and reads as free, and the process
//! behind a socket is found only if this process may read its `/proc/<pid>/fd`.

mod locks;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileType};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::coordination::read_bounded;
use crate::error::{Error, Result};
use crate::id;
use crate::unix_sockets::{self, UnconnectedSocket};

/// The owner file's name, which is also the lock file.
const OWNER_FILE: &str = "pid";
const SOCKET_SUFFIX: &str = ".sock";
/// How many times the owner file is read while its content is not settled: a newcomer may be
/// in the middle of writing it, so a reader can catch it empty or half written.
const OWNER_READS: usize = 5;
/// How many times the whole picture is read while it is not consistent (see [`inspect`]).
const PICTURE_READS: usize = 20;

/// What a coordination directory holds, as [`inspect`] found it.
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
    /// Every upgrade socket (`<id>.sock`), sorted by id.
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
    /// The owner's id when the file holds a valid one (lossily decoded if not UTF-8).
    pub id: Option<String>,
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
    /// Whether its process is still there.
    pub state: SocketState,
    /// The pid of the process holding the socket, when live and visible.
    pub pid: Option<u32>,
    /// Whether it is the owner's.
    pub owner: bool,
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
    fn of(file_type: FileType) -> EntryKind {
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
    fn described(self) -> &'static str {
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

/// Reports what the coordination directory `dir` holds, without disturbing its group: see the
/// [module docs](self) for what is read, and what the kernel may hide.
///
/// A missing, empty or invalid owner file, an unreadable lock table, stale sockets and
/// strange files are reported in the result, not as errors.
///
/// # Errors
///
/// [`Error::Io`] naming the path if `dir` cannot be made absolute or listed (it does not
/// exist, is not a directory, or may not be read), or if the kernel's table of Unix sockets
/// (`/proc/net/unix`) cannot be read.
pub fn inspect(dir: impl AsRef<Path>) -> Result<DirectoryStatus> {
    let dir = dir.as_ref();
    let dir =
        std::path::absolute(dir).map_err(|e| Error::io_at("resolving the coordination directory", dir, e))?;
    let mut picture = Picture::read(&dir)?;
    for _ in 1..PICTURE_READS {
        if picture.is_consistent() {
            break;
        }
        // Let a newcomer that is running on this CPU finish writing the owner file.
        std::thread::yield_now();
        picture = Picture::read(&dir)?;
    }
    Ok(picture.status)
}

/// One reading of the directory, between two reads of the owner file.
///
/// The parts are read one after the other while the group may be handing over, so a reading
/// can mix moments: the owner file naming the old owner and, read later, the socket table
/// without it (it stepped down once the file named the newcomer); or the file caught in the
/// middle of its rewrite. So the owner file is read before anything else and again after
/// everything else: when both reads agree, the file held that content for the whole reading,
/// and the owner it names was bound (a process binds its socket before it records itself)
/// before the directory was listed. A reading is taken as it is when the reads agree and the
/// owner is alive or the lock is free; otherwise a newcomer may be writing the file (it does so
/// holding the lock), and [`inspect`] reads again, a bounded number of times.
struct Picture {
    status: DirectoryStatus,
    /// Whether the owner file held the same bytes before and after the reading.
    file_unchanged: bool,
}

impl Picture {
    fn read(dir: &Path) -> Result<Picture> {
        let before = owner_file_bytes(dir);
        let listing = Listing::read(dir)?;
        let read = read_owner_file(dir, listing.owner_file_kind);
        let lock = lock_status(dir, listing.owner_file_kind);
        let sockets = socket_statuses(&listing.sockets, read.id.as_deref())?;
        let file_unchanged = owner_file_bytes(dir) == before;
        let owner_socket = sockets.iter().find(|s| s.owner);
        let owner = OwnerStatus {
            file: read.file,
            id: read.id.map(|id| String::from_utf8_lossy(&id).into_owned()),
            alive: owner_socket.is_some_and(|s| s.state == SocketState::Live),
            pid: owner_socket.and_then(|s| s.pid),
            problem: read.problem,
        };
        let handover = handover(&lock, &sockets);
        let status = DirectoryStatus {
            dir: dir.to_owned(),
            owner,
            lock,
            handover,
            sockets,
            unexpected: listing.unexpected,
        };
        Ok(Picture { status, file_unchanged })
    }

    fn is_consistent(&self) -> bool {
        self.file_unchanged && (self.status.owner.alive || self.status.lock.held != LockHeld::Yes)
    }
}

/// The owner file's bytes, or `None` if it cannot be read (missing, not a regular file...).
fn owner_file_bytes(dir: &Path) -> Option<Vec<u8>> {
    open_owner_file(&dir.join(OWNER_FILE)).and_then(|file| read_bounded(&file)).ok()
}

/// The newcomer taking over: the holder of the lock, if it holds a live socket of the group.
fn handover(lock: &LockStatus, sockets: &[SocketStatus]) -> Option<Handover> {
    let holder = lock.holder_pid.filter(|_| lock.held == LockHeld::Yes)?;
    let socket =
        sockets.iter().find(|s| s.state == SocketState::Live && s.pid == Some(holder) && !s.owner)?;
    Some(Handover { id: socket.id.clone(), pid: holder })
}

/// A socket file named `<id>.sock` and the identity of that file.
struct SocketFile {
    id: Vec<u8>,
    device: u64,
    inode: u64,
}

/// The directory's entries, sorted out.
struct Listing {
    /// The kind of `pid`, if there is one.
    owner_file_kind: Option<EntryKind>,
    sockets: Vec<SocketFile>,
    unexpected: Vec<UnexpectedEntry>,
}

impl Listing {
    fn read(dir: &Path) -> Result<Listing> {
        let listing_error = |e| Error::io_at("listing the coordination directory", dir, e);
        let mut listing = Listing { owner_file_kind: None, sockets: Vec::new(), unexpected: Vec::new() };
        for entry in fs::read_dir(dir).map_err(listing_error)? {
            let entry = entry.map_err(listing_error)?;
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(meta) => Some(meta),
                // Removed since it was listed (a stale socket swept by a new owner, say).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => None,
            };
            listing.sort_in(entry.file_name(), meta.as_ref());
        }
        listing.sockets.sort_by(|a, b| a.id.cmp(&b.id));
        listing.unexpected.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    fn sort_in(&mut self, name: OsString, meta: Option<&fs::Metadata>) {
        let kind = meta.map_or(EntryKind::Unknown, |m| EntryKind::of(m.file_type()));
        let name = name.as_bytes();
        if name == OWNER_FILE.as_bytes() {
            self.owner_file_kind = Some(kind);
            if kind == EntryKind::RegularFile {
                return;
            }
        } else if let (Some(id), Some(meta)) = (upgrade_socket_id(name), meta) {
            if kind == EntryKind::Socket {
                self.sockets.push(SocketFile { id: id.to_vec(), device: meta.dev(), inode: meta.ino() });
                return;
            }
        }
        self.unexpected.push(UnexpectedEntry { name: String::from_utf8_lossy(name).into_owned(), kind });
    }
}

/// The id in an upgrade socket's file name `<id>.sock`.
fn upgrade_socket_id(name: &[u8]) -> Option<&[u8]> {
    name.strip_suffix(SOCKET_SUFFIX.as_bytes()).filter(|id| !id.is_empty())
}

/// What the owner file says.
struct OwnerRead {
    /// The owner's id, when valid.
    id: Option<Vec<u8>>,
    file: OwnerFile,
    /// Why it cannot be used, when invalid.
    problem: Option<String>,
}

impl OwnerRead {
    fn without_id(file: OwnerFile) -> OwnerRead {
        OwnerRead { id: None, file, problem: None }
    }

    fn invalid(problem: String) -> OwnerRead {
        OwnerRead { id: None, file: OwnerFile::Invalid, problem: Some(problem) }
    }
}

/// Reads the owner file, whose directory entry is of `kind` (`None`: there is none).
fn read_owner_file(dir: &Path, kind: Option<EntryKind>) -> OwnerRead {
    match kind {
        None => return OwnerRead::without_id(OwnerFile::Missing),
        Some(EntryKind::RegularFile) => {}
        Some(kind) => {
            return OwnerRead::invalid(format!("the owner file is {}, not a regular file", kind.described()))
        }
    }
    let content = match open_owner_file(&dir.join(OWNER_FILE)).and_then(|file| read_settled(&file)) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return OwnerRead::without_id(OwnerFile::Missing),
        Err(e) => return OwnerRead::invalid(format!("the owner file cannot be read: {e}")),
    };
    if content.is_empty() {
        return OwnerRead::without_id(OwnerFile::Empty);
    }
    match id::validate(&content) {
        Ok(()) => OwnerRead { id: Some(content), file: OwnerFile::Valid, problem: None },
        Err(Error::InvalidId { id, reason }) => {
            OwnerRead::invalid(format!("the owner file holds {id:?}, which is not a valid id ({reason})"))
        }
        Err(e) => OwnerRead::invalid(format!("the owner file holds an invalid id: {e}")),
    }
}

/// Opens the owner file for reading only: never through a symlink, and without blocking if
/// something other than a regular file was put there since it was listed (opening a named
/// pipe would wait for a writer).
fn open_owner_file(path: &Path) -> io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = fs::OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// The owner file's content once two reads agree on something (or after [`OWNER_READS`]
/// reads): a writer in the middle of its write shows a mix of two ids (ours write in place,
/// then cut the file to length) or an empty file (Go tableroll truncates, then writes).
fn read_settled(file: &File) -> io::Result<Vec<u8>> {
    let mut last = read_bounded(file)?;
    for _ in 1..OWNER_READS {
        // Let a writer that is running on this CPU finish its two system calls.
        std::thread::yield_now();
        let again = read_bounded(file)?;
        if again == last && !again.is_empty() {
            break;
        }
        last = again;
    }
    Ok(last)
}

/// Whether the coordination lock on the owner file is held, and by whom.
fn lock_status(dir: &Path, owner_file_kind: Option<EntryKind>) -> LockStatus {
    let status = |held, holder_pid, problem| LockStatus { held, holder_pid, problem };
    if owner_file_kind.is_none() {
        // A newcomer creates the file before it locks it.
        return status(LockHeld::No, None, None);
    }
    let target = match locks::LockTarget::at(&dir.join(OWNER_FILE)) {
        Ok(target) => target,
        // Gone since it was listed: nobody can be holding a lock on it now.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return status(LockHeld::No, None, None),
        Err(e) => {
            return status(LockHeld::Unknown, None, Some(format!("cannot inspect the owner file: {e}")))
        }
    };
    match locks::flock_holder(&target) {
        Ok(Some(holder)) => status(LockHeld::Yes, holder.pid, None),
        Ok(None) => status(LockHeld::No, None, None),
        Err(e) => status(LockHeld::Unknown, None, Some(format!("cannot read /proc/locks: {e}"))),
    }
}

/// The state of every upgrade socket, and the process behind each live one.
fn socket_statuses(files: &[SocketFile], owner: Option<&[u8]>) -> Result<Vec<SocketStatus>> {
    let names: Vec<Vec<u8>> = files.iter().map(|f| socket_file_name(&f.id)).collect();
    let wanted: HashSet<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let listed = unix_sockets::unconnected_sockets_named(&wanted)
        .map_err(|e| Error::io_at("reading the kernel's table of Unix sockets", "/proc/net/unix", e))?;
    let inodes: Vec<Option<u64>> =
        files.iter().zip(&names).map(|(file, name)| listed_inode(file, name, &listed)).collect();
    let live: HashSet<u64> = inodes.iter().flatten().copied().collect();
    let holders: HashMap<u64, u32> =
        if live.is_empty() { HashMap::new() } else { unix_sockets::socket_holders(&live) };
    Ok(files
        .iter()
        .zip(inodes)
        .map(|(file, inode)| SocketStatus {
            id: String::from_utf8_lossy(&file.id).into_owned(),
            state: if inode.is_some() { SocketState::Live } else { SocketState::Stale },
            pid: inode.and_then(|inode| holders.get(&inode).copied()),
            owner: owner == Some(file.id.as_slice()),
        })
        .collect())
}

fn socket_file_name(id: &[u8]) -> Vec<u8> {
    [id, SOCKET_SUFFIX.as_bytes()].concat()
}

/// The socket inode of the listed socket bound to this very file, if any.
///
/// The table holds paths as their processes bound them, which may name the directory
/// differently (through a symlink, say): a listed path counts if it leads to the same file.
fn listed_inode(file: &SocketFile, name: &[u8], listed: &[UnconnectedSocket]) -> Option<u64> {
    listed
        .iter()
        .filter(|socket| socket.path.strip_suffix(name).is_some_and(|parent| parent.ends_with(b"/")))
        .find(|socket| {
            let path = Path::new(OsStr::from_bytes(&socket.path));
            fs::symlink_metadata(path).is_ok_and(|m| m.dev() == file.device && m.ino() == file.inode)
        })
        .map(|socket| socket.inode)
}

fn lossy_path<S: Serializer>(path: &Path, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use rustix::fs::{flock, FlockOperation};

    fn write_owner(dir: &Path, content: &[u8]) {
        fs::write(dir.join(OWNER_FILE), content).unwrap();
    }

    fn socket<'a>(status: &'a DirectoryStatus, id: &str) -> &'a SocketStatus {
        status.sockets.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no socket {id}: {status:#?}"))
    }

    fn unexpected(status: &DirectoryStatus) -> Vec<(&str, EntryKind)> {
        status.unexpected.iter().map(|e| (e.name.as_str(), e.kind)).collect()
    }

    #[test]
    fn a_live_owner_a_stale_socket_and_strange_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let _owner = UnixListener::bind(dir.join("owner.sock")).unwrap();
        drop(UnixListener::bind(dir.join("crashed.sock")).unwrap());
        write_owner(dir, b"owner");
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        fs::write(dir.join("fake.sock"), b"x").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("owner.sock"), dir.join("link.sock")).unwrap();

        let status = inspect(dir).unwrap();
        assert_eq!(status.dir, dir);
        assert_eq!(status.owner.file, OwnerFile::Valid);
        assert_eq!(status.owner.id.as_deref(), Some("owner"));
        assert!(status.owner.alive, "{status:#?}");
        assert_eq!(status.owner.pid, Some(std::process::id()));
        let ids: Vec<&str> = status.sockets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["crashed", "owner"]);
        let owner = socket(&status, "owner");
        assert_eq!(
            (owner.state, owner.pid, owner.owner),
            (SocketState::Live, Some(std::process::id()), true)
        );
        let crashed = socket(&status, "crashed");
        assert_eq!((crashed.state, crashed.pid, crashed.owner), (SocketState::Stale, None, false));
        assert_eq!(
            unexpected(&status),
            [
                ("fake.sock", EntryKind::RegularFile),
                ("link.sock", EntryKind::Symlink),
                ("notes.txt", EntryKind::RegularFile),
                ("sub", EntryKind::Directory),
            ]
        );
        assert_eq!(status.lock.held, LockHeld::No);
    }

    #[test]
    fn an_owner_whose_socket_is_stale_or_missing_is_dead() {
        let tmp = tempfile::tempdir().unwrap();
        drop(UnixListener::bind(tmp.path().join("gone.sock")).unwrap());
        write_owner(tmp.path(), b"gone");
        let status = inspect(tmp.path()).unwrap();
        assert_eq!(status.owner.file, OwnerFile::Valid);
        assert!(!status.owner.alive);
        assert_eq!(status.owner.pid, None);
        assert!(socket(&status, "gone").owner);

        fs::remove_file(tmp.path().join("gone.sock")).unwrap();
        let status = inspect(tmp.path()).unwrap();
        assert_eq!(status.owner.id.as_deref(), Some("gone"));
        assert!(!status.owner.alive);
    }

    #[test]
    fn missing_and_empty_owner_files_mean_no_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let status = inspect(tmp.path()).unwrap();
        assert_eq!((status.owner.file, status.owner.alive), (OwnerFile::Missing, false));
        assert!(status.sockets.is_empty() && status.unexpected.is_empty());
        assert_eq!(status.lock.held, LockHeld::No);
        write_owner(tmp.path(), b"");
        let status = inspect(tmp.path()).unwrap();
        assert_eq!((status.owner.file, status.owner.id.as_deref()), (OwnerFile::Empty, None));
    }

    #[test]
    fn invalid_owner_ids_are_reported_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let _elsewhere = UnixListener::bind(tmp.path().join("x.sock")).unwrap();
        for bad in [&b"../x"[..], b"..", b"a\0b", &[b'x'; 4096]] {
            write_owner(tmp.path(), bad);
            let status = inspect(tmp.path()).unwrap();
            assert_eq!(status.owner.file, OwnerFile::Invalid, "{bad:?}");
            assert_eq!((status.owner.id.as_deref(), status.owner.alive), (None, false));
            let problem = status.owner.problem.unwrap();
            assert!(problem.contains("not a valid id"), "{problem}");
        }
    }

    #[test]
    fn an_owner_file_that_is_not_a_regular_file_is_invalid_and_unexpected() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, b"someone").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join(OWNER_FILE)).unwrap();
        let status = inspect(tmp.path()).unwrap();
        assert_eq!(status.owner.file, OwnerFile::Invalid);
        assert!(status.owner.problem.as_deref().unwrap().contains("symlink"), "{status:#?}");
        assert!(unexpected(&status).contains(&("pid", EntryKind::Symlink)));

        // A named pipe is not opened: that would wait for a writer.
        fs::remove_file(tmp.path().join(OWNER_FILE)).unwrap();
        let fifo = tmp.path().join(OWNER_FILE);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
        let status = inspect(tmp.path()).unwrap();
        assert_eq!(status.owner.file, OwnerFile::Invalid);
        assert!(unexpected(&status).contains(&("pid", EntryKind::Fifo)));
        // And the fallback for one swapped in after listing does not block either.
        assert!(open_owner_file(&fifo).is_err());
    }

    #[test]
    fn a_held_lock_is_an_upgrade_in_progress() {
        let tmp = tempfile::tempdir().unwrap();
        write_owner(tmp.path(), b"");
        let file = File::open(tmp.path().join(OWNER_FILE)).unwrap();
        flock(&file, FlockOperation::NonBlockingLockExclusive).unwrap();
        let status = inspect(tmp.path()).unwrap();
        assert_eq!(status.lock.held, LockHeld::Yes);
        assert_eq!(status.lock.holder_pid, Some(std::process::id()));
        drop(file);
        let status = inspect(tmp.path()).unwrap();
        assert_eq!((status.lock.held, status.lock.holder_pid), (LockHeld::No, None));
    }

    #[test]
    fn a_directory_named_through_a_symlink_still_finds_live_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let _owner = UnixListener::bind(real.join("o.sock")).unwrap();
        write_owner(&real, b"o");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let status = inspect(&link).unwrap();
        assert!(status.owner.alive, "{status:#?}");
        assert_eq!(status.dir, link);
    }

    #[test]
    fn never_connects_to_a_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = UnixListener::bind(tmp.path().join("o.sock")).unwrap();
        owner.set_nonblocking(true).unwrap();
        write_owner(tmp.path(), b"o");
        assert!(inspect(tmp.path()).unwrap().owner.alive);
        let err = owner.accept().expect_err("inspect connected to the owner");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = inspect(&missing).unwrap_err();
        assert!(matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(err.to_string().contains("nope"), "{err}");
        fs::write(&missing, b"").unwrap();
        assert!(inspect(&missing).is_err(), "a file is not a directory");
    }

    #[test]
    fn serializes_to_plain_json() {
        let tmp = tempfile::tempdir().unwrap();
        let _owner = UnixListener::bind(tmp.path().join("o.sock")).unwrap();
        write_owner(tmp.path(), b"o");
        fs::write(tmp.path().join("junk"), b"").unwrap();
        let json = serde_json::to_value(inspect(tmp.path()).unwrap()).unwrap();
        assert_eq!(json["owner"]["file"], "valid");
        assert_eq!(json["owner"]["alive"], true);
        assert_eq!(json["lock"]["held"], "no");
        assert_eq!(json["sockets"][0]["state"], "live");
        assert_eq!(json["unexpected"][0]["kind"], "regular_file");
        assert_eq!(json["dir"], tmp.path().to_str().unwrap());
    }
}
