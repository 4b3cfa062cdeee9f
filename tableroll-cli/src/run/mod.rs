//! `tableroll run`: zero-downtime upgrades for any program written for systemd's socket
//! activation.
//!
//! The supervisor joins the group through the library, which hands it the running instance's
//! listeners (or it creates them), starts the program with them as descriptors 3, 4, ...,
//! waits until the program is ready, and only then calls the library's `ready`: the previous
//! instance is told to drain. When a newer instance takes over in turn, the program gets the
//! stop signal and the drain timeout.
//!
//! - `args`: the command line.
//! - `activation`: sockets systemd passed to the supervisor itself, adopted as listeners.
//! - `exec`: the hidden `exec-activated` step that runs in the program's process.
//! - `join`: joining the group (which may wait for the lock) while answering a stop.
//! - `child`: starting, signalling and reaping the program.
//! - `notify`: the `NOTIFY_SOCKET` the program reports readiness to.
//! - `signals`: the supervisor's own signals, as bytes to poll.
//! - `fd_store`: `--fd-store`, the listeners kept in systemd's file descriptor store.
//! - `supervisor`: the loop: start, readiness, serving, restarts, draining.
//! - `watchdog`: the hidden `drain-watchdog` step that bounds the drain if the supervisor dies.
//! - `leftovers`: what the program left running when it exited, stopped and reaped.
//! - `log`: the log lines.

mod activation;
pub mod args;
mod child;
pub mod exec;
mod fd_store;
mod generation;
mod join;
mod leftovers;
mod log;
mod notify;
pub mod signals;
mod supervisor;
pub mod watchdog;

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use activation::Activation;
use args::{Listen, RunArgs, SocketSpec};
use log::{ms, Log};
use signals::SignalPipe;

/// How much longer than the readiness timeout an owner waits for a newcomer's handoff: the
/// newcomer's own timeout should end it first, with a clear message, not the owner's.
const UPGRADE_MARGIN: Duration = Duration::from_secs(10);

pub fn run(args: RunArgs) -> ExitCode {
    if let Err(message) = args.validate() {
        // Bad usage, as clap reports it (exit status 2), before anything joins the group.
        let mut command = <RunArgs as clap::Args>::augment_args(clap::Command::new("tableroll run"));
        command.error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    let mut log = Log::new(args.log_format);
    // First, while this is the only thread: taking the activation changes the environment.
    let activation = match Activation::take_from_env() {
        Ok(activation) => activation,
        Err(e) => {
            log.event("error", &error_line(&e), json!({}));
            return ExitCode::FAILURE;
        }
    };
    match join_and_supervise(&args, activation, &mut log) {
        Ok(code) => {
            log.event("exit", &format!("exiting with status {code}"), json!({ "code": code }));
            ExitCode::from(code)
        }
        Err(e) => {
            log.event("error", &error_line(&e), json!({}));
            ExitCode::FAILURE
        }
    }
}

fn join_and_supervise(args: &RunArgs, activation: Activation, log: &mut Log) -> anyhow::Result<u8> {
    let started = Instant::now();
    // Caught before anything can block: a stop while waiting for the lock is answered too.
    let signals = SignalPipe::catch(&[SIGTERM, SIGINT, SIGHUP]).context("catching signals")?;
    let upgrade_timeout = args.ready_timeout.saturating_add(UPGRADE_MARGIN);
    // The rollback hook runs on the library's thread, once this instance has its identity.
    let rollback_log: Arc<OnceLock<Log>> = Arc::new(OnceLock::new());
    let hook_log = Arc::clone(&rollback_log);
    let mut builder = tableroll::Upgrader::builder(&args.dir)
        .upgrade_timeout(upgrade_timeout)
        .probation(args.probation)
        .on_rollback(move |rollback| {
            if let Some(log) = hook_log.get() {
                log.event(
                    "rolled_back",
                    "the newer instance is gone; this instance is the owner again, its program never stopped",
                    json!({ "failed_owner": rollback.failed_owner(), "took_ms": ms(rollback.took()) }),
                );
            }
        });
    let generation = generation::next(&args.dir);
    let id = match (&args.id, generation) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(n)) => Some(generation::id_for(n)).filter(|id| fits(&args.dir, id)),
        // The library's default id: it shortens itself to fit a long directory.
        (None, _) => None,
    };
    if let Some(id) = &id {
        builder = builder.id(id.clone());
    }
    if let Some(generation) = generation {
        builder = builder.generation(generation);
    }
    let upgrader = match join::join(builder, &args.dir, id.as_deref(), &signals)
        .with_context(|| format!("joining the group in {}", args.dir.display()))?
    {
        Some(upgrader) => upgrader,
        None => {
            log.event("cancelled", "told to stop while joining the group; giving up", json!({}));
            return Ok(1);
        }
    };
    log.set_identity(upgrader.id(), generation);
    let _ = rollback_log.set(log.clone());
    log.event(
        "joined",
        if upgrader.inherited_ids().is_empty() {
            "joined the group; no running instance handed anything over"
        } else {
            "joined the group; received the running instance's descriptors"
        },
        json!({ "dir": args.dir.display().to_string(), "generation": generation,
                "inherited": upgrader.inherited_ids(), "join_ms": ms(started.elapsed()) }),
    );
    let adopted = activation.adopt(&upgrader, &args.listens, log)?;
    let listeners = open_listeners(&upgrader, &args.listens, &adopted.names, log)?;
    let reaper =
        leftovers::Reaper::start(log.clone()).context("becoming the reaper of the program's orphans")?;
    let code = supervisor::Supervisor::new(args, &upgrader, listeners, generation, log, signals, adopted)
        .and_then(|s| s.run());
    // The program is gone for good: let go of the group now, not after its leftovers, so
    // that an instance on probation sees this one gone and becomes the owner again.
    upgrader.stop();
    // Whatever the program left running ends with it, however the supervisor's loop ended.
    let ended = reaper.end(args.stop_signal.to_rustix(), args.drain_timeout, log);
    let code = code?;
    ended.context("ending what the program left running")?;
    Ok(code)
}

/// The error and its causes on one line, each said once: a cause whose text a message before it
/// already includes (an error that shows its source and also returns it) is not repeated.
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether an upgrade socket `DIR/ID.sock` fits a Unix socket address (107 bytes and a NUL).
fn fits(dir: &std::path::Path, id: &str) -> bool {
    std::path::absolute(dir).is_ok_and(|dir| dir.as_os_str().len() + 1 + id.len() + ".sock".len() <= 107)
}

/// Each `--listen`, from the store: the running instance's socket, the one adopted from socket
/// activation (named in `adopted`), or a new one.
fn open_listeners(
    upgrader: &tableroll::Upgrader,
    listens: &[Listen],
    adopted: &[String],
    log: &Log,
) -> anyhow::Result<Vec<(String, OwnedFd)>> {
    let mut opened = Vec::with_capacity(listens.len());
    for listen in listens {
        let name = listen.name.as_str();
        let inherited = upgrader.inherited_ids().iter().any(|id| id == name);
        let activated = !inherited && adopted.iter().any(|id| id == name);
        let fds = upgrader.fds();
        let (fd, kind, address): (OwnedFd, &str, String) = match &listen.socket {
            SocketSpec::Tcp(addr) => {
                let listener = fds.listen_tcp(name, addr.as_str());
                let listener = listener.with_context(|| format!("listener {name} on tcp:{addr}"))?;
                let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.clone());
                (listener.into(), "tcp", local)
            }
            SocketSpec::Udp(addr) => {
                let socket = fds.bind_udp(name, addr.as_str());
                let socket = socket.with_context(|| format!("listener {name} on udp:{addr}"))?;
                let local = socket.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.clone());
                (socket.into(), "udp", local)
            }
            SocketSpec::Unix(path) => {
                let listener = fds.listen_unix(name, path);
                let listener =
                    listener.with_context(|| format!("listener {name} on unix:{}", path.display()))?;
                (listener.into(), "unix", path.display().to_string())
            }
        };
        let message = match (inherited, activated) {
            (true, _) => "listener inherited",
            (false, true) => "listener adopted from socket activation",
            (false, false) => "listener created",
        };
        log.event(
            "listener",
            message,
            json!({ "name": name, "kind": kind, "address": address, "inherited": inherited,
                    "activated": activated }),
        );
        opened.push((name.to_string(), fd));
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error that shows its source in its message and also returns it, as some do.
    #[derive(Debug)]
    struct Showing(std::io::Error);

    impl fmt::Display for Showing {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "binding /run/x.sock: {}", self.0)
        }
    }

    impl std::error::Error for Showing {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        let cause = std::io::Error::from_raw_os_error(2);
        let error = anyhow::Error::new(Showing(cause)).context("listener web on unix:/run/x.sock");
        let line = error_line(&error);
        assert_eq!(line.matches("No such file or directory").count(), 1, "{line}");
        assert!(
            line.starts_with("listener web on unix:/run/x.sock: binding /run/x.sock: No such file"),
            "{line}"
        );
        let plain = anyhow::anyhow!("no such thing").context("looking");
        assert_eq!(error_line(&plain), "looking: no such thing");
    }
}
