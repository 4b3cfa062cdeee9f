//! `tableroll status --watch`: the group's journal followed live, like `journalctl -f`. Each
//! entry appended from now on (after the last N with `--history N`) is printed as it comes, in
//! words or as a JSON line, until SIGINT or SIGTERM. Changes are waited for with inotify on the
//! directory, never by polling.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use tableroll::inspect::{read_journal, JournalEntry, JournalFollower};

use super::history;
use crate::run::signals::SignalPipe;
use crate::sys::{self, FileChange, FileWatch};

/// Why following stopped without an error.
pub enum Stopped {
    /// SIGINT or SIGTERM.
    Signalled,
    /// Stdout was closed (a pager or `head` quit).
    OutputClosed,
}

/// Follows the journal of `dir`, first printing its last `history` entries if asked.
///
/// # Errors
///
/// The directory or its journal cannot be read or watched, or it went away.
pub fn follow(dir: &Path, history: Option<usize>, json: bool) -> anyhow::Result<Stopped> {
    history::check_dir(dir).map_err(anyhow::Error::msg)?;
    let signals = SignalPipe::catch(&[SIGINT, SIGTERM]).context("catching SIGINT and SIGTERM")?;
    // The watch first, then the follower: nothing appended after the follower's start goes
    // unnoticed.
    let watch = FileWatch::new(dir, tableroll::inspect::JOURNAL_FILE)
        .with_context(|| format!("watching {}", dir.display()))?;
    let mut follower = JournalFollower::from_end(dir)?;
    // What was printed from the history: an entry appended between the follower's start and
    // the reading of the history is in both, and printed once.
    let mut printed = Vec::new();
    if let Some(count) = history {
        let read = read_journal(dir)?;
        let last = history::last(&read, count);
        if !print(last, read.skipped, json)? {
            return Ok(Stopped::OutputClosed);
        }
        printed = last.to_vec();
    }
    eprintln!("tableroll status: following {}; interrupt to stop", follower.path().display());
    // Read once at the start, then whenever the journal changed (written, created, or moved
    // away by a rotation), and a last time when the directory went: what was written to the
    // journal before is printed.
    let mut change = FileChange::Changed;
    loop {
        if change != FileChange::None {
            let read = follower.read_new()?;
            let new = unprinted(read.entries, &printed);
            printed.clear();
            if !print(&new, read.skipped, json)? {
                return Ok(Stopped::OutputClosed);
            }
        }
        if change == FileChange::DirectoryGone {
            anyhow::bail!("{} was removed or moved", dir.display());
        }
        let ready = sys::wait_readable(&[watch.fd(), signals.fd()], None).context("waiting for changes")?;
        if ready[1] {
            return Ok(Stopped::Signalled);
        }
        change = watch.changes().context("reading inotify events")?;
    }
}

/// `entries` without those in `printed`.
fn unprinted(entries: Vec<JournalEntry>, printed: &[JournalEntry]) -> Vec<JournalEntry> {
    entries.into_iter().filter(|e| !printed.contains(e)).collect()
}

/// Prints `entries` and notes `skipped` lines on stderr; `false` if stdout was closed.
fn print(entries: &[JournalEntry], skipped: usize, json: bool) -> anyhow::Result<bool> {
    if skipped > 0 {
        eprintln!("tableroll status: {}", history::skipped_note(skipped));
    }
    let mut out = io::stdout().lock();
    let printed = match json {
        true => history::print_json_lines(&mut out, entries),
        false => history::print_lines(&mut out, entries),
    };
    match printed.and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_printed_with_the_history_are_not_printed_again() {
        let entry = |ts: f64| -> JournalEntry {
            serde_json::from_value(serde_json::json!({ "ts": ts, "event": "stopped", "id": "a", "pid": 1 }))
                .unwrap()
        };
        let printed = [entry(1.0), entry(2.0)];
        assert_eq!(unprinted(vec![entry(2.0), entry(3.0)], &printed), [entry(3.0)]);
        assert_eq!(unprinted(vec![entry(3.0)], &[]), [entry(3.0)]);
    }
}
