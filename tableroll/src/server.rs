//! The owner's upgrade server: one background thread that accepts newcomers on this process's
//! upgrade socket and runs one handoff at a time.
//!
//! Why a thread: a newcomer may arrive at any moment, and the application should not have to
//! poll for it or run an async runtime. The thread owns the upgrade listener, sleeps in
//! `poll(2)` on it and on a stop pipe, and is woken and joined by [`UpgradeServer::stop`].
//! A second newcomer waits in the listen backlog while a session runs; it is not dropped.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::pipe::{pipe_with, PipeFlags};

use crate::coordination::{exited_within, peek_owner, peer_pidfd, GRACE};
use crate::error::{Error, Result};
use crate::fds::{self, Shared};
use crate::handoff::give;
use crate::protocol::Channel;
use crate::signal::UpgradeComplete;
use crate::systemd::Reporter;
use crate::upgrader::PeerPolicy;

/// What the serving thread needs.
pub(crate) struct ServerConfig {
    pub(crate) listener: UnixListener,
    pub(crate) socket_path: PathBuf,
    pub(crate) shared: Shared,
    pub(crate) signal: UpgradeComplete,
    pub(crate) upgrade_timeout: Duration,
    /// This process's id and the owner file, to confirm a step-down.
    pub(crate) id: String,
    pub(crate) owner_file: PathBuf,
    pub(crate) peer_policy: PeerPolicy,
    pub(crate) reporter: Reporter,
}

pub(crate) struct UpgradeServer {
    stop_tx: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl UpgradeServer {
    pub(crate) fn spawn(config: ServerConfig) -> Result<UpgradeServer> {
        config
            .listener
            .set_nonblocking(true)
            .map_err(|e| Error::io_at("setting the upgrade socket non-blocking", &config.socket_path, e))?;
        let (stop_rx, stop_tx) = pipe_with(PipeFlags::CLOEXEC)
            .map_err(|e| Error::io("creating the upgrade server's stop pipe", e.into()))?;
        let thread = std::thread::Builder::new()
            .name("tableroll-upgrades".into())
            .spawn(move || serve(config, stop_rx))
            .map_err(|e| Error::io("spawning the upgrade server thread", e))?;
        Ok(UpgradeServer { stop_tx: Some(stop_tx), thread: Some(thread) })
    }

    /// Wakes the thread (also out of a session in progress) and waits for it to end.
    pub(crate) fn stop(&mut self) {
        // Closing the write end makes the read end readable (end of file) for every poll.
        drop(self.stop_tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for UpgradeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(config: ServerConfig, stop_rx: OwnedFd) {
    loop {
        match next_newcomer(&config.listener, &stop_rx) {
            Ok(Some(stream)) => {
                if session(&config, stream, &stop_rx) {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "upgrade server cannot accept; no more upgrades will be served");
                break;
            }
        }
    }
    // Nobody needs to reach this process any more: the new owner is in the owner file, or we
    // were stopped. The path is ours alone (ids are unique among live processes).
    drop(config.listener);
    match std::fs::remove_file(&config.socket_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %config.socket_path.display(), error = %e, "could not remove the upgrade socket")
        }
        _ => {}
    }
}

/// Waits for the next connection; `None` when stopped.
fn next_newcomer(
    listener: &UnixListener,
    stop_rx: &OwnedFd,
) -> io::Result<Option<std::os::unix::net::UnixStream>> {
    loop {
        let mut fds = [PollFd::new(listener, PollFlags::IN), PollFd::new(stop_rx, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if !fds[1].revents().is_empty() {
            return Ok(None);
        }
        match listener.accept() {
            Ok((stream, _)) => return Ok(Some(stream)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            // The newcomer gave up between connect and accept.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// After answering "stepping down": waits for the newcomer to record itself as owner before
/// this process is told to drain.
///
/// The newcomer writes the owner file and then closes the session (protocol step 8). If the
/// file names another process by then, this one steps down at once: the common case. If it
/// still names this process and the newcomer's process is gone, the newcomer died before it
/// became the owner: stepping down would leave the group without one while this process still
/// holds every listener, so it stays the owner instead. If the newcomer is alive (a writer
/// that closes first, or one in a PID namespace we cannot see), it is trusted.
fn confirm_step_down(config: &ServerConfig, ch: &Channel<'_>, newcomer: Option<&OwnedFd>) -> Result<()> {
    // Our side is done (a newcomer reading on sees the end of the stream, as from a Go owner,
    // which closes here); the newcomer's side stays open until it is the owner.
    let _ = ch.shutdown_write();
    match ch.wait_closed() {
        Ok(()) => {}
        Err(Error::Stopped) => return Err(Error::Stopped),
        // Alive and still holding the session past the deadline: it has our word.
        Err(e) => {
            tracing::debug!(error = %e, "the newcomer kept the session open; stepping down on its word");
            return Ok(());
        }
    }
    let named = peek_owner(&config.owner_file).ok().flatten();
    if named.as_deref() != Some(config.id.as_bytes()) {
        return Ok(());
    }
    match newcomer {
        Some(pidfd) if exited_within(pidfd, GRACE) => Err(Error::protocol(
            "the newcomer died after the ready handshake, before recording itself as owner",
        )),
        _ => Ok(()),
    }
}

/// Runs one handoff; returns whether the serving loop should end.
fn session(config: &ServerConfig, stream: std::os::unix::net::UnixStream, stop_rx: &OwnedFd) -> bool {
    if let Err(e) = config.peer_policy.check(&stream, "reading the peer credentials of a newcomer") {
        tracing::warn!(error = %e, "refused a connection on the upgrade socket");
        return false;
    }
    let snapshot = {
        let mut inner = fds::lock(&config.shared);
        if let Err(e) = inner.state.begin_transfer() {
            tracing::debug!(error = %e, "not handing over");
            return matches!(e, Error::Stopped | Error::UpgradeCompleted);
        }
        inner.entries.values().map(|e| (e.wire.clone(), Arc::clone(&e.fd))).collect::<Vec<_>>()
    };
    let started = Instant::now();
    let deadline = started.checked_add(config.upgrade_timeout);
    let newcomer = peer_pidfd(&stream);
    let result = Channel::new(
        stream,
        deadline,
        Some(stop_rx.as_fd()),
        "waiting for the newcomer to finish its handoff",
    )
    .and_then(|ch| {
        let result =
            give::give(&ch, &snapshot).and_then(|()| confirm_step_down(config, &ch, newcomer.as_ref()));
        // Everything of the session goes before the connection closes: a peer that sees the
        // close finds this process holding what it held before.
        drop(newcomer);
        drop(ch);
        result
    });
    drop(snapshot);
    fds::lock(&config.shared).state.end_transfer(result.is_ok());
    match result {
        Ok(()) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "a newcomer took over; stepping down"
            );
            config.reporter.stopping();
            config.signal.fire();
            true
        }
        Err(Error::Stopped) => true,
        Err(e) => {
            tracing::warn!(error = %e, "handoff failed; remaining the owner");
            false
        }
    }
}
