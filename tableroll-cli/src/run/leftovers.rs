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

use std::collections::BTreeSet;
use std::io;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};
use serde_json::json;
use signal_hook::consts::SIGCHLD;

use super::log::{ms, Log};
use super::signals::SignalPipe;
use crate::sys::wait_readable;

/// Makes this process the reaper of the orphans among its descendants. Idempotent.
pub fn adopt_orphans() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

/// Ends what is left of the programs this supervisor ran, once the last one exited and was
/// reaped: each process left gets `stop`, and SIGKILL if it is still there after `timeout`.
/// Returns when no child of the supervisor is left (all reaped).
pub fn end(stop: Signal, timeout: Duration, log: &Log) -> io::Result<()> {
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
        children_of(rustix::process::getpid().as_raw_pid())
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
fn children_of(parent: i32) -> io::Result<Vec<i32>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        // Gone meanwhile, or not readable: not a child of ours (a child stays until reaped).
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if parent_in_stat(&stat) == Some(parent) {
            children.push(pid);
        }
    }
    Ok(children)
}

/// The parent pid in a `/proc/PID/stat` line: the second field after the command name, which
/// is in parentheses and may itself contain spaces and parentheses.
fn parent_in_stat(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the `/proc/PID/stat` line is of a process in `group` that has not exited (not a
/// zombie).
pub fn live_in_group(stat: &str, group: i32) -> bool {
    let Some(close) = stat.rfind(')') else { return false };
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next();
    let group_field = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
    !matches!(state, Some("Z" | "X") | None) && group_field == Some(group)
}

fn signal_name(signal: Signal) -> String {
    super::args::Signal(signal.as_raw()).name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(parent_in_stat("42 (sh) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_in_stat("42 (a) b) (c) Z 9 1 1"), Some(9));
        assert_eq!(parent_in_stat("42 (sh"), None);
    }

    #[test]
    fn a_live_member_of_a_group_is_not_a_zombie() {
        assert!(live_in_group("42 (a) b) S 7 40 40 0", 40));
        assert!(!live_in_group("42 (sh) Z 7 40 40 0", 40));
        assert!(!live_in_group("42 (sh) S 7 41 41 0", 40));
        assert!(!live_in_group("42 (sh", 40));
    }

    #[test]
    fn a_child_is_listed_until_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let me = std::process::id() as i32;
        assert!(children_of(me).unwrap().contains(&(child.id() as i32)));
        child.wait().unwrap();
        assert!(!children_of(me).unwrap().contains(&(child.id() as i32)));
    }
}
