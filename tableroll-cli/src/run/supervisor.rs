//! The supervisor's life: start the program, wait until it is ready, take over, keep it
//! running (restarting it if asked), and drain it when a newer instance takes over or the
//! supervisor is told to stop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::activation::Adopted;
use super::args::{Readiness, RestartPolicy, RunArgs, Signal};
use super::child::{describe, exit_code, Child, Launch};
use super::fd_store;
use super::log::{ms, Log};
use super::notify::NotifySocket;
use super::signals::SignalPipe;
use crate::sys::wait_readable;

/// How often a `cmd:` readiness check is run.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The first pause before a restart; doubled after each failure in a row, up to the maximum.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);
/// A program that ran this long before failing starts the restart delays over.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// What woke the supervisor up.
enum Wake {
    ChildExited(ExitStatus),
    Signals(Vec<i32>),
    Notified,
    TakenOver,
    Deadline,
}

/// How the program's start ended.
enum Startup {
    Ready,
    Failed(String),
    /// Told to stop (SIGTERM or SIGINT) before taking over: the program was stopped.
    Cancelled,
}

pub struct Supervisor<'a> {
    args: &'a RunArgs,
    upgrader: &'a tableroll::Upgrader,
    listeners: Vec<(String, OwnedFd)>,
    /// This instance's generation, if known; the program gets it as `TABLEROLL_GENERATION`.
    generation: Option<u64>,
    log: &'a Log,
    signals: SignalPipe,
    /// Readable once a newer instance took over (or the upgrader stopped).
    taken_over: tableroll::UpgradeComplete,
    notify: Option<NotifySocket>,
    /// How many times the program was started.
    runs: u32,
    /// Set once the program was told to stop: it is not restarted any more.
    stopping: bool,
    /// The signals sent to make the program stop. Dying of one of them is a clean end, as
    /// systemd counts it: the supervisor then exits 0, not 128+N, so that a unit with
    /// `Restart=on-failure` is not restarted after a drain.
    stop_signals_sent: Vec<i32>,
    /// What adopting the supervisor's own socket activation did: with `--fd-store`, the store is
    /// brought in line with it once this instance is the owner.
    activation: Adopted,
}

impl<'a> Supervisor<'a> {
    pub fn new(
        args: &'a RunArgs,
        upgrader: &'a tableroll::Upgrader,
        listeners: Vec<(String, OwnedFd)>,
        generation: Option<u64>,
        log: &'a Log,
        signals: SignalPipe,
        activation: Adopted,
    ) -> anyhow::Result<Supervisor<'a>> {
        let notify = match args.ready {
            Readiness::Notify => Some(NotifySocket::bind().context("creating the notification socket")?),
            _ => None,
        };
        Ok(Supervisor {
            args,
            upgrader,
            listeners,
            generation,
            log,
            signals,
            taken_over: upgrader.upgrade_complete(),
            notify,
            runs: 0,
            stopping: false,
            stop_signals_sent: Vec::new(),
            activation,
        })
    }

    /// Runs until the program exits for good; returns the exit code for the supervisor.
    pub fn run(mut self) -> anyhow::Result<u8> {
        let mut child = self.start_child()?;
        match self.wait_until_ready(&mut child)? {
            Startup::Ready => {}
            Startup::Failed(reason) => {
                self.log.event(
                    "failed",
                    &format!("{reason}; giving up (a running instance, if any, keeps serving)"),
                    json!({}),
                );
                return Ok(1);
            }
            Startup::Cancelled => return Ok(1),
        }
        // From here on this instance takes over: a stop that comes now is an owner's stop.
        let ready_started = Instant::now();
        if let Err(e) = self.upgrader.ready() {
            self.log.event(
                "refused",
                &format!("could not take over: {e}; giving up (the running instance keeps serving)"),
                json!({}),
            );
            self.drain(&mut child, Some("the handoff failed"))?;
            return Ok(1);
        }
        // What the previous instance passed on but this one does not listen on: the library
        // closed it at ready(), so a port no longer configured is released.
        let closed: Vec<&String> = self
            .upgrader
            .inherited_ids()
            .iter()
            .filter(|id| !self.listeners.iter().any(|(name, _)| name == *id))
            .collect();
        self.log.event(
            "owner",
            "now the owner: the previous instance was told to drain",
            json!({ "ready_ms": ms(ready_started.elapsed()), "child_pid": child.pid(),
                    "child_started_to_owner_ms": ms(child.started.elapsed()),
                    "closed_unclaimed": closed }),
        );
        if self.args.fd_store {
            fd_store::store(&self.listeners, &self.activation.replaced, self.log);
            let dropped: Vec<String> =
                closed.into_iter().cloned().chain(self.activation.unused.iter().cloned()).collect();
            fd_store::remove(&dropped, self.log);
        }
        self.serve(child)
    }

    fn start_child(&mut self) -> anyhow::Result<Child> {
        self.runs += 1;
        let listeners: Vec<(String, BorrowedFd<'_>)> =
            self.listeners.iter().map(|(name, fd)| (name.clone(), fd.as_fd())).collect();
        let launch = Launch {
            command: &self.args.command,
            listeners: &listeners,
            notify_socket: self.notify.as_ref().map(NotifySocket::path),
            generation: self.generation,
            stop_signal: self.args.stop_signal,
            drain_timeout: self.args.drain_timeout,
        };
        let child = Child::spawn(&launch)
            .with_context(|| format!("starting {}", self.args.command[0].to_string_lossy()))?;
        self.log.event(
            "started",
            "program started",
            json!({ "run": self.runs, "child_pid": child.pid(), "fds": listeners.len(),
                    "command": self.args.command[0].to_string_lossy() }),
        );
        Ok(child)
    }

    /// Waits for the readiness the command line asked for, the program's exit, or the
    /// readiness timeout. Signals received meanwhile are passed on to the program; after
    /// SIGTERM or SIGINT the attempt is given up, whatever readiness comes later.
    fn wait_until_ready(&mut self, child: &mut Child) -> anyhow::Result<Startup> {
        let deadline = later(child.started, self.args.ready_timeout)?;
        let ready_at = match self.args.ready {
            Readiness::Delay(delay) => Some(later(child.started, delay)?),
            _ => None,
        };
        let mut checks_failed = 0u32;
        loop {
            let next_check = match &self.args.ready {
                Readiness::Command(_) => Some(later(Instant::now(), CHECK_INTERVAL)?),
                _ => ready_at,
            };
            let wake_at = next_check.map_or(deadline, |t| t.min(deadline));
            match self.wait(child, Some(wake_at), false)? {
                Wake::ChildExited(status) => {
                    return Ok(Startup::Failed(format!(
                        "the program {} before it was ready",
                        describe(status)
                    )))
                }
                Wake::Signals(signals) => {
                    self.forward(child, &signals)?;
                    if self.stopping {
                        return self.give_up(child);
                    }
                }
                Wake::Notified => {
                    if self.notifications_say_ready()? {
                        return self.ready_unless_stopped(child, "it sent READY=1");
                    }
                }
                Wake::TakenOver => {}
                Wake::Deadline if Instant::now() >= deadline => {
                    let reason = format!("the program was not ready within {:?}", self.args.ready_timeout);
                    self.log.event("timeout", &reason, json!({ "child_pid": child.pid() }));
                    self.drain(child, Some("it was not ready in time"))?;
                    return Ok(Startup::Failed(reason));
                }
                Wake::Deadline => match &self.args.ready {
                    Readiness::Delay(_) => {
                        return self.ready_unless_stopped(child, "the readiness delay passed");
                    }
                    Readiness::Command(command) => {
                        if self.check_command(command, child, deadline)? {
                            return self.ready_unless_stopped(child, "the readiness command succeeded");
                        }
                        checks_failed += 1;
                        if checks_failed == 1 {
                            self.log.event(
                                "check_failed",
                                "the readiness command failed; trying again until the readiness timeout",
                                json!({ "interval_ms": CHECK_INTERVAL.as_millis() as u64 }),
                            );
                        }
                    }
                    Readiness::Notify => {}
                },
            }
        }
    }

    /// The program is ready: takes over, unless a stop came meanwhile (a signal that came
    /// during a readiness check, or with the readiness). The last look before `ready()`.
    fn ready_unless_stopped(&mut self, child: &mut Child, why: &str) -> anyhow::Result<Startup> {
        let signals = self.signals.take();
        self.forward(child, &signals)?;
        if self.stopping {
            return self.give_up(child);
        }
        self.log.event(
            "child_ready",
            &format!("program ready: {why}"),
            json!({ "child_pid": child.pid(), "start_to_ready_ms": ms(child.started.elapsed()) }),
        );
        Ok(Startup::Ready)
    }

    /// Gives the attempt up after a stop: never takes over; waits for the program, which got
    /// the signal, for up to the drain timeout, then kills it.
    fn give_up(&mut self, child: &mut Child) -> anyhow::Result<Startup> {
        self.log.event(
            "cancelled",
            "told to stop before taking over; giving up (a running instance, if any, keeps serving)",
            json!({ "child_pid": child.pid() }),
        );
        self.drain(child, None)?;
        Ok(Startup::Cancelled)
    }

    /// Reads every waiting notification; logs what the program says about itself.
    fn notifications_say_ready(&self) -> anyhow::Result<bool> {
        let Some(notify) = &self.notify else { return Ok(false) };
        let mut ready = false;
        for notification in notify.receive().context("reading the program's notifications")? {
            if let Some(status) = &notification.status {
                self.log.event("child_status", "program status", json!({ "status": status }));
            }
            ready |= notification.ready;
        }
        Ok(ready)
    }

    /// Runs the readiness command once, bounded by `deadline`; whether it exited 0.
    fn check_command(&self, command: &str, child: &Child, deadline: Instant) -> anyhow::Result<bool> {
        let stdout = std::io::stderr().as_fd().try_clone_to_owned().context("duplicating stderr")?;
        let mut check = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env("TABLEROLL_CHILD_PID", child.pid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .spawn()
            .with_context(|| format!("running the readiness command {command:?}"))?;
        let pid = rustix::process::Pid::from_raw(check.id() as i32).context("the command has pid 0")?;
        let exited = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        let left = deadline.saturating_duration_since(Instant::now());
        let woke = wait_readable(&[exited.as_fd(), child.exit_fd(), self.signals.fd()], Some(left))?;
        if !woke[0] {
            // Timed out, the program died, or a signal came (read by the caller's next wait):
            // the check is moot.
            check.kill().ok();
        }
        Ok(check.wait()?.success())
    }

    /// The owner's life: keeps the program running until a newer instance takes over or the
    /// supervisor is told to stop, then drains it.
    fn serve(&mut self, mut child: Child) -> anyhow::Result<u8> {
        let mut failures_in_a_row = 0u32;
        loop {
            match self.wait(&mut child, None, true)? {
                Wake::TakenOver => {
                    let message = if self.args.probation.is_zero() {
                        "a newer instance took over; draining the program"
                    } else {
                        "a newer instance took over and its probation passed; draining the program"
                    };
                    self.log.event("taken_over", message, json!({}));
                    return self.drain(&mut child, Some("taken over")).map(|s| self.exit_code_for(s));
                }
                Wake::Signals(signals) => {
                    self.forward(&child, &signals)?;
                    if self.stopping {
                        // The signal itself asked the program to stop: it gets the drain time.
                        return self.drain(&mut child, None).map(|s| self.exit_code_for(s));
                    }
                }
                Wake::Notified => {
                    self.notifications_say_ready()?;
                }
                Wake::Deadline => {}
                Wake::ChildExited(status) => {
                    let ran = child.started.elapsed();
                    let restart = self.args.restart == Some(RestartPolicy::OnFailure)
                        && !status.success()
                        && !self.stopping;
                    self.log.event(
                        "child_exited",
                        &format!("the program {}", describe(status)),
                        json!({ "child_pid": child.pid(), "ran_ms": ms(ran), "code": exit_code(status),
                                "restart": restart }),
                    );
                    if !restart {
                        return Ok(self.exit_code_for(status));
                    }
                    failures_in_a_row = if ran >= HEALTHY_RUN { 1 } else { failures_in_a_row + 1 };
                    match self.pause_before_restart(restart_delay(failures_in_a_row))? {
                        Some(code) => return Ok(code),
                        None => child = self.start_child()?,
                    }
                }
            }
        }
    }

    /// Waits `delay` before a restart, still answering a takeover or a stop. Returns the exit
    /// code if the supervisor should end instead of restarting.
    fn pause_before_restart(&mut self, delay: Duration) -> anyhow::Result<Option<u8>> {
        self.log.event(
            "restarting",
            "restarting the program; the sockets stay open",
            json!({ "delay_ms": ms(delay) }),
        );
        let until = later(Instant::now(), delay)?;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let woke = wait_readable(&[self.signals.fd(), self.taken_over.as_fd()], Some(left))?;
            if woke[1] {
                self.log.event("taken_over", "a newer instance took over while no program ran", json!({}));
                return Ok(Some(0));
            }
            if woke[0] {
                let signals = self.signals.take();
                if signals.iter().any(|&s| s == SIGTERM || s == SIGINT) {
                    self.log.event("stopping", "told to stop while no program ran", json!({}));
                    return Ok(Some(0));
                }
            }
            if Instant::now() >= until {
                return Ok(None);
            }
        }
    }

    /// Waits for the next thing to act on: the program's exit, a signal, a notification,
    /// (if `owner`) a takeover, or `until`.
    fn wait(&mut self, child: &mut Child, until: Option<Instant>, owner: bool) -> anyhow::Result<Wake> {
        loop {
            let mut fds = vec![child.exit_fd(), self.signals.fd()];
            if owner {
                fds.push(self.taken_over.as_fd());
            }
            if let Some(notify) = &self.notify {
                fds.push(notify.fd());
            }
            let timeout = until.map(|t| t.saturating_duration_since(Instant::now()));
            let woke = wait_readable(&fds, timeout).context("waiting for the program")?;
            if woke[0] {
                if let Some(status) = child.try_wait().context("reaping the program")? {
                    return Ok(Wake::ChildExited(status));
                }
            }
            if woke[1] {
                let signals = self.signals.take();
                if !signals.is_empty() {
                    return Ok(Wake::Signals(signals));
                }
            }
            if owner && woke[2] {
                return Ok(Wake::TakenOver);
            }
            if self.notify.is_some() && woke[woke.len() - 1] {
                return Ok(Wake::Notified);
            }
            if woke.iter().all(|w| !w) {
                return Ok(Wake::Deadline);
            }
        }
    }

    /// Passes signals on to the program. SIGTERM and SIGINT also mean the supervisor is
    /// stopping: the program is not restarted after them.
    fn forward(&mut self, child: &Child, signals: &[i32]) -> anyhow::Result<()> {
        for &signal in signals {
            let name = Signal(signal).name();
            if signal == SIGTERM || signal == SIGINT {
                if !self.stopping {
                    report_stopping_to_systemd(self.log);
                }
                self.stopping = true;
                self.stop_signals_sent.push(signal);
            }
            self.log.event(
                "signal",
                &format!("passing {name} on to the program"),
                json!({ "signal": name, "child_pid": child.pid() }),
            );
            child.signal(Signal(signal).to_rustix()).with_context(|| format!("sending {name}"))?;
        }
        Ok(())
    }

    /// Sends the stop signal (unless `why` is `None`: the program was already signalled),
    /// waits up to the drain timeout passing on signals meanwhile, and kills the program's
    /// process group if it is still there. Returns the program's status.
    fn drain(&mut self, child: &mut Child, why: Option<&str>) -> anyhow::Result<ExitStatus> {
        self.stopping = true;
        let started = Instant::now();
        let fields = json!({ "child_pid": child.pid(), "drain_timeout_ms": self.args.drain_timeout.as_millis() as u64 });
        match why {
            Some(why) => {
                let signal = self.args.stop_signal;
                let message = format!("sending {} to the program ({why})", signal.name());
                self.log.event("draining", &message, fields);
                self.stop_signals_sent.push(signal.0);
                child.signal(signal.to_rustix()).context("sending the stop signal")?;
            }
            None => self.log.event("draining", "waiting for the program to exit", fields),
        }
        let deadline = later(started, self.args.drain_timeout)?;
        loop {
            match self.wait(child, Some(deadline), false)? {
                Wake::ChildExited(status) => {
                    self.log.event(
                        "drained",
                        &format!("the program {}", describe(status)),
                        json!({ "child_pid": child.pid(), "drain_ms": ms(started.elapsed()),
                                "code": exit_code(status) }),
                    );
                    return Ok(status);
                }
                Wake::Signals(signals) => self.forward(child, &signals)?,
                Wake::Notified => {
                    self.notifications_say_ready()?;
                }
                Wake::TakenOver => {}
                Wake::Deadline => {
                    self.log.event(
                        "killed",
                        "the program did not exit within the drain timeout; killing it and its process group",
                        json!({ "child_pid": child.pid(), "drain_timeout_ms": self.args.drain_timeout.as_millis() as u64 }),
                    );
                    child.kill_group();
                    // SIGKILL cannot be caught: the wait is short.
                    let status = loop {
                        if let Some(status) = child.try_wait()? {
                            break status;
                        }
                        wait_readable(&[child.exit_fd()], None)?;
                    };
                    return Ok(status);
                }
            }
        }
    }
}

impl Supervisor<'_> {
    /// The supervisor's exit code for the program's final `status`.
    fn exit_code_for(&self, status: ExitStatus) -> u8 {
        match status.signal() {
            Some(signal) if self.stop_signals_sent.contains(&signal) => 0,
            _ => exit_code(status),
        }
    }
}

/// Under systemd, says the service is stopping (the library says it itself on a takeover).
fn report_stopping_to_systemd(log: &Log) {
    if let Err(e) = tableroll::systemd::notify("STOPPING=1\nSTATUS=told to stop; draining") {
        log.event("systemd", &format!("could not notify systemd: {e}"), json!({}));
    }
}

/// The instant `duration` after `start`. The flags bound every duration far below the clock's
/// range, so this fails only if that bound is lost.
fn later(start: Instant, duration: Duration) -> anyhow::Result<Instant> {
    start.checked_add(duration).with_context(|| format!("{duration:?} from now is past the clock's range"))
}

/// The pause before the `n`th restart in a row (n ≥ 1).
fn restart_delay(n: u32) -> Duration {
    let doubled = FIRST_RESTART_DELAY.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    doubled.min(MAX_RESTART_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_double_up_to_the_maximum() {
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(2), Duration::from_millis(200));
        assert_eq!(restart_delay(6), Duration::from_millis(3200));
        assert_eq!(restart_delay(7), MAX_RESTART_DELAY);
        assert_eq!(restart_delay(1000), MAX_RESTART_DELAY);
    }
}
