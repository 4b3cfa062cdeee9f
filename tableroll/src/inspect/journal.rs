//! Reading a group's journal: its entries in order ([`read_journal`]), or as they are appended
//! ([`JournalFollower`]). What the members write, and when, is listed on [`JournalEntry`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::coordination::{Directory, JOURNAL_FILE, JOURNAL_ROTATED};
use crate::error::{Error, Result};
use crate::sys::files::{open_nofollow, OpenMode};

/// At most this much of each part of the journal is read (its end): a journal written by the
/// library is capped far below, so only a damaged or foreign file is cut.
const READ_LIMIT: u64 = 8 * 1024 * 1024;

/// One event of a member of the group, as one line of the journal holds it.
///
/// | event | when | fields |
/// | --- | --- | --- |
/// | `joined` | `build()` returned: the lock is held, the descriptors received | `from` (the id that handed over, or null), `descriptors`, `join_ms` |
/// | `committed` | `ready()` made the process the owner | `previous` (the id it took over from, or null), `ready_ms` |
/// | `ready_failed` | `ready()` failed: the process is not the owner | `kind` (an [`ErrorKind`](crate::ErrorKind) name), `reason` |
/// | `handed_over` | as owner (or standby), a newcomer it served became the owner | `new_owner`, `newcomer_pid`, `descriptors`, `handoff_ms` |
/// | `handoff_failed` | as owner, a handoff to a newcomer failed; the process stays the owner | `newcomer_pid`, `kind`, `reason` |
/// | `on_probation` | stepped down with a probation window | `new_owner`, `window_ms` |
/// | `rolled_back` | the new owner died and the process is the owner again | `failed_owner`, `took_ms` |
/// | `stepped_down` | the application is told to drain | `new_owner` (null if unknown), `after_probation` |
/// | `stopped` | the upgrader stopped (or was dropped) | |
///
/// Programs of other kinds may add events and fields: a reader skips what it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JournalEntry {
    /// When, in seconds since the Unix epoch.
    pub ts: f64,
    /// What happened (see the table above).
    pub event: String,
    /// The member's id.
    pub id: String,
    /// The member's pid, as it saw itself.
    pub pid: u32,
    /// The member's generation, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The event's own fields.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl JournalEntry {
    /// The field `name` as a string, if it is one.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// The field `name` as a number, if it is one.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.fields.get(name).and_then(Value::as_f64)
    }
}

/// A journal as read: its entries, oldest first, and how many lines could not be read as one.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JournalRead {
    /// The entries, oldest first.
    pub entries: Vec<JournalEntry>,
    /// Lines that are not an entry (damaged, or cut by a reader that came mid-write).
    pub skipped: usize,
}

/// Reads the journal of the coordination directory `dir`: the previous part (`journal.1`),
/// then the current one. A missing journal is empty.
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if a part exists but cannot be read,
/// or is not a regular file (a FIFO, a directory, a symlink).
pub fn read_journal(dir: impl AsRef<Path>) -> Result<JournalRead> {
    let dir = Directory::at(dir.as_ref())?;
    let mut read = JournalRead::default();
    for name in [JOURNAL_ROTATED, JOURNAL_FILE] {
        let path = dir.path().join(name);
        let bytes = match read_tail(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io_at("reading the journal", &path, e)),
        };
        parse_lines(&bytes, &mut read);
    }
    Ok(read)
}

/// The last [`READ_LIMIT`] bytes of `path`, from the start of a line.
fn read_tail(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_journal(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(READ_LIMIT);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(READ_LIMIT).read_to_end(&mut bytes)?;
    if start > 0 {
        let first = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first);
    }
    Ok(bytes)
}

/// Parses the complete lines of `bytes` into `read`; returns how many bytes they took.
fn parse_lines(bytes: &[u8], read: &mut JournalRead) -> usize {
    let mut used = 0;
    while let Some(end) = bytes[used..].iter().position(|&b| b == b'\n') {
        let line = &bytes[used..used + end];
        used += end + 1;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<JournalEntry>(line) {
            Ok(entry) => read.entries.push(entry),
            Err(_) => read.skipped += 1,
        }
    }
    used
}

/// Follows a journal as members append to it, across rotations: each
/// [`read_new`](Self::read_new) returns the entries appended since the last.
#[derive(Debug)]
pub struct JournalFollower {
    path: PathBuf,
    file: Option<File>,
    /// Read bytes not yet ending a line.
    partial: Vec<u8>,
}

impl JournalFollower {
    /// Follows the journal of `dir` from its current end: only entries appended from now on.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if the journal exists but
    /// cannot be read, or is not a regular file.
    pub fn from_end(dir: impl AsRef<Path>) -> Result<JournalFollower> {
        let dir = Directory::at(dir.as_ref())?;
        let mut follower =
            JournalFollower { path: dir.path().join(JOURNAL_FILE), file: None, partial: Vec::new() };
        if let Some(mut file) = follower.open()? {
            file.seek(SeekFrom::End(0))
                .map_err(|e| Error::io_at("reading the journal", &follower.path, e))?;
            follower.file = Some(file);
        }
        Ok(follower)
    }

    /// The path of the file followed (`<dir>/journal`), for a caller that waits for changes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> Result<Option<File>> {
        match open_journal(&self.path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io_at("reading the journal", &self.path, e)),
        }
    }

    /// The entries appended since the last call (or since [`from_end`](Self::from_end)). A
    /// rotation is followed: what was appended to the old file is read first.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if the journal cannot be read.
    pub fn read_new(&mut self) -> Result<JournalRead> {
        let mut read = JournalRead::default();
        loop {
            if let Some(file) = &mut self.file {
                file.read_to_end(&mut self.partial)
                    .map_err(|e| Error::io_at("reading the journal", &self.path, e))?;
                let used = parse_lines(&self.partial, &mut read);
                self.partial.drain(..used);
            }
            let current = self.open()?;
            let moved = match (&self.file, &current) {
                (Some(old), Some(new)) => !same_file(old, new),
                (None, Some(_)) => true,
                _ => false,
            };
            if !moved {
                return Ok(read);
            }
            // A new file at the path: the rest of the old one was read above; the new one is
            // read from its start.
            self.file = current;
            self.partial.clear();
        }
    }
}

/// Opens a part of the journal to read: never through a symlink, never blocking on a FIFO put
/// at the path, and only a regular file (`InvalidInput` otherwise).
fn open_journal(path: &Path) -> io::Result<File> {
    open_nofollow(path, OpenMode::Read)
}

fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}
