//! The verdict on one upgrade attempt, from the journal's entries and the deaths of the
//! processes involved: no system calls here, so every rule is unit-tested below.
//!
//! The attempt is against `from`, the owner when `wait` started (or `None`: there was no live
//! owner). The first member to join from it (any member, with no `from`) is the newcomer; the
//! attempt ends at its first failure, or at its success once `from` decided (see [`Judge`]).

use tableroll::inspect::JournalEntry;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A new owner committed and `from` let it be (no probation, or the probation passed, or
    /// `from` is gone).
    Succeeded { new_owner: String, how: Success },
    /// The attempt failed; `from` (if alive) is still the owner.
    Failed { reason: Reason, newcomer: Newcomer, message: String },
}

/// Why an attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// `from` stepped down without probation.
    SteppedDown,
    /// `from` stepped down once its probation passed.
    ProbationPassed,
    /// There was no live owner to step down.
    NoOwner,
    /// `from` exited before it stepped down.
    FromGone,
}

/// Why an attempt failed: the word in the first line of the message, and in `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The owner did not accept the newcomer's ready handshake.
    Refused,
    /// A bounded wait of the newcomer's ran out.
    TimedOut,
    /// The newcomer's `ready()` failed otherwise.
    ReadyFailed,
    /// The newcomer stopped (gave up) before it was ready.
    Stopped,
    /// The newcomer died before it was ready.
    Died,
    /// The handoff to a process that never joined failed, and the process is gone.
    HandoffFailed,
    /// The newcomer took over and died during `from`'s probation: `from` owns again.
    RolledBack,
}

impl Reason {
    pub fn word(self) -> &'static str {
        match self {
            Reason::Refused => "refused",
            Reason::TimedOut => "timed_out",
            Reason::ReadyFailed => "ready_failed",
            Reason::Stopped => "stopped",
            Reason::Died => "died",
            Reason::HandoffFailed => "handoff_failed",
            Reason::RolledBack => "rolled_back",
        }
    }
}

/// The newcomer of the attempt, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Newcomer {
    /// Its id, once it joined.
    pub id: Option<String>,
    /// Its pid, as it recorded it (or as `from` saw it connect).
    pub pid: Option<u32>,
}

impl Newcomer {
    /// `ID (pid PID)`, `pid PID` or `the newcomer`.
    pub fn describe(&self) -> String {
        match (&self.id, self.pid) {
            (Some(id), Some(pid)) => format!("{id} (pid {pid})"),
            (Some(id), None) => id.clone(),
            (None, Some(pid)) => format!("pid {pid}"),
            (None, None) => "the newcomer".to_owned(),
        }
    }
}

/// Follows one attempt against `from` through the journal's entries.
#[derive(Debug)]
pub struct Judge {
    from: Option<String>,
    /// Whether `from`'s decision (probation or not) is awaited after the commit: it was alive
    /// when `wait` started.
    await_from: bool,
    newcomer: Option<Newcomer>,
    /// The id that became the owner, once known.
    new_owner: Option<String>,
    /// `from` recorded `on_probation`.
    on_probation: bool,
    /// What `from` said when a handoff to the newcomer failed.
    handoff_failure: Option<String>,
}

impl Judge {
    /// Judges the next attempt against `from` (`None`: there is no live owner, the first
    /// member to join is judged); `from_alive`: whether `from` was alive when `wait` started.
    pub fn new(from: Option<String>, from_alive: bool) -> Judge {
        let await_from = from_alive && from.is_some();
        Judge {
            from,
            await_from,
            newcomer: None,
            new_owner: None,
            on_probation: false,
            handoff_failure: None,
        }
    }

    /// The owner the attempt is against (`None`: there was no live owner).
    pub fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    pub fn newcomer(&self) -> Option<&Newcomer> {
        self.newcomer.as_ref()
    }

    /// Takes one journal entry into account; the verdict if it decides the attempt.
    pub fn see(&mut self, entry: &JournalEntry) -> Option<Verdict> {
        if self.from.as_deref() == Some(entry.id.as_str()) {
            return self.see_from(entry);
        }
        let is_newcomer = self.newcomer.as_ref().is_some_and(|n| n.id.as_deref() == Some(entry.id.as_str()));
        match entry.event.as_str() {
            "joined" if !is_newcomer && self.is_attempt(entry, "from") => self.another_joined(entry),
            "committed" if is_newcomer => self.commit(entry),
            "committed" if self.new_owner.is_none() && self.is_attempt(entry, "previous") => {
                self.another_joined(entry).or_else(|| self.commit(entry))
            }
            "ready_failed" if is_newcomer && self.new_owner.is_none() => Some(self.ready_failed(entry)),
            "stopped" if is_newcomer && self.new_owner.is_none() => Some(self.fail(
                Reason::Stopped,
                format!("{} gave up before it was ready (it stopped){}", self.describe(), self.owner_said()),
            )),
            _ => None,
        }
    }

    /// Whether `entry` (a `joined` or `committed` whose `field` names who it came from) starts
    /// the attempt: it came from `from`, or there is no `from` and no newcomer yet.
    fn is_attempt(&self, entry: &JournalEntry, field: &str) -> bool {
        match &self.from {
            Some(from) => entry.text(field) == Some(from.as_str()),
            None => self.newcomer.is_none(),
        }
    }

    /// A member joined from `from`: the newcomer, unless one joined before it. The lock lets
    /// one newcomer in at a time, so that one let go before it was ready: the verdict.
    fn another_joined(&mut self, entry: &JournalEntry) -> Option<Verdict> {
        if self.new_owner.is_some() {
            return None;
        }
        let (reason, what) = match &self.newcomer {
            Some(Newcomer { id: Some(_), .. }) => (Reason::Died, ""),
            Some(Newcomer { id: None, pid: Some(pid) }) if *pid != entry.pid => {
                (Reason::HandoffFailed, " (the handoff to it failed)")
            }
            _ => {
                self.join(entry);
                return None;
            }
        };
        let message = format!(
            "{}{what} let go of the group before it was ready: {} came after it{}",
            self.describe(),
            entry.id,
            self.owner_said()
        );
        Some(self.fail(reason, message))
    }

    /// The newcomer of `entry` committed: the verdict unless `from`'s decision is awaited.
    fn commit(&mut self, entry: &JournalEntry) -> Option<Verdict> {
        self.join(entry);
        self.new_owner = Some(entry.id.clone());
        if self.await_from {
            return None;
        }
        Some(Verdict::Succeeded { new_owner: entry.id.clone(), how: Success::NoOwner })
    }

    /// The member of `entry` is the newcomer (a handoff `from` failed may have named its pid).
    fn join(&mut self, entry: &JournalEntry) {
        let newcomer = self.newcomer.get_or_insert_with(Newcomer::default);
        if newcomer.id.is_none() {
            newcomer.id = Some(entry.id.clone());
        }
        newcomer.pid = Some(entry.pid);
    }

    /// The new owner `entry` of `from` names, else the one named before.
    fn new_owner_in(&self, entry: &JournalEntry) -> Option<String> {
        entry.text("new_owner").map(str::to_owned).or_else(|| self.new_owner.clone())
    }

    fn see_from(&mut self, entry: &JournalEntry) -> Option<Verdict> {
        match entry.event.as_str() {
            "handed_over" => {
                self.new_owner = self.new_owner_in(entry);
                None
            }
            "handoff_failed" => self.handoff_failed(entry),
            "on_probation" => {
                self.on_probation = true;
                self.new_owner = self.new_owner_in(entry);
                None
            }
            "stepped_down" => {
                let new_owner = self.new_owner_in(entry)?;
                let after_probation = entry.fields.get("after_probation").and_then(|v| v.as_bool());
                let how = if after_probation == Some(true) {
                    Success::ProbationPassed
                } else {
                    Success::SteppedDown
                };
                Some(Verdict::Succeeded { new_owner, how })
            }
            "rolled_back" => {
                let failed = entry.text("failed_owner").unwrap_or("the new owner").to_owned();
                if self.newcomer.is_none() {
                    self.newcomer = Some(Newcomer { id: Some(failed.clone()), pid: None });
                }
                let from = self.from.clone().unwrap_or_default();
                Some(self.fail(
                    Reason::RolledBack,
                    format!("rolled back: {failed} died during the probation of {from}, the owner again"),
                ))
            }
            _ => None,
        }
    }

    /// `from` gave up a handoff. Its upgrade timeout passing decides: the newcomer was not
    /// ready in time and can no longer take over from `from`. Any other failure is kept to
    /// explain the newcomer's end, which decides.
    fn handoff_failed(&mut self, entry: &JournalEntry) -> Option<Verdict> {
        if self.new_owner.is_some() {
            return None;
        }
        let pid = entry.number("newcomer_pid").map(|pid| pid as u32);
        let newcomer = self.newcomer.get_or_insert(Newcomer { id: None, pid });
        if newcomer.pid.is_some() && pid.is_some() && newcomer.pid != pid {
            return None;
        }
        let kind = entry.text("kind").unwrap_or("unknown");
        let reason = entry.text("reason").unwrap_or("no reason given");
        self.handoff_failure = Some(format!("{kind}: {reason}"));
        if kind != "Timeout" {
            return None;
        }
        let from = self.from.clone().unwrap_or_default();
        let message = format!(
            "timed out: {from} gave up waiting for {} to be ready (its upgrade timeout)",
            self.describe()
        );
        Some(self.fail(Reason::TimedOut, format!("{message}{}", self.owner_said())))
    }

    fn ready_failed(&mut self, entry: &JournalEntry) -> Verdict {
        let kind = entry.text("kind").unwrap_or("unknown");
        let why = entry.text("reason").unwrap_or("no reason given");
        let who = self.describe();
        let (reason, message) = match kind {
            "OwnerRefused" => (Reason::Refused, format!("refused: the owner did not accept {who}: {why}")),
            "Timeout" => (Reason::TimedOut, format!("timed out: {who} could not become the owner: {why}")),
            _ => (Reason::ReadyFailed, format!("{who} could not become the owner ({kind}): {why}")),
        };
        self.fail(reason, format!("{message}{}", self.owner_said()))
    }

    /// The newcomer's process is gone (its death seen after every line it wrote was read).
    pub fn newcomer_died(&mut self) -> Option<Verdict> {
        if self.new_owner.is_some() {
            return None;
        }
        let newcomer = self.newcomer.as_ref()?;
        let (reason, message) = match (&newcomer.id, &self.handoff_failure) {
            (Some(_), _) => (Reason::Died, format!("{} died before it was ready", self.describe())),
            (None, Some(_)) => (
                Reason::HandoffFailed,
                format!("the handoff to {} failed and it exited without joining", self.describe()),
            ),
            (None, None) => return None,
        };
        Some(self.fail(reason, format!("{message}{}", self.owner_said())))
    }

    /// The process of `from` is gone: after a commit, nobody is left to roll back to.
    pub fn owner_died(&mut self) -> Option<Verdict> {
        let new_owner = self.new_owner.clone()?;
        Some(Verdict::Succeeded { new_owner, how: Success::FromGone })
    }

    /// Where the attempt stands, for a wait that ran out of time.
    pub fn progress(&self) -> String {
        let from = self.from.as_deref().unwrap_or("(no live owner)");
        match (&self.newcomer, &self.new_owner) {
            (_, Some(new_owner)) if self.on_probation => {
                format!("{new_owner} took over; the probation of {from} has not ended")
            }
            (_, Some(new_owner)) => format!("{new_owner} took over; {from} has not stepped down yet"),
            (Some(_), None) => format!("{} joined but did not become the owner yet", self.describe()),
            (None, None) if self.from.is_some() => format!("no newcomer joined from {from}"),
            (None, None) => "no member joined the group".to_owned(),
        }
    }

    fn describe(&self) -> String {
        self.newcomer.as_ref().map_or_else(|| "the newcomer".to_owned(), Newcomer::describe)
    }

    fn owner_said(&self) -> String {
        match (&self.handoff_failure, &self.from) {
            (Some(failure), Some(from)) => format!(" ({from} gave up the handoff: {failure})"),
            _ => String::new(),
        }
    }

    fn fail(&self, reason: Reason, message: String) -> Verdict {
        Verdict::Failed { reason, newcomer: self.newcomer.clone().unwrap_or_default(), message }
    }
}

/// When the owner changed between the journal being followed and the owner file being read
/// (`owner` committed in the entries read since), the owner it took over from: the attempt was
/// against that one, and is in the entries already.
pub fn owner_before(entries: &[JournalEntry], owner: &str) -> Option<(String, Option<u32>)> {
    let committed = entries.iter().find(|e| e.event == "committed" && e.id == owner)?;
    let previous = committed.text("previous")?.to_owned();
    let pid = entries.iter().find(|e| e.id == previous).map(|e| e.pid);
    Some((previous, pid))
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
