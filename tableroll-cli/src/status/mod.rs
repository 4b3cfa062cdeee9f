//! `tableroll status`: what a coordination directory holds, read without disturbing its group.
//!
//! The reading is the library's ([`tableroll::inspect`]); this module words it for a person
//! (aligned lines and a one-line verdict) or prints it as one JSON object, and turns it into
//! the exit status. The group's journal is shown by [`history`] (`--history`) and [`watch`]
//! (`--watch`), and the group as metrics by [`metrics`] (`--format openmetrics`).

mod entry;
mod history;
mod metrics;
mod watch;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use tableroll::inspect::{self, DirectoryStatus, EntryKind, LockHeld, OwnerFile, SocketState, SocketStatus};

/// How `tableroll status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for a person.
    Text,
    /// JSON (what `--json` gives).
    Json,
    /// OpenMetrics text exposition: the group as metrics (not with --history or --watch).
    Openmetrics,
}

/// Arguments of `tableroll status`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct StatusArgs {
    /// The coordination directory of the upgrade group (the one given to `tableroll run` or
    /// to the library's `Upgrader`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object instead of text: `owner` (`file`: missing, empty, valid or
    /// invalid; `id`, `alive`, `pid`, `problem`), `lock` (`held`: yes, no or unknown;
    /// `holder_pid`, `problem`), `handover` (`id`, `pid` of the process taking over, or null),
    /// `sockets` (`id`, `state`: live or stale, `pid`, `owner`),
    /// `unexpected` (`name`, `kind`), `dir` and `verdict`. An id or name that is not UTF-8 is
    /// shown lossily, with its exact bytes next to it in `id_raw` or `name_raw` (printable
    /// ASCII as is, `\\`, `\n` and the like, other bytes as `\xHH`). With --history, the
    /// journal's entries as one JSON object; with --watch, one JSON object a line.
    #[arg(long)]
    pub json: bool,
    /// How to print: text, json (the same as --json), or openmetrics (the metrics listed
    /// below, for a scrape or node_exporter's textfile collector).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text, conflicts_with = "json")]
    pub format: Format,
    /// Print the last N events of the group's journal (DIR/journal) instead of the status: one
    /// line each (time in UTC, id, generation and pid, event, what happened), or with --json
    /// one JSON object: `entries` (each as the journal holds it), `skipped`, `dir`.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "20")]
    pub history: Option<usize>,
    /// Print the journal's events as they are appended, until interrupted (SIGINT or
    /// SIGTERM): from now on, or after the last N with --history N. With --json, one JSON
    /// object a line.
    #[arg(long)]
    pub watch: bool,
}

impl StatusArgs {
    fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format
        }
    }
}

const AFTER_HELP: &str = "\
Shows the owner named in DIR/pid and whether it is alive, whether an upgrade is in progress \
(a newcomer holds the flock(2) lock on DIR/pid) and which process holds it, every upgrade \
socket DIR/<id>.sock as live or stale with the pid of the process holding it, and anything \
else found in DIR.

DIR/pid is read as every process of the group reads it: its bytes are the owner's id, \
exactly; nothing is trimmed. A file written with a trailing newline (echo ID > DIR/pid) names \
an id that ends in a newline, whose socket does not exist: there is no live owner.

It never connects to a socket in DIR (a connection to the owner's socket would start a \
handoff), never takes the lock, and creates or removes nothing. It reads the kernel's tables \
instead: /proc/net/unix (which sockets are open), /proc/locks (who holds the lock) and \
/proc/<pid>/fd (which process holds a socket). Linux only. A socket bound in another network \
namespace reads as stale, a lock held from another PID namespace reads as not held, and a \
process of another user may show no pid.

The journal: every member of the group appends one JSON line per event of its life to \
DIR/journal (joined, committed, ready_failed, handed_over, handoff_failed, on_probation, \
rolled_back, stepped_down, stopped; moved to DIR/journal.1 past 256 KiB). --history prints \
its last N entries (20 if N is not given), --watch follows it (inotify on DIR, no polling). \
Lines that are not entries are skipped and counted: after the text, in the JSON's `skipped`, \
or on stderr with --watch.

--format openmetrics prints the group as OpenMetrics text (version 1.0.0, ending with `# \
EOF`), for a scrape or node_exporter's textfile collector. Every metric is a gauge, and every \
sample carries the label dir (DIR, absolute); a metric with no value is left out. The \
counts are of the entries in the journal, which keeps its last 256 to 512 KiB: they fall \
when old entries rotate out, so they are not counters.
  tableroll_owner_alive                       1 if the owner named in DIR/pid is alive, else 0
  tableroll_owner_pid                         the live owner's pid
  tableroll_owner_generation                  the live owner's generation, from its entries
  tableroll_upgrade_in_progress               1 while a newcomer holds the lock, else 0
  tableroll_journal_handoffs{result=\"ok\"}     handed_over entries
  tableroll_journal_handoffs{result=\"failed\"} handoff_failed entries
  tableroll_journal_rollbacks                 rolled_back entries
  tableroll_last_handoff_seconds              the last handoff's duration (handoff_ms)
  tableroll_last_handoff_timestamp_seconds    when the last handoff ended (Unix time)
  tableroll_last_handoff_descriptors          descriptors the last handoff passed on
  tableroll_last_ready_seconds                the last new owner's time in ready() (ready_ms)
  tableroll_journal_entries                   entries read from the journal
  tableroll_journal_skipped_lines             lines of the journal that are not entries
  tableroll_journal_oldest_timestamp_seconds  when the oldest entry was written (Unix time)

Exit status (the status, without --history, --watch or --format openmetrics):
  0  an owner is alive, or a handover is in progress: a new process holding the lock and a \
live socket is taking over from an owner that handed over to it
  1  there is no live owner: no owner file, an empty or invalid one, or the owner's socket \
is not live (and no handover is in progress)
  2  DIR cannot be read (missing, not a directory, no permission) or /proc/net/unix cannot \
be read

With --history or --format openmetrics: 0 once printed (whether or not an owner is alive; \
the metrics say), 2 if DIR or its journal cannot be read. With --watch: 0 when stopped by \
SIGINT or SIGTERM (or when a write finds stdout closed), 2 if DIR or its journal cannot be read or \
watched, or DIR goes away.";

/// Exit status when an owner is alive.
const ALIVE: u8 = 0;
/// Exit status when there is no live owner.
const NO_OWNER: u8 = 1;
/// Exit status when the directory or the kernel's tables cannot be read.
const FAILED: u8 = 2;

pub fn run(args: &StatusArgs) -> ExitCode {
    let format = args.format();
    if format == Format::Openmetrics && (args.watch || args.history.is_some()) {
        eprintln!("tableroll status: --format openmetrics shows the group now; it goes with neither --history nor --watch");
        return ExitCode::from(FAILED);
    }
    match (args.watch, args.history) {
        (true, history) => run_watch(args, history, format == Format::Json),
        (false, Some(count)) => run_history(args, count, format == Format::Json),
        (false, None) if format == Format::Openmetrics => run_metrics(args),
        (false, None) => run_status(args, format == Format::Json),
    }
}

fn run_history(args: &StatusArgs, count: usize, json: bool) -> ExitCode {
    if let Err(e) = history::check_dir(&args.dir) {
        return failed(&e);
    }
    let read = match inspect::read_journal(&args.dir) {
        Ok(read) => read,
        Err(e) => return failed(&e),
    };
    // As the plain status's JSON shows it: absolute, symbolic links kept.
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    match history::print(&dir, &read, count, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&format!("writing the history: {e}")),
    }
}

fn run_watch(args: &StatusArgs, history: Option<usize>, json: bool) -> ExitCode {
    match watch::follow(&args.dir, history, json) {
        Ok(watch::Stopped::Signalled | watch::Stopped::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => failed(&format!("{e:#}")),
    }
}

fn run_metrics(args: &StatusArgs) -> ExitCode {
    let read = inspect::inspect(&args.dir).and_then(|status| Ok((status, inspect::read_journal(&args.dir)?)));
    let (status, journal) = match read {
        Ok(read) => read,
        Err(e) => return failed(&e),
    };
    let mut out = io::stdout().lock();
    match out.write_all(metrics::exposition(&status, &journal).as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&format!("writing the metrics: {e}")),
    }
}

/// Says `error` on stderr; the exit status for it.
fn failed(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tableroll status: {error}");
    ExitCode::from(FAILED)
}

fn run_status(args: &StatusArgs, json: bool) -> ExitCode {
    let status = match inspect::inspect(&args.dir) {
        Ok(status) => status,
        Err(e) => return failed(&e),
    };
    let printed = if json { print_json(&status) } else { print_text(&status) };
    if let Err(e) = printed {
        return failed(&format!("writing the report: {e}"));
    }
    ExitCode::from(if is_served(&status) { ALIVE } else { NO_OWNER })
}

/// Whether a process of the group holds the sockets: the owner is alive, or a newcomer is
/// taking over from an owner that handed over (its socket is gone, or the owner file is being
/// rewritten), not from one that crashed (its socket is stale).
fn is_served(status: &DirectoryStatus) -> bool {
    status.owner.alive || (status.handover.is_some() && !owner_socket_is_stale(status))
}

fn owner_socket_is_stale(status: &DirectoryStatus) -> bool {
    status.sockets.iter().any(|s| s.owner && s.state == SocketState::Stale)
}

/// The JSON report: the library's status and the verdict.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    status: &'a DirectoryStatus,
    verdict: String,
}

fn print_json(status: &DirectoryStatus) -> io::Result<()> {
    let report = Report { status, verdict: verdict(status) };
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)
}

/// The width of the label column.
const LABEL: usize = 11;

fn print_text(status: &DirectoryStatus) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut line = |label: &str, text: &str| writeln!(out, "{label:<LABEL$} {text}");
    line("directory", &printable(&status.dir.to_string_lossy()))?;
    line("owner", &owner_line(status))?;
    line("upgrade", &upgrade_line(status))?;
    let names = entry_names(status);
    let width = names.iter().map(|name| name.chars().count()).max().unwrap_or(0);
    let sockets = status.sockets.iter().zip(&names).map(|(socket, name)| socket_line(socket, name, width));
    print_list(&mut line, "sockets", sockets.collect())?;
    let strange = status.unexpected.iter().zip(&names[status.sockets.len()..]);
    let strange = strange.map(|(entry, name)| format!("{name:<width$}  {}", kind_name(entry.kind)));
    print_list(&mut line, "unexpected", strange.collect())?;
    line("verdict", &verdict(status))
}

/// Prints `items` under `label`, the label on the first line only; `none` if there are none.
fn print_list(
    line: &mut impl FnMut(&str, &str) -> io::Result<()>,
    label: &str,
    items: Vec<String>,
) -> io::Result<()> {
    if items.is_empty() {
        return line(label, "none");
    }
    for (i, item) in items.iter().enumerate() {
        line(if i == 0 { label } else { "" }, item)?;
    }
    Ok(())
}

/// The printable names of the sockets (`<id>.sock`), then of the unexpected entries, so that
/// both lists share one column width.
fn entry_names(status: &DirectoryStatus) -> Vec<String> {
    let sockets = status.sockets.iter().map(|s| printable(&format!("{}.sock", s.id)));
    sockets.chain(status.unexpected.iter().map(|e| printable(&e.name))).collect()
}

fn owner_line(status: &DirectoryStatus) -> String {
    let owner = &status.owner;
    match (owner.file, &owner.id) {
        (OwnerFile::Missing, _) => "none (no owner file)".to_owned(),
        (OwnerFile::Empty, _) => "none (the owner file is empty)".to_owned(),
        (OwnerFile::Valid, Some(id)) if owner.alive => {
            format!("{}: alive, {}", printable(id), pid(owner.pid))
        }
        (OwnerFile::Valid, Some(id)) => format!("{}: dead ({})", printable(id), dead_owner_reason(status)),
        _ => format!("invalid: {}", printable(owner.problem.as_deref().unwrap_or("unreadable owner file"))),
    }
}

/// Why the owner named in the owner file is not alive.
fn dead_owner_reason(status: &DirectoryStatus) -> String {
    let id = status.owner.id.as_deref().unwrap_or_default();
    let name = format!("{id}.sock");
    if status.sockets.iter().any(|s| s.owner) {
        "its upgrade socket is stale: its process is gone".to_owned()
    } else if let Some(entry) = status.unexpected.iter().find(|e| e.name == name) {
        format!("{} is not a socket but a {}", printable(&name), kind_name(entry.kind))
    } else {
        format!("it has no upgrade socket {}", printable(&name))
    }
}

fn upgrade_line(status: &DirectoryStatus) -> String {
    let lock = &status.lock;
    match lock.held {
        LockHeld::Yes => match &status.handover {
            Some(handover) => {
                format!(
                    "in progress: {} is taking over; the lock is held by pid {}",
                    printable(&handover.id),
                    handover.pid
                )
            }
            None => format!("in progress: the lock is held by {}", pid(lock.holder_pid)),
        },
        LockHeld::No => "none in progress (the lock is free)".to_owned(),
        _ => format!("unknown: {}", lock.problem.as_deref().unwrap_or("the lock table cannot be read")),
    }
}

fn socket_line(socket: &SocketStatus, name: &str, width: usize) -> String {
    let state = match socket.state {
        SocketState::Live => format!("live   {}", pid(socket.pid)),
        _ => "stale".to_owned(),
    };
    let role = match (socket.owner, socket.standby) {
        (true, false) => "  (owner)",
        (true, true) => "  (owner, handing over)",
        (false, true) => "  (standby: holds the listeners)",
        (false, false) => "",
    };
    format!("{name:<width$}  {state}{role}")
}

fn pid(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid not visible".to_owned(),
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::RegularFile => "regular file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Socket => "socket",
        EntryKind::Fifo => "named pipe",
        EntryKind::BlockDevice => "block device",
        EntryKind::CharDevice => "character device",
        _ => "unknown kind",
    }
}

/// The one-line judgement: whether the group is served, and what happens next.
fn verdict(status: &DirectoryStatus) -> String {
    let upgrading = status.lock.held == LockHeld::Yes;
    let owner = &status.owner;
    match owner.file {
        _ if owner.alive && upgrading => "OK: the owner is serving; an upgrade is in progress".to_owned(),
        _ if owner.alive => "OK: the owner is serving".to_owned(),
        _ if is_served(status) => "OK: a handover is in progress; the new process holds the sockets and is \
                                   taking over"
            .to_owned(),
        OwnerFile::Invalid => "NO OWNER: the owner file is invalid; new processes refuse to start until \
                               it is fixed or removed"
            .to_owned(),
        OwnerFile::Valid if upgrading => {
            "NO OWNER: the owner is gone; a new process is taking over".to_owned()
        }
        OwnerFile::Valid => {
            "NO OWNER: the owner is gone; the next process to start takes over with fresh descriptors"
                .to_owned()
        }
        _ if upgrading => "NO OWNER yet: the first process is starting".to_owned(),
        _ => "NO OWNER: no process has become owner yet".to_owned(),
    }
}

/// `text` with control characters escaped, so that a file name cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters() {
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(printable("ünï code"), "ünï code");
    }
}
