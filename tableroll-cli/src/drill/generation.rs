//! One generation of the demo server as the drill sees it: a child process, what it reported,
//! and how to stop it.
//!
//! Each child runs in a process group of its own (a Ctrl-C at the terminal reaches only the
//! drill, which then stops its children itself) with stdin, stdout and stderr piped. Its stdout
//! lines are parsed on a reader thread and sent to the drill's event channel; closing its stdin
//! tells it to stop; the drill kills it by its pid if it does not. The reading, the stderr tail
//! and the killing are `tableroll_load`'s [`Child`], shared with the test kit.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::Duration;

use rustix::process::Signal;
use tableroll_load::Child;

use super::args::BreakMode;
use super::events::ServerEvent;
use crate::sys;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;

/// A generation's planned crash, as it reported it.
#[derive(Debug, Clone, Copy)]
pub struct Crash {
    /// Just before it sent itself SIGKILL.
    pub at_ns: u64,
    /// The connections it held open then.
    pub open_connections: u64,
}

/// A generation becoming the owner again after the one that took over from it died.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// The id of the owner that died (`gen-N`).
    pub failed_owner: String,
    /// The library's measure of the rollback.
    pub took_us: u64,
    /// When it was the owner again.
    pub at_ns: u64,
}

impl Rollback {
    /// The number of the generation that died, if the id is one of the drill's.
    pub fn failed_generation(&self) -> Option<u32> {
        self.failed_owner.strip_prefix("gen-")?.parse().ok()
    }
}

/// What the drill's main loop waits for.
#[derive(Debug)]
pub enum Event {
    /// A line from generation `generation`.
    Server {
        /// Which generation.
        generation: u32,
        /// What it said.
        event: ServerEvent,
    },
    /// Generation `generation` closed its stdout: it exited (or is exiting).
    Closed {
        /// Which generation.
        generation: u32,
    },
    /// SIGINT or SIGTERM.
    Interrupted,
}

/// How to start a generation.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// This program.
    pub exe: PathBuf,
    /// The coordination directory.
    pub dir: PathBuf,
    /// Where to serve (the TCP address becomes concrete once generation 0 bound it).
    pub listen: Listen,
    /// Extra listeners.
    pub fds: u32,
    /// Misbehaviour, for tests.
    pub break_server: Option<BreakMode>,
    /// Every generation's probation.
    pub probation: Option<Duration>,
}

/// Where a generation serves.
#[derive(Debug, Clone)]
pub enum Listen {
    /// `--tcp ADDR`.
    Tcp(String),
    /// `--unix PATH`.
    Unix(PathBuf),
}

/// A generation's child process and what it reported so far.
#[derive(Debug)]
pub struct Generation {
    /// Its number.
    pub number: u32,
    /// Its process id.
    pub pid: u32,
    /// When the drill spawned it ([`sys::now_ns`]).
    pub spawned_ns: u64,
    /// Its `listening` event: the address, time in construction and descriptors inherited.
    pub listening: Option<(String, u64, usize)>,
    /// Its `ready` event: time in `ready()`, and when it returned.
    pub ready: Option<(u64, u64)>,
    /// When its `upgrade_complete()` fired.
    pub notified_ns: Option<u64>,
    /// Requests it answered, from its `exit` event.
    pub served: Option<u64>,
    /// Its `crash` event: when it killed itself, and the connections it held open.
    pub crash: Option<Crash>,
    /// Its `rollback` events: each time it became the owner again.
    pub rollbacks: Vec<Rollback>,
    /// Its `error` event (or an unreadable line).
    pub error: Option<String>,
    /// When the drill saw its stdout close.
    pub closed_ns: Option<u64>,
    /// Its exit status, once reaped.
    pub status: Option<ExitStatus>,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Generation {
    /// Starts generation `number`, to crash `crash_after` its `ready()` if that is set; its
    /// events go to `events`.
    pub fn spawn(
        spec: &ServerSpec,
        number: u32,
        crash_after: Option<Duration>,
        events: &Sender<Event>,
    ) -> std::io::Result<Generation> {
        let mut command = Command::new(&spec.exe);
        command
            .arg("drill-server")
            .arg("--dir")
            .arg(&spec.dir)
            .args(["--generation", &number.to_string()])
            .args(["--fds", &spec.fds.to_string()])
            .stdin(Stdio::piped())
            .process_group(0);
        match &spec.listen {
            Listen::Tcp(addr) => command.args(["--tcp", addr]),
            Listen::Unix(path) => command.arg("--unix").arg(path),
        };
        if let Some(mode) = spec.break_server {
            command.args(["--break-server", mode.as_arg()]);
        }
        if let Some(window) = spec.probation {
            command.args(["--probation", &format!("{}ns", window.as_nanos())]);
        }
        if let Some(after) = crash_after {
            command.args(["--crash-after", &format!("{}ns", after.as_nanos())]);
        }
        let spawned_ns = sys::now_ns();
        // Dropped on an error below: killed and reaped.
        let mut child = Child::spawn(&mut command, Some(STDERR_TAIL))?;
        child.read_stdout(forward_events(number, events.clone()))?;
        let stdin = child.take_stdin();
        Ok(Generation {
            number,
            pid: child.pid(),
            spawned_ns,
            listening: None,
            ready: None,
            notified_ns: None,
            served: None,
            crash: None,
            rollbacks: Vec::new(),
            error: None,
            closed_ns: None,
            status: None,
            child,
            stdin,
        })
    }

    /// Takes in one of its events.
    pub fn observe(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::Listening { addr, construction_us, inherited } => {
                self.listening = Some((addr, construction_us, inherited))
            }
            ServerEvent::Ready { ready_us, at_ns } => self.ready = Some((ready_us, at_ns)),
            ServerEvent::UpgradeComplete { at_ns } => self.notified_ns = Some(at_ns),
            ServerEvent::Exit { served } => self.served = Some(served),
            ServerEvent::Crash { at_ns, open_connections } => {
                self.crash = Some(Crash { at_ns, open_connections })
            }
            ServerEvent::Rollback { failed_owner, took_us, at_ns } => {
                self.rollbacks.push(Rollback { failed_owner, took_us, at_ns })
            }
            ServerEvent::Error { message } => self.error = Some(message),
        }
    }

    /// Its stdout closed: reaps it (it has exited or is about to).
    pub fn closed(&mut self) {
        self.closed_ns.get_or_insert_with(sys::now_ns);
        self.reap();
    }

    /// Tells it to stop (it drains and exits), by closing its stdin.
    pub fn stop(&mut self) {
        self.stdin.take();
    }

    /// Kills it by its pid and reaps it, unless it was reaped already.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            self.status = self.child.kill().ok();
        }
    }

    fn reap(&mut self) {
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
    }

    /// Whether it has been reaped.
    pub fn reaped(&self) -> bool {
        self.status.is_some()
    }

    /// Whether it crashed as planned: it reported its crash, and died of SIGKILL.
    pub fn crashed(&self) -> bool {
        self.crash.is_some() && self.status.is_some_and(|s| s.signal() == Some(Signal::KILL.as_raw()))
    }

    /// When it was seen gone: its stdout closed, or else (it was killed at the end) `fallback_ns`.
    pub fn gone_ns(&self, fallback_ns: u64) -> u64 {
        self.closed_ns.unwrap_or(fallback_ns)
    }

    /// Whether it exited by itself with status 0.
    pub fn exited_cleanly(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The end of what it wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        self.child.stderr().trim_end().to_string()
    }
}

/// What to do with each line of a generation's stdout: parse it and send it to the drill's
/// event channel, then [`Event::Closed`] when stdout ends; stop once the drill is gone.
fn forward_events(
    generation: u32,
    events: Sender<Event>,
) -> impl FnMut(std::time::Instant, Option<String>) -> bool + Send + 'static {
    move |_, line| match line {
        Some(line) => {
            let event =
                ServerEvent::from_line(&line).unwrap_or_else(|message| ServerEvent::Error { message });
            events.send(Event::Server { generation, event }).is_ok()
        }
        None => {
            let _ = events.send(Event::Closed { generation });
            false
        }
    }
}
