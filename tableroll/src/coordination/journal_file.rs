//! The journal `<dir>/journal`: one line per event of the group's members, appended, capped.
//!
//! Each line is written with one `write(2)` on a descriptor opened `O_APPEND`, so lines from
//! concurrent members never interleave: the kernel puts each write whole at the end of the
//! file. When the file has grown past [`CAP`] bytes, the writer that notices renames it to
//! `journal.1` (replacing the previous one) and opens a new `journal`; the journal thus never
//! holds much more than twice the cap. The rename is done under an exclusive `flock(2)` on the
//! full file, and only if the path still names it, so that two members noticing at once rotate
//! once. A member still holding the old file appends to `journal.1` until its next write
//! notices the path names another file, and reopens.
//!
//! A write cut short by a full disk leaves the start of a line at the end of the file. Whoever
//! appends next finds no newline at the end and writes one before its line, so the piece is a
//! line of its own (a reader skips it and counts it) and the next event is not lost with it.
//!
//! Nothing here may affect a handoff: a journal that cannot be opened or written (a full disk,
//! a read-only file, a FIFO put at the path) is logged once and then left alone.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::names::{JOURNAL_FILE, JOURNAL_ROTATED};
use crate::sys::files::{open_nofollow, OpenMode};
use crate::sys::flock;

/// The size past which the journal is rotated.
pub(crate) const CAP: u64 = 256 * 1024;

/// This process's handle on the journal of a directory.
#[derive(Debug)]
pub(crate) struct JournalFile {
    path: PathBuf,
    rotated: PathBuf,
    file: Mutex<Option<File>>,
    /// Whether a failure was logged already: one warning, not one per event.
    warned: AtomicBool,
}

impl JournalFile {
    /// The journal of the directory `dir`; opened at the first append.
    pub(crate) fn new(dir: &Path) -> JournalFile {
        JournalFile {
            path: dir.join(JOURNAL_FILE),
            rotated: dir.join(JOURNAL_ROTATED),
            file: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    /// Appends `line` (which ends with a newline) as one write; a failure is logged once and
    /// otherwise ignored.
    pub(crate) fn append(&self, line: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = self.append_locked(&mut file, line) {
            *file = None;
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the group's journal; upgrades go on without it");
            }
        }
    }

    fn append_locked(&self, slot: &mut Option<File>, line: &[u8]) -> io::Result<()> {
        let file = match slot.take() {
            Some(file) if self.names(&file)? => file,
            // Rotated by another member meanwhile, or not opened yet.
            _ => self.open()?,
        };
        let file = if file.metadata()?.len() >= CAP { self.rotate(file)? } else { file };
        let line =
            if ends_mid_line(&file)? { Cow::Owned([b"\n", line].concat()) } else { Cow::Borrowed(line) };
        let written = (&file).write(&line)?;
        if written != line.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "the journal took part of a line"));
        }
        *slot = Some(file);
        Ok(())
    }

    fn open(&self) -> io::Result<File> {
        open_nofollow(&self.path, OpenMode::ReadAppendCreate { mode: 0o600 })
    }

    /// Whether the journal's path still names `file`.
    fn names(&self, file: &File) -> io::Result<bool> {
        let open = file.metadata()?;
        Ok(std::fs::symlink_metadata(&self.path)
            .is_ok_and(|at| (at.dev(), at.ino()) == (open.dev(), open.ino())))
    }

    /// Moves the full `file` to `journal.1` (if the path still names it) and opens a new one.
    fn rotate(&self, file: File) -> io::Result<File> {
        flock::lock_exclusive(&file)?;
        let renamed = match self.names(&file) {
            Ok(true) => std::fs::rename(&self.path, &self.rotated),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = flock::unlock(&file);
        renamed?;
        self.open()
    }
}

/// Whether `file` ends with part of a line: a write that a full disk cut short.
fn ends_mid_line(file: &File) -> io::Result<bool> {
    let Some(last) = file.metadata()?.len().checked_sub(1) else { return Ok(false) };
    let mut byte = [0];
    Ok(file.read_at(&mut byte, last)? == 1 && byte[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_the_journal_rotates_at_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = JournalFile::new(tmp.path());
        let other = JournalFile::new(tmp.path());
        let line = vec![b'x'; 1000].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        let lines = usize::try_from(3 * CAP).unwrap() / line.len();
        for i in 0..lines {
            if i % 2 == 0 { &journal } else { &other }.append(&line);
        }
        let current = std::fs::read(tmp.path().join(JOURNAL_FILE)).unwrap();
        let previous = std::fs::read(tmp.path().join(JOURNAL_ROTATED)).unwrap();
        for part in [&current, &previous] {
            assert!(part.len() as u64 <= CAP + line.len() as u64, "{} bytes", part.len());
            assert!(part.chunks(line.len()).all(|chunk| chunk == line.as_slice()), "whole lines only");
        }
        assert!(previous.len() as u64 >= CAP, "the previous part was full when it was rotated");
    }

    #[test]
    fn a_line_cut_short_by_a_full_disk_is_ended_before_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(JOURNAL_FILE);
        // What a write that ran out of space midway leaves (seen on a full tmpfs).
        std::fs::write(&path, b"{\"event\":\"ready\"}\n{\"descriptors\":1,\"event\":\"joi").unwrap();
        let journal = JournalFile::new(tmp.path());
        journal.append(b"{\"event\":\"committed\"}\n");
        journal.append(b"{\"event\":\"stopped\"}\n");
        assert_eq!(
            String::from_utf8(std::fs::read(&path).unwrap()).unwrap(),
            "{\"event\":\"ready\"}\n{\"descriptors\":1,\"event\":\"joi\n\
             {\"event\":\"committed\"}\n{\"event\":\"stopped\"}\n"
        );
        assert!(!journal.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn a_journal_that_cannot_be_written_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(JOURNAL_FILE)).unwrap();
        let journal = JournalFile::new(tmp.path());
        journal.append(b"line\n");
        journal.append(b"line\n");
        assert!(journal.warned.load(Ordering::Relaxed));
        assert!(tmp.path().join(JOURNAL_FILE).is_dir());
    }
}
