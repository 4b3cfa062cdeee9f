//! What a program leaves behind: the workers it forked, still running when it exits.
//!
//! The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`, set before the first program
//! starts): a process of the program's tree whose parent exits is reparented to the
//! supervisor instead of to init. So once the program exited and was reaped, whatever is left of
//! its generation, whichever process group or session it moved to (a `setsid` and a double
//! fork included), is a child of the supervisor, or a descendant of one. The supervisor finds
//! its children in `/proc`, signals each one's process group (or the child alone, if it is in
//! the supervisor's own group), and waits for them to exit and reaps them, until none is left.
//!
//! Why not the process group alone: a worker that left it is out of reach, and an empty group
//! cannot be waited for, only polled, and only while its zombies are reaped by someone else.
//! Why not a cgroup: one can be created only where the supervisor was delegated a subtree
//! (systemd's `Delegate=`), and under systemd the unit's cgroup already ends every process when
//! the service stops. A child of the supervisor cannot be reaped by anyone else, so its pid
//! cannot be reused while it is signalled, nor its process group while it is a member.
//!
//! Being the subreaper, the supervisor must also reap the orphans that exit while the program
//! runs, or they stay zombies: the [`Reaper`] thread does, on each SIGCHLD. It leaves alone the
//! children the supervisor waits for by pid: the programs and their watchdogs, recorded as they
//! are spawned ([`spawn_own`]), and the readiness commands, which run in the supervisor's own
//! process group (no orphan of the program does, unless it moved there).

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};
use serde_json::json;
use signal_hook::consts::SIGCHLD;

use super::log::{ms, Log};
use super::signals::SignalPipe;
use crate::signal_thread::SignalThread;
use crate::sys::wait_readable;

/// The supervisor's children that it waits for by pid (the programs and their watchdogs),
/// until they are reaped. The reaper takes the lock to look, and a spawn holds it until the new
/// child is recorded, so the reaper never takes one for an orphan.
static OWN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn own() -> MutexGuard<'static, BTreeSet<i32>> {
    OWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `spawn` and records the child it started as one the supervisor waits for by pid.
pub fn spawn_own(spawn: impl FnOnce() -> io::Result<std::process::Child>) -> io::Result<std::process::Child> {
    let mut own = own();
    let child = spawn()?;
    own.insert(child.id() as i32);
    Ok(child)
}

/// Forgets a child recorded by [`spawn_own`], once it was reaped.
pub fn reaped_own(pid: u32) {
    own().remove(&(pid as i32));
}

/// Reaps, on a thread of its own, the orphans that exit while the supervisor runs. Its reason
/// to exist is that the supervisor is their subreaper; it stops, and is joined, in [`Reaper::end`].
pub struct Reaper {
    thread: SignalThread,
}

impl Reaper {
    /// Makes the supervisor the reaper of the orphans among its descendants and starts reaping
    /// them as they exit, each logged to `log`. Before the first program starts.
    pub fn start(log: Log) -> io::Result<Reaper> {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        let thread = SignalThread::spawn(&[SIGCHLD], move |_| {
            if let Err(e) = reap_orphans(&log) {
                log.event("reaper", &format!("cannot reap the program's orphans: {e}"), json!({}));
            }
            true
        })?;
        Ok(Reaper { thread })
    }

    /// Ends what is left of the programs this supervisor ran, once the last one exited and
    /// was reaped: each process left gets `stop`, and SIGKILL if it is still there after
    /// `timeout`. Returns when no child of the supervisor is left (all reaped).
    pub fn end(self, stop: Signal, timeout: Duration, log: &Log) -> io::Result<()> {
        // From here on every child is reaped here: none is waited for by pid any more.
        drop(self.thread);
        end(stop, timeout, log)
    }
}

/// Reaps every child that exited and is neither one of the supervisor's own nor in its process
/// group.
fn reap_orphans(log: &Log) -> io::Result<()> {
    let own = own();
    let own_group = rustix::process::getpgrp();
    for (pid, stat) in children_of(rustix::process::getpid().as_raw_pid())? {
        let Some(child) = Pid::from_raw(pid) else { continue };
        if stat.state != "Z" || own.contains(&pid) || stat.group == own_group.as_raw_pid() {
            continue;
        }
        // A zombie child of this process: only this process can reap it.
        if let Ok(Some((_, status))) = rustix::process::waitpid(Some(child), WaitOptions::NOHANG) {
            let fields = json!({ "orphan_pid": pid, "code": status.exit_status(),
                                 "signal": status.terminating_signal() });
            log.event("orphan_exited", "a process the program left running exited", fields);
        }
    }
    Ok(())
}

fn end(stop: Signal, timeout: Duration, log: &Log) -> io::Result<()> {
    // Caught before the first look, so that no exit is missed between a look and a wait.
    let exits = SignalPipe::catch(&[SIGCHLD])?;
    reap_exited()?;
    let mut left = Sweep::new(stop);
    if !left.signal_new()? {
        return Ok(());
    }
    let started = Instant::now();
    log.event(
        "leftovers",
        &format!("processes of the program are still running after it exited; sending {}", signal_name(stop)),
        json!({ "pids": left.children()?, "drain_timeout_ms": timeout.as_millis() as u64 }),
    );
    let deadline = started.checked_add(timeout);
    while left.signal_new()? {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) && left.signal != Signal::KILL {
            log.event(
                "leftovers_killed",
                "processes of the program did not exit within the drain timeout; killing them",
                json!({ "pids": left.children()?, "drain_timeout_ms": timeout.as_millis() as u64 }),
            );
            left = Sweep::new(Signal::KILL);
            continue;
        }
        let wait = deadline.map(|d| d.saturating_duration_since(now));
        let wait = if left.signal == Signal::KILL { None } else { wait };
        wait_readable(&[exits.fd()], wait)?;
        exits.take();
        reap_exited()?;
    }
    log.event("leftovers_ended", "no process of the program is left", json!({ "ms": ms(started.elapsed()) }));
    Ok(())
}

/// One signal sent to every child of the supervisor, each process group once.
struct Sweep {
    signal: Signal,
    own_group: Pid,
    groups: BTreeSet<i32>,
    pids: BTreeSet<i32>,
}

impl Sweep {
    fn new(signal: Signal) -> Sweep {
        Sweep {
            signal,
            own_group: rustix::process::getpgrp(),
            groups: BTreeSet::new(),
            pids: BTreeSet::new(),
        }
    }

    fn children(&self) -> io::Result<Vec<i32>> {
        Ok(children_of(rustix::process::getpid().as_raw_pid())?.into_iter().map(|(pid, _)| pid).collect())
    }

    /// Sends the signal to the children not reached yet (to each one's process group, unless
    /// that is the supervisor's); whether any child is left.
    fn signal_new(&mut self) -> io::Result<bool> {
        let children = self.children()?;
        self.pids.retain(|pid| children.contains(pid));
        for &child in &children {
            let Some(pid) = Pid::from_raw(child) else { continue };
            // An unreaped child keeps its pid, and its group's id while it is a member.
            match rustix::process::getpgid(Some(pid)) {
                Ok(group) if group != self.own_group => {
                    if self.groups.insert(group.as_raw_pid()) {
                        rustix::process::kill_process_group(group, self.signal).ok();
                    }
                }
                _ => {
                    if self.pids.insert(child) {
                        rustix::process::kill_process(pid, self.signal).ok();
                    }
                }
            }
        }
        Ok(!children.is_empty())
    }
}

/// Reaps every child that exited.
fn reap_exited() -> io::Result<()> {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) => {}
            Ok(None) | Err(rustix::io::Errno::CHILD) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The processes whose parent is `parent`, as `/proc` lists them (zombies included).
fn children_of(parent: i32) -> io::Result<Vec<(i32, Stat)>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        // Gone meanwhile, or not readable: not a child of ours (a child stays until reaped).
        let Some(stat) = Stat::of(pid) else { continue };
        if stat.parent == parent {
            children.push((pid, stat));
        }
    }
    Ok(children)
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, PartialEq)]
pub struct Stat {
    /// `R`, `S`, `Z` (exited, not reaped), ...
    pub state: String,
    pub parent: i32,
    pub group: i32,
}

impl Stat {
    /// The stat of process `pid`, if it can be read.
    pub fn of(pid: i32) -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// The fields after the command name, which is in parentheses and may itself contain
    /// spaces and parentheses.
    fn parse(stat: &str) -> Option<Stat> {
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.to_string();
        let parent = fields.next()?.parse().ok()?;
        let group = fields.next()?.parse().ok()?;
        Some(Stat { state, parent, group })
    }

    /// Whether it is a live (not exited) member of `group`.
    pub fn live_in(&self, group: i32) -> bool {
        self.group == group && self.state != "Z" && self.state != "X"
    }
}

fn signal_name(signal: Signal) -> String {
    super::args::Signal(signal.as_raw()).name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_read_after_the_command_name() {
        let stat = |state: &str, parent, group| Some(Stat { state: state.into(), parent, group });
        assert_eq!(Stat::parse("42 (sh) S 7 42 42 0 -1"), stat("S", 7, 42));
        assert_eq!(Stat::parse("42 (a) b) (c) Z 9 1 1"), stat("Z", 9, 1));
        assert_eq!(Stat::parse("42 (sh"), None);
        assert_eq!(Stat::parse("42 (sh) S 7"), None);
    }

    #[test]
    fn a_live_member_of_a_group_is_not_a_zombie() {
        assert!(Stat::parse("42 (a) b) S 7 40 40 0").unwrap().live_in(40));
        assert!(!Stat::parse("42 (sh) Z 7 40 40 0").unwrap().live_in(40));
        assert!(!Stat::parse("42 (sh) S 7 41 41 0").unwrap().live_in(40));
    }

    #[test]
    fn a_child_is_listed_until_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let me = std::process::id() as i32;
        let listed = |pid: u32| children_of(me).unwrap().iter().any(|(p, _)| *p == pid as i32);
        assert!(listed(child.id()));
        child.wait().unwrap();
        assert!(!listed(child.id()));
    }
}
