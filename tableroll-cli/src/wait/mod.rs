//! `tableroll wait`: the verdict on the next upgrade of a group, for whoever started it.
//!
//! It follows the group's journal from its end (the library's [`JournalFollower`]), then reads
//! the owner: the attempt judged is the next one against that owner (`--from`), and [`judge`]
//! decides it from the journal's entries and the exits of the processes involved. Nothing in the group is
//! disturbed: the directory is watched with inotify, the processes with pidfds ([`crate::sys`]).
//!
//! The order closes the gaps: the directory is watched before the journal is followed, so no
//! line appended later goes unnoticed; the journal is followed before the owner is read, so an
//! upgrade that commits in between is in the first entries read (and the owner it replaced is
//! judged against, [`judge::owner_before`]); and each process's exit is sampled before the
//! journal is read, so whatever it wrote before it exited counts before its exit does.
//!
//! The rules, in [`judge::Judge`]: the newcomer is the first member whose `joined` (or
//! `committed`) names the owner as `from` (`previous`). Success: it committed (its `committed`,
//! or the owner's `handed_over`), and the owner stepped down (`stepped_down`; with
//! `after_probation` after an `on_probation`) or exited; with no live owner, the commit alone.
//! Failure: its `ready_failed` (by kind: refused, timed out, other), the owner's `handoff_failed`
//! of kind `Timeout` for it (its upgrade timeout passed before the newcomer was ready: timed
//! out), its `stopped` or its exit before a commit, another member joining from the owner after
//! it, the exit of a process whose handoff the owner gave up (`handoff_failed`) before it
//! joined, or the owner's `rolled_back`.

mod judge;

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use tableroll::inspect::{self, JournalEntry, JournalFollower};

use crate::duration::parse_duration;
use crate::run::signals::SignalPipe;
use crate::sys::{wait_readable, FileChange, FileWatch, ProcessExit};
use judge::{Judge, Newcomer, Success, Verdict};

/// Arguments of `tableroll wait`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct WaitArgs {
    /// The coordination directory of the upgrade group.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Judge the next attempt to take over from the owner with this id (default: the owner
    /// when `wait` starts).
    #[arg(long, value_name = "OWNER_ID")]
    pub from: Option<String>,
    /// Give up after this long (as in 500ms, 90s or 2m), with exit status 2. Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print JSON lines instead of text: `{"event": "watching", "dir", "from"}` first, then
    /// `{"event": "verdict", "verdict": "succeeded" | "failed" | "timed_out" | "interrupted", "from",
    /// "new_owner", "how", "reason", "newcomer", "newcomer_pid", "message"}`.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Start it before the next instance, and wait for it: only what happens after it started \
counts. Once it watches the group it prints one line on stdout (`watching DIR: ...`, or the \
`watching` JSON line); a script that must not start the next instance before that reads this \
line first.

The attempt judged is the next one against the owner FROM: the first process to join the group \
from it (with no live owner, the first process to join at all). It succeeds once that process \
became the owner (it committed) and FROM let it: FROM stepped down, after its probation if it \
has one, or exited. It fails at the first sign that it cannot: the newcomer's ready() failed \
(the owner refused it, a timeout ran out, another error), FROM's upgrade timeout passed before \
the newcomer was ready (timed out), the newcomer stopped or died before \
it was ready (it exited, or another process joined after it), or, after it took over, it died \
during FROM's probation and FROM rolled back. A FROM that is not the owner when wait starts \
is judged by its journal lines alone (its exit is not watched). One attempt is judged: a second one after a \
failure is not waited for.

SIGTERM or SIGINT end the wait after one last look at the journal and the processes: a script \
whose `systemctl start` failed sends SIGTERM, and gets the verdict if the new process joined \
the group at all (its end is written, or it is dead, by the time systemd reports the failure).

The verdict comes from the group's journal (DIR/journal) and the exits of the processes it \
names, watched with pidfds: wait must run in the group's PID namespace, and the group's \
members must write the journal (tableroll's library and `tableroll run` do).

Exit status:
  0  the newcomer took over (and passed FROM's probation, if FROM has one): the result on \
stdout (with --json, every line is on stdout)
  1  the attempt failed: why on stderr (refused, timed out, died or stopped before it was \
ready, rolled back)
  2  no verdict: the timeout ran out first, or SIGTERM or SIGINT came (what was seen so far \
on stderr); also bad usage
  3  DIR cannot be watched or read (missing, not a directory, no permission), or it was \
removed or moved away during the wait (after one last look at the journal)";

/// Exit status when the newcomer took over.
const SUCCEEDED: u8 = 0;
/// Exit status when the attempt failed.
const FAILED: u8 = 1;
/// Exit status when the timeout ran out.
const TIMED_OUT: u8 = 2;
/// Exit status when the directory cannot be watched or read.
const BROKEN: u8 = 3;

/// How the wait ended.
enum Outcome {
    Judged(Verdict),
    /// No verdict: the timeout ran out, or a signal came (its name); where the attempt stands.
    TimedOut(Option<&'static str>, String),
}

pub fn run(args: &WaitArgs) -> ExitCode {
    let outcome = Watch::start(args).and_then(|mut watch| {
        watch.announce(args);
        Ok((watch.until_verdict()?, watch.judge))
    });
    match outcome {
        Ok((outcome, judge)) => report(args, judge.from(), &outcome),
        Err(e) => {
            eprintln!("tableroll wait: {e}");
            ExitCode::from(BROKEN)
        }
    }
}

/// What is watched: the journal, and the processes of the attempt.
struct Watch {
    dir: PathBuf,
    judge: Judge,
    journal_watch: FileWatch,
    follower: JournalFollower,
    /// Entries read before the owner was, judged first.
    backlog: Vec<JournalEntry>,
    from_exit: Watched,
    newcomer_exit: Watched,
    deadline: Option<Instant>,
    /// SIGTERM and SIGINT: one last look, then the verdict or none.
    signals: SignalPipe,
}

/// A process whose exit may decide the verdict.
enum Watched {
    /// Not known (yet), or its exit cannot be watched.
    Unknown,
    /// Alive when last seen.
    Alive(u32, ProcessExit),
    /// Exited.
    Gone(u32),
}

impl Watched {
    fn start(pid: Option<u32>) -> anyhow::Result<Watched> {
        let Some(pid) = pid else { return Ok(Watched::Unknown) };
        Ok(match ProcessExit::watch(pid)? {
            Some(exit) => Watched::Alive(pid, exit),
            None => Watched::Gone(pid),
        })
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Watched::Unknown => None,
            Watched::Alive(pid, _) | Watched::Gone(pid) => Some(*pid),
        }
    }

    /// Whether the process exited, seen now.
    fn check(&mut self) -> io::Result<bool> {
        if let Watched::Alive(pid, exit) = self {
            if wait_readable(&[exit.as_fd()], Some(Duration::ZERO))?[0] {
                *self = Watched::Gone(*pid);
            }
        }
        Ok(matches!(self, Watched::Gone(_)))
    }
}

impl Watch {
    fn start(args: &WaitArgs) -> anyhow::Result<Watch> {
        let deadline = args.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let signals = SignalPipe::catch(&[SIGTERM, SIGINT])?;
        // The directory is watched, then the journal followed, then the owner read: whatever
        // is written after the owner was read is seen, and wakes the wait.
        let journal_watch = FileWatch::new(&args.dir, inspect::JOURNAL_FILE)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", args.dir.display()))?;
        let mut follower = JournalFollower::from_end(&args.dir)?;
        let status = inspect::inspect(&args.dir)?;
        let backlog = follower.read_new()?.entries;
        let (from, from_pid, from_alive) = match (&args.from, &status.owner.id) {
            (Some(from), Some(owner)) if from == owner => {
                (Some(from.clone()), status.owner.pid, status.owner.alive)
            }
            (Some(from), _) => (Some(from.clone()), None, true),
            (None, Some(owner)) if status.owner.alive => {
                // The owner read may be the newcomer of an attempt that began meanwhile.
                match judge::owner_before(&backlog, owner) {
                    Some((previous, pid)) => (Some(previous), pid, true),
                    None => (Some(owner.clone()), status.owner.pid, true),
                }
            }
            (None, _) => (None, None, false),
        };
        let from_exit = if from_alive { Watched::start(from_pid)? } else { Watched::Unknown };
        Ok(Watch {
            dir: args.dir.clone(),
            judge: Judge::new(from, from_alive),
            journal_watch,
            follower,
            backlog,
            from_exit,
            newcomer_exit: Watched::Unknown,
            deadline,
            signals,
        })
    }

    /// The line that says the wait has begun.
    fn announce(&self, args: &WaitArgs) {
        let dir = args.dir.display();
        let line = if args.json {
            json!({ "event": "watching", "dir": args.dir, "from": self.judge.from() }).to_string()
        } else {
            match self.judge.from() {
                Some(from) => format!("watching {dir}: judging the next upgrade from owner {from}"),
                None => format!("watching {dir}: no live owner; judging the first process to join"),
            }
        };
        print_line(&line);
    }

    fn until_verdict(&mut self) -> anyhow::Result<Outcome> {
        let mut entries = std::mem::take(&mut self.backlog);
        let mut directory_gone = false;
        loop {
            // A signal is answered after a whole look that began after it: whatever happened
            // before the signal counts. So is the directory going away.
            let signal = self.signals.take().first().copied();
            if let Some(verdict) = self.look(&mut entries)? {
                return Ok(Outcome::Judged(verdict));
            }
            if let Some(signal) = signal {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                return Ok(Outcome::TimedOut(Some(name), self.judge.progress()));
            }
            if directory_gone {
                // Nothing written from now on can be seen: waiting on would last until the
                // timeout, or for ever without one.
                anyhow::bail!(
                    "{} was removed or moved away during the wait, so no verdict can come: {}",
                    self.dir.display(),
                    self.judge.progress()
                );
            }
            match self.sleep()? {
                Wake::Event => {}
                Wake::DirectoryGone => directory_gone = true,
                Wake::DeadlinePassed => return Ok(Outcome::TimedOut(None, self.judge.progress())),
            }
        }
    }

    /// Reads what was written and sees who exited: the verdict, if that decides it.
    fn look(&mut self, entries: &mut Vec<JournalEntry>) -> anyhow::Result<Option<Verdict>> {
        loop {
            // The exits are seen before the journal is read: whatever a process wrote before
            // it exited is read below, before its exit counts.
            let from_gone = self.from_exit.check()?;
            let newcomer_gone = self.newcomer_exit.check()?;
            entries.extend(self.follower.read_new()?.entries);
            for entry in entries.drain(..) {
                if let Some(verdict) = self.judge.see(&entry) {
                    return Ok(Some(verdict));
                }
            }
            if self.watch_newcomer()? {
                // A newcomer just watched may have exited already: look again.
                continue;
            }
            let newcomer_died = if newcomer_gone { self.judge.newcomer_died() } else { None };
            let from_died = if from_gone { self.judge.owner_died() } else { None };
            return Ok(newcomer_died.or(from_died));
        }
    }

    /// Watches the newcomer's exit once its pid is known; whether it started to.
    fn watch_newcomer(&mut self) -> anyhow::Result<bool> {
        let pid = self.judge.newcomer().and_then(|n| n.pid);
        if pid.is_none() || pid == self.newcomer_exit.pid() {
            return Ok(false);
        }
        self.newcomer_exit = Watched::start(pid)?;
        Ok(true)
    }

    /// Waits for a change in the directory, an exit or a signal, or for the deadline.
    fn sleep(&mut self) -> anyhow::Result<Wake> {
        let timeout = match self.deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Ok(Wake::DeadlinePassed),
            },
            None => None,
        };
        let mut fds = vec![self.journal_watch.fd(), self.signals.fd()];
        for watched in [&self.from_exit, &self.newcomer_exit] {
            if let Watched::Alive(_, exit) = watched {
                fds.push(exit.as_fd());
            }
        }
        wait_readable(&fds, timeout)?;
        // Whatever the events say, the next look reads the journal.
        Ok(match self.journal_watch.changes()? {
            FileChange::DirectoryGone => Wake::DirectoryGone,
            FileChange::None | FileChange::Changed => Wake::Event,
        })
    }
}

/// Why [`Watch::sleep`] returned.
enum Wake {
    /// A change in the directory, an exit or a signal (or nothing, on a spurious wake-up).
    Event,
    /// The directory was removed or moved: one last look, and no more.
    DirectoryGone,
    /// The deadline passed.
    DeadlinePassed,
}

/// Prints the verdict and turns it into the exit status.
fn report(args: &WaitArgs, from: Option<&str>, outcome: &Outcome) -> ExitCode {
    let code = match outcome {
        Outcome::Judged(Verdict::Succeeded { .. }) => SUCCEEDED,
        Outcome::Judged(Verdict::Failed { .. }) => FAILED,
        Outcome::TimedOut(..) => TIMED_OUT,
    };
    let timeout = args.timeout.map(|t| format!("{t:?}")).unwrap_or_default();
    if args.json {
        print_line(&json_verdict(from, outcome, &timeout).to_string());
        return ExitCode::from(code);
    }
    match outcome {
        Outcome::Judged(Verdict::Succeeded { new_owner, how }) => {
            print_line(&format!("{new_owner} took over{}", success_words(from.unwrap_or_default(), *how)))
        }
        Outcome::Judged(Verdict::Failed { message, .. }) => eprintln!("tableroll wait: {message}"),
        Outcome::TimedOut(..) => eprintln!("tableroll wait: {}", no_verdict(outcome, &timeout)),
    }
    ExitCode::from(code)
}

fn success_words(from: &str, how: Success) -> String {
    match how {
        Success::SteppedDown => format!(" from {from}, which stepped down"),
        Success::ProbationPassed => format!(" from {from}, whose probation passed"),
        Success::NoOwner => " (there was no live owner to take over from)".to_owned(),
        Success::FromGone => format!(" from {from}, which exited"),
    }
}

fn json_verdict(from: Option<&str>, outcome: &Outcome, timeout: &str) -> serde_json::Value {
    match outcome {
        Outcome::Judged(Verdict::Succeeded { new_owner, how }) => json!({
            "event": "verdict", "verdict": "succeeded", "from": from, "new_owner": new_owner,
            "how": how_word(*how),
        }),
        Outcome::Judged(Verdict::Failed { reason, newcomer, message }) => {
            let Newcomer { id, pid } = newcomer;
            json!({
                "event": "verdict", "verdict": "failed", "from": from, "reason": reason.word(),
                "newcomer": id, "newcomer_pid": pid, "message": message,
            })
        }
        Outcome::TimedOut(signal, _) => json!({
            "event": "verdict", "verdict": if signal.is_some() { "interrupted" } else { "timed_out" },
            "from": from,
            "message": no_verdict(outcome, timeout),
        }),
    }
}

/// Why there is no verdict, and where the attempt stands.
fn no_verdict(outcome: &Outcome, timeout: &str) -> String {
    match outcome {
        Outcome::TimedOut(Some(signal), progress) => format!("no verdict before {signal}: {progress}"),
        Outcome::TimedOut(None, progress) => format!("no verdict within {timeout}: {progress}"),
        Outcome::Judged(_) => String::new(),
    }
}

fn how_word(how: Success) -> &'static str {
    match how {
        Success::SteppedDown => "stepped_down",
        Success::ProbationPassed => "probation_passed",
        Success::NoOwner => "no_owner",
        Success::FromGone => "from_exited",
    }
}

/// One line on stdout, flushed at once (a script may be waiting for it). A reader that is gone
/// is no error: the exit status still tells the verdict.
fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
