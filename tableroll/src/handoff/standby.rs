//! A process that stepped down and still holds the group's descriptors: a *standby*.
//!
//! A standby keeps its upgrade socket and its standby mark (see
//! [`StandbyMark`](crate::coordination::StandbyMark)) until it stops. A newcomer of ours that
//! finds the owner named in the owner file gone connects to it instead of starting with fresh
//! descriptors, and the standby hands over what it holds as an owner would; it checks first
//! that the named owner is indeed gone.
//!
//! On *probation* (see [`Builder::probation`](crate::Builder::probation)) the standby also
//! watches the owner that took over from it, for the window:
//!
//! - if the owner file still names that owner and it is not live (its process exited, or it
//!   stopped serving), or the file names no live process at all, the standby takes the lock
//!   without waiting, looks again under it, and records itself as the owner: a rollback. A
//!   lock held by someone else means a newcomer is deciding: it connects here, or records
//!   itself, and the standby looks again soon;
//! - if the file names another live process (the new owner was upgraded in turn), the
//!   probation is over;
//! - if the window passes with the owner alive and named, the probation is over.
//!
//! The owner's exit is seen through its pidfd, within moments; without one (it runs in another
//! PID namespace, or stepped down without a session) and for an owner that stops serving while
//! alive, the standby looks on a period.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::owner::Group;
use crate::coordination::accept_one;
use crate::error::{Error, Result};
use crate::probation::Rollback;
use crate::sys::poll::{self, Interest};

/// How often a probation looks at the watched owner when its exit wakes the watch.
const LOOK_WITH_PIDFD: Duration = Duration::from_millis(250);
/// How often it looks without a pidfd (or with the owner's watch unavailable).
const LOOK_WITHOUT_PIDFD: Duration = Duration::from_millis(50);
/// How often it looks while the owner is gone and another process holds the lock, at first:
/// doubled at each look up to [`LOOK_WITH_PIDFD`]. A newcomer that connects or records itself
/// wakes the standby at once; only a lock released without either makes no event.
const LOOK_WHILE_LOCKED: Duration = Duration::from_millis(5);

/// A standby's watch over the owner that took over from it.
#[derive(Debug)]
pub(crate) struct Probation {
    /// The id the owner file named when this process stepped down.
    owner: Vec<u8>,
    /// That owner's process, when visible: its exit wakes the watch at once.
    pidfd: Option<OwnedFd>,
    /// The end of the window; `None` if it is too far to name.
    until: Option<Instant>,
    /// When the owner was first seen gone.
    gone_since: Option<Instant>,
    /// The next wait while the owner is gone and the lock held.
    locked_recheck: Duration,
}

/// What woke a standby.
#[derive(Debug)]
pub(crate) enum StandbyEvent {
    /// A connection on the upgrade socket: a newcomer that found the owner gone, maybe.
    Newcomer(UnixStream),
    /// The probation's owner was gone and the owner file names this process again.
    RolledBack(Rollback),
    /// The owner file names this process, written by someone else.
    NamedAgain,
    /// The probation ended; the reason, for the log.
    ProbationOver(&'static str),
}

/// What the owner file says to a probation.
enum Verdict {
    /// It names the watched owner, live.
    Watching,
    /// It names another live process.
    MovedOn,
    /// It names this process.
    Mine,
    /// It names no live process.
    Gone,
}

impl Probation {
    /// Watches `owner`, whose process is `pidfd` when known, for `window`.
    pub(crate) fn new(owner: Vec<u8>, pidfd: Option<OwnedFd>, window: Duration) -> Probation {
        let until = Instant::now().checked_add(window);
        Probation { owner, pidfd, until, gone_since: None, locked_recheck: LOOK_WHILE_LOCKED }
    }

    /// The id of the owner watched, lossily decoded.
    pub(crate) fn owner(&self) -> String {
        crate::id::text(&self.owner)
    }

    /// The rollback that makes this process the owner again now, from the owner watched, or
    /// from `failed`, the one the owner file named when this process recorded itself.
    pub(crate) fn rollback(&self, failed: Option<&[u8]>) -> Rollback {
        let took = self.gone_since.map_or(Duration::ZERO, |since| since.elapsed());
        Rollback::new(crate::id::text(failed.unwrap_or(&self.owner)), took)
    }

    fn verdict(&self, group: &Group<'_>, named: Result<Option<Vec<u8>>>) -> Verdict {
        match named {
            Ok(Some(named)) if named.as_slice() == group.id => Verdict::Mine,
            Ok(Some(named)) if group.dir.is_live(&named) => {
                if named == self.owner {
                    Verdict::Watching
                } else {
                    Verdict::MovedOn
                }
            }
            Ok(_) => Verdict::Gone,
            // Cannot be read now: nothing is decided on it.
            Err(e) => {
                tracing::debug!(error = %e, "could not read the owner file during probation");
                Verdict::Watching
            }
        }
    }

    /// Looks at the owner file and the watched owner; rolls back if it is gone and the lock is
    /// free. `None` while the probation goes on.
    fn look(&mut self, group: &Group<'_>) -> Option<StandbyEvent> {
        match self.verdict(group, group.owner_file.read()) {
            Verdict::Watching => None,
            Verdict::MovedOn => Some(StandbyEvent::ProbationOver("the owner file names yet another process")),
            Verdict::Mine => Some(StandbyEvent::NamedAgain),
            Verdict::Gone => {
                self.gone_since.get_or_insert_with(Instant::now);
                self.try_roll_back(group)
            }
        }
    }

    fn try_roll_back(&mut self, group: &Group<'_>) -> Option<StandbyEvent> {
        let lock = match group.owner_file.try_lock() {
            Ok(Some(lock)) => lock,
            // A newcomer holds it: it connects here or records itself.
            Ok(None) => {
                self.locked_recheck = (self.locked_recheck * 2).min(LOOK_WITH_PIDFD);
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not try the coordination lock during probation");
                return None;
            }
        };
        match self.verdict(group, lock.read_owner()) {
            Verdict::Watching => None,
            Verdict::MovedOn => Some(StandbyEvent::ProbationOver("the owner file names yet another process")),
            Verdict::Mine => Some(StandbyEvent::NamedAgain),
            Verdict::Gone => match lock.write_owner(group.id) {
                Ok(()) => {
                    group.dir.remove_stale_sockets(&[group.id]);
                    Some(StandbyEvent::RolledBack(self.rollback(None)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "the new owner is gone but this process could not record itself as the owner again; trying again");
                    None
                }
            },
        }
    }

    /// How long to wait before the next look.
    fn period(&self, group: &Group<'_>) -> Duration {
        let period = if self.gone_since.is_some() {
            self.locked_recheck
        } else if self.pidfd.is_some() && group.watch.is_available() {
            LOOK_WITH_PIDFD
        } else {
            LOOK_WITHOUT_PIDFD
        };
        self.until.map_or(period, |until| period.min(until.saturating_duration_since(Instant::now())))
    }
}

/// Waits for the next thing a standby acts on: a connection, and on probation a verdict on the
/// watched owner or the end of the window.
///
/// # Errors
///
/// [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if stopped; [`ErrorKind::Io`](crate::ErrorKind::Io) if waiting or
/// accepting fails (out of descriptors, say), which the caller waits out.
pub(crate) fn next_event(group: &Group<'_>, mut probation: Option<&mut Probation>) -> Result<StandbyEvent> {
    loop {
        if let Some(probation) = probation.as_deref_mut() {
            if let Some(event) = probation.look(group) {
                return Ok(event);
            }
            if probation.until.is_some_and(|until| Instant::now() >= until) {
                return Ok(StandbyEvent::ProbationOver("the probation window passed"));
            }
        }
        let mut fds = vec![(group.stop, Interest::Read), (group.upgrade_socket.as_fd(), Interest::Read)];
        let mut timeout = None;
        let mut pidfd_at = None;
        if let Some(probation) = probation.as_deref() {
            fds.extend(group.watch.fd().map(|watch| (watch, Interest::Read)));
            if let Some(pidfd) = &probation.pidfd {
                pidfd_at = Some(fds.len());
                fds.push((pidfd.as_fd(), Interest::Read));
            }
            timeout = Some(probation.period(group));
        }
        let ready = poll::wait(&fds, timeout).map_err(|e| Error::io("waiting as a standby", e))?;
        if ready[0] {
            return Err(Error::stopped());
        }
        if ready[1] {
            let accepted = accept_one(group.upgrade_socket)
                .map_err(|e| Error::io("accepting on the upgrade socket as a standby", e))?;
            if let Some(stream) = accepted {
                return Ok(StandbyEvent::Newcomer(stream));
            }
        }
        if let Some(probation) = probation.as_deref_mut() {
            if pidfd_at.is_some_and(|at| ready[at]) {
                // Exited: the look decides, on the owner file and the socket.
                probation.pidfd = None;
            }
            if group.watch.fd().is_some() && ready.get(2) == Some(&true) {
                group.watch.take_changes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::{Directory, OwnerFile, OwnerFileWatch};
    use crate::sys::wake;
    use std::os::unix::net::UnixListener;

    /// A directory where `me` stepped down for `owner`, both with live upgrade sockets.
    struct Scene {
        _tmp: tempfile::TempDir,
        dir: Directory,
        owner_file: OwnerFile,
        watch: OwnerFileWatch,
        me: UnixListener,
        owner: Option<UnixListener>,
        stop: (OwnedFd, OwnedFd),
    }

    impl Scene {
        fn new() -> Scene {
            let tmp = tempfile::tempdir().unwrap();
            let dir = Directory::open(tmp.path()).unwrap();
            let me = UnixListener::bind(dir.socket_path(b"me").unwrap()).unwrap();
            me.set_nonblocking(true).unwrap();
            let owner = Some(UnixListener::bind(dir.socket_path(b"new").unwrap()).unwrap());
            let owner_file = OwnerFile::open(&dir.owner_file()).unwrap();
            owner_file.try_lock().unwrap().unwrap().write_owner(b"new").unwrap();
            let watch = dir.watch_owner_file();
            Scene { _tmp: tmp, dir, owner_file, watch, me, owner, stop: wake::pipe().unwrap() }
        }

        fn group(&self) -> Group<'_> {
            Group {
                dir: &self.dir,
                owner_file: &self.owner_file,
                watch: &self.watch,
                id: b"me",
                upgrade_socket: &self.me,
                stop: self.stop.0.as_fd(),
            }
        }
    }

    #[test]
    fn a_live_owner_is_watched_and_a_dead_one_rolled_back() {
        let mut scene = Scene::new();
        let mut probation = Probation::new(b"new".to_vec(), None, Duration::from_secs(600));
        assert!(probation.look(&scene.group()).is_none());
        scene.owner = None;
        match probation.look(&scene.group()) {
            Some(StandbyEvent::RolledBack(rollback)) => assert_eq!(rollback.failed_owner(), "new"),
            other => panic!("{other:?}"),
        }
        assert_eq!(scene.owner_file.read().unwrap().as_deref(), Some(&b"me"[..]));
    }

    #[test]
    fn a_held_lock_defers_the_rollback() {
        let mut scene = Scene::new();
        scene.owner = None;
        let mut probation = Probation::new(b"new".to_vec(), None, Duration::from_secs(600));
        let other = OwnerFile::open(&scene.dir.owner_file()).unwrap();
        let held = other.try_lock().unwrap().unwrap();
        assert!(probation.look(&scene.group()).is_none(), "a newcomer holds the lock");
        assert!(probation.period(&scene.group()) > LOOK_WHILE_LOCKED, "backs off while the lock is held");
        drop(held);
        assert!(matches!(probation.look(&scene.group()), Some(StandbyEvent::RolledBack(_))));
    }

    #[test]
    fn another_live_owner_or_the_window_ends_the_probation() {
        let scene = Scene::new();
        let _third = UnixListener::bind(scene.dir.socket_path(b"third").unwrap()).unwrap();
        scene.owner_file.try_lock().unwrap().unwrap().write_owner(b"third").unwrap();
        let mut probation = Probation::new(b"new".to_vec(), None, Duration::from_secs(600));
        assert!(matches!(probation.look(&scene.group()), Some(StandbyEvent::ProbationOver(_))));
        assert_eq!(scene.owner_file.read().unwrap().as_deref(), Some(&b"third"[..]), "nothing written");

        let scene = Scene::new();
        let mut probation = Probation::new(b"new".to_vec(), None, Duration::ZERO);
        match next_event(&scene.group(), Some(&mut probation)) {
            Ok(StandbyEvent::ProbationOver(why)) => assert!(why.contains("window"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_standby_without_probation_waits_for_a_newcomer_or_the_stop() {
        let scene = Scene::new();
        let _newcomer =
            std::os::unix::net::UnixStream::connect(scene.dir.socket_path(b"me").unwrap()).unwrap();
        assert!(matches!(next_event(&scene.group(), None), Ok(StandbyEvent::Newcomer(_))));

        let (read, write) = wake::pipe().unwrap();
        drop(write);
        let group = Group { stop: read.as_fd(), ..scene.group() };
        assert!(matches!(next_event(&group, None).map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
    }
}
