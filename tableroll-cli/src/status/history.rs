//! `tableroll status --history [N]`: the last N events of the group's journal, one line each in
//! words, or one JSON object (`entries`, `skipped`, `dir`).

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use tableroll::inspect::{JournalEntry, JournalRead, JOURNAL_FILE};

use super::entry;

/// The last `count` entries of `read`, oldest first.
pub fn last(read: &JournalRead, count: usize) -> &[JournalEntry] {
    &read.entries[read.entries.len().saturating_sub(count)..]
}

/// Checks that `dir` is a directory: a missing journal is no error, a missing directory is.
///
/// # Errors
///
/// `dir` does not exist, cannot be reached, or is not a directory; the message names it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(e) => Err(format!("reading {}: {e}", dir.display())),
    }
}

/// Whether `dir` has a journal at all (either part), as opposed to an empty one.
pub fn exists(dir: &Path) -> bool {
    [JOURNAL_FILE, "journal.1"].iter().any(|name| dir.join(name).symlink_metadata().is_ok())
}

/// Prints `entries` as lines in words.
pub fn print_lines(out: &mut impl Write, entries: &[JournalEntry]) -> io::Result<()> {
    for entry in entries {
        writeln!(out, "{}", entry::line(entry))?;
    }
    Ok(())
}

/// Prints `entries` as JSON lines, each as the journal holds it.
pub fn print_json_lines(out: &mut impl Write, entries: &[JournalEntry]) -> io::Result<()> {
    for entry in entries {
        serde_json::to_writer(&mut *out, entry)?;
        writeln!(out)?;
    }
    Ok(())
}

/// The sentence for lines of the journal that are not entries.
pub fn skipped_note(skipped: usize) -> String {
    format!("{skipped} lines of the journal are not events (damaged, or cut mid-write) and were skipped")
}

/// The `--history --json` report.
#[derive(Serialize)]
struct Report<'a> {
    dir: &'a Path,
    entries: &'a [JournalEntry],
    skipped: usize,
}

/// Prints the last `count` entries of the journal of `dir`, read as `read`.
pub fn print(dir: &Path, read: &JournalRead, count: usize, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let entries = last(read, count);
    if json {
        serde_json::to_writer_pretty(&mut out, &Report { dir, entries, skipped: read.skipped })?;
        return writeln!(out);
    }
    if read.entries.is_empty() && read.skipped == 0 {
        let shown = super::printable(&dir.join(JOURNAL_FILE).to_string_lossy());
        return match exists(dir) {
            true => writeln!(out, "no events: the journal {shown} is empty"),
            false => writeln!(out, "no events: there is no journal {shown} (no member has written one)"),
        };
    }
    print_lines(&mut out, entries)?;
    if read.skipped > 0 {
        writeln!(out, "({})", skipped_note(read.skipped))?;
    }
    Ok(())
}
