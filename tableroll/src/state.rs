//! The lifecycle of a member of an upgrade group: what a process may do with its store, and
//! when. This is the one state machine of a process; the upgrader and the upgrade server keep
//! resources (the lock, the session, the serving thread), not states of their own.
//!
//! ```text
//!   Inheriting --ready--> Owner --newcomer connects--> Transferring --handshake--> Pending
//!                          ^ |                              |                        |
//!                          | +----<-- handoff failed -------+                        |
//!                          +-------<-- the newcomer let go, the file names no one ---+
//!                          |                                                         |
//!                          |                                                         |
//!                          |      the owner file names another live process <-------+
//!                          |           |                          |
//!                          |           | (no probation)           | (probation)
//!                          |           v                          v
//!                          |       Completed <--window passed-- Probation
//!                          +-------------the new owner died-------+
//!   any state --stop--> Stopped
//! ```
//!
//! `Pending` is the commit point's waiting room: the newcomer was told "stepping down", but
//! only the owner file naming it makes it the owner (see `handoff::owner`). `Probation` is the
//! backup's watch: no longer the owner, still holding and serving everything, until the window
//! passes or the new owner dies (see `handoff::standby`).

use crate::error::{Error, Result};

/// Where a process stands in its upgrade group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Constructed, holding the lock, not yet ready.
    Inheriting,
    /// The owner of the group, serving upgrade requests.
    Owner,
    /// Handing its descriptors to a newcomer.
    Transferring,
    /// Told the newcomer it steps down; still the owner until the owner file names another
    /// live process.
    Pending,
    /// A newcomer took over; this process keeps everything and watches it for the probation
    /// window, ready to become the owner again.
    Probation,
    /// A newcomer took over; this process drains.
    Completed,
    /// Stopped by the application, or its ready failed.
    Stopped,
}

impl State {
    /// May a descriptor be added to the store?
    pub(crate) fn check_add(self) -> Result<()> {
        match self {
            State::Inheriting | State::Owner => Ok(()),
            State::Transferring | State::Pending | State::Probation => Err(Error::upgrade_in_progress()),
            State::Completed => Err(Error::upgrade_completed()),
            State::Stopped => Err(Error::stopped()),
        }
    }

    /// May a descriptor be removed from the store? After completion it may: that is how a
    /// draining process releases what it no longer needs.
    pub(crate) fn check_remove(self) -> Result<()> {
        match self {
            State::Transferring | State::Pending | State::Probation => Err(Error::upgrade_in_progress()),
            State::Stopped => Err(Error::stopped()),
            State::Inheriting | State::Owner | State::Completed => Ok(()),
        }
    }

    /// The ready handshake succeeded (or there was no owner): this process owns the group.
    /// Idempotent once owner.
    pub(crate) fn become_owner(&mut self) -> Result<()> {
        match *self {
            State::Inheriting => {
                *self = State::Owner;
                Ok(())
            }
            State::Stopped => Err(Error::stopped()),
            // Already the owner (ready called twice): nothing changes.
            State::Owner | State::Transferring | State::Pending | State::Probation | State::Completed => {
                Ok(())
            }
        }
    }

    /// A newcomer connected; only an owner hands over.
    pub(crate) fn begin_transfer(&mut self) -> Result<()> {
        match *self {
            State::Owner => {
                *self = State::Transferring;
                Ok(())
            }
            State::Transferring | State::Pending | State::Probation => Err(Error::upgrade_in_progress()),
            State::Completed => Err(Error::upgrade_completed()),
            State::Inheriting | State::Stopped => Err(Error::stopped()),
        }
    }

    /// The newcomer finished the ready handshake: wait for the commit point.
    pub(crate) fn await_commit(&mut self) {
        if *self == State::Transferring {
            *self = State::Pending;
        }
    }

    /// The owner file names another live process: this one drains. From any owning state (an
    /// owner watches the file for as long as it holds the listeners), and at the end of a
    /// probation. A stop wins.
    pub(crate) fn step_down(&mut self) {
        if matches!(*self, State::Owner | State::Transferring | State::Pending | State::Probation) {
            *self = State::Completed;
        }
    }

    /// The owner file names another live process, and this one is a backup for a while. A
    /// stop wins.
    pub(crate) fn begin_probation(&mut self) {
        if matches!(*self, State::Owner | State::Transferring | State::Pending) {
            *self = State::Probation;
        }
    }

    /// The new owner died during the probation and the owner file names this process again.
    /// Returns whether it is the owner (a stop wins).
    pub(crate) fn roll_back(&mut self) -> bool {
        if *self == State::Probation {
            *self = State::Owner;
        }
        *self == State::Owner
    }

    /// The handoff failed, or the newcomer let go without becoming the owner: this process
    /// owns the group as before. A stop, or a step-down, that came in between wins.
    pub(crate) fn remain_owner(&mut self) {
        if matches!(*self, State::Transferring | State::Pending) {
            *self = State::Owner;
        }
    }

    pub(crate) fn stop(&mut self) {
        *self = State::Stopped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_hands_over_and_completes() {
        let mut s = State::Inheriting;
        s.check_add().unwrap();
        s.become_owner().unwrap();
        s.check_add().unwrap();
        s.begin_transfer().unwrap();
        assert!(matches!(s.check_add().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeInProgress)));
        assert!(matches!(s.check_remove().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeInProgress)));
        assert!(matches!(
            (s.begin_transfer()).map_err(|e| e.kind()),
            Err(crate::ErrorKind::UpgradeInProgress)
        ));
        s.await_commit();
        assert_eq!(s, State::Pending);
        assert!(matches!(s.check_add().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeInProgress)));
        assert!(matches!(
            (s.begin_transfer()).map_err(|e| e.kind()),
            Err(crate::ErrorKind::UpgradeInProgress)
        ));
        s.step_down();
        assert_eq!(s, State::Completed);
        assert!(matches!(s.check_add().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeCompleted)));
        s.check_remove().unwrap();
        assert!(matches!(
            (s.begin_transfer()).map_err(|e| e.kind()),
            Err(crate::ErrorKind::UpgradeCompleted)
        ));
    }

    #[test]
    fn failed_transfer_keeps_ownership() {
        let mut s = State::Owner;
        s.begin_transfer().unwrap();
        s.remain_owner();
        assert_eq!(s, State::Owner);
        s.check_add().unwrap();
        s.begin_transfer().unwrap();
        s.await_commit();
        s.remain_owner();
        assert_eq!(s, State::Owner, "a newcomer that let go leaves this process the owner");
        s.step_down();
        assert_eq!(s, State::Completed, "an idle owner steps down when the file names another");
        s.remain_owner();
        assert_eq!(s, State::Completed);
    }

    #[test]
    fn probation_ends_in_a_rollback_or_a_step_down() {
        let mut s = State::Owner;
        s.begin_transfer().unwrap();
        s.await_commit();
        s.begin_probation();
        assert_eq!(s, State::Probation);
        assert!(matches!(s.check_add().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeInProgress)));
        assert!(matches!(s.begin_transfer().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeInProgress)));
        s.remain_owner();
        assert_eq!(s, State::Probation, "only a rollback makes a backup the owner again");
        assert!(s.roll_back());
        assert_eq!(s, State::Owner);
        s.check_add().unwrap();
        s.begin_probation();
        s.step_down();
        assert_eq!(s, State::Completed, "the window passed");
        assert!(!s.roll_back(), "a draining process never becomes the owner again");
        s.begin_probation();
        assert_eq!(s, State::Completed);
    }

    #[test]
    fn stop_wins_over_everything() {
        for mut s in [
            State::Inheriting,
            State::Owner,
            State::Transferring,
            State::Pending,
            State::Probation,
            State::Completed,
        ] {
            s.stop();
            assert!(matches!(s.check_add().map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
            assert!(matches!(s.check_remove().map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
            assert!(matches!(s.begin_transfer().map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
            assert!(matches!(s.become_owner().map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
            s.await_commit();
            s.step_down();
            s.remain_owner();
            s.begin_probation();
            assert!(!s.roll_back());
            assert_eq!(s, State::Stopped);
        }
    }

    #[test]
    fn not_yet_ready_does_not_hand_over() {
        let mut s = State::Inheriting;
        assert!(matches!(s.begin_transfer().map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
        assert_eq!(s, State::Inheriting);
    }
}
