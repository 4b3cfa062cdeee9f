//! The ownership state machine: what a process may do with its store, and when.
//!
//! ```text
//!   Inheriting --ready--> Owner --newcomer connects--> Transferring --stepped down--> Completed
//!                           ^                               |
//!                           +--------handoff failed---------+
//!   any state --stop--> Stopped
//! ```

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
            State::Transferring => Err(Error::UpgradeInProgress),
            State::Completed => Err(Error::UpgradeCompleted),
            State::Stopped => Err(Error::Stopped),
        }
    }

    /// May a descriptor be removed from the store? After completion it may: that is how a
    /// draining process releases what it no longer needs.
    pub(crate) fn check_remove(self) -> Result<()> {
        match self {
            State::Transferring => Err(Error::UpgradeInProgress),
            State::Stopped => Err(Error::Stopped),
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
            State::Stopped => Err(Error::Stopped),
            // Already the owner (ready called twice): nothing changes.
            State::Owner | State::Transferring | State::Completed => Ok(()),
        }
    }

    /// A newcomer connected; only an owner hands over.
    pub(crate) fn begin_transfer(&mut self) -> Result<()> {
        match *self {
            State::Owner => {
                *self = State::Transferring;
                Ok(())
            }
            State::Transferring => Err(Error::UpgradeInProgress),
            State::Completed => Err(Error::UpgradeCompleted),
            State::Inheriting | State::Stopped => Err(Error::Stopped),
        }
    }

    /// The transfer ended; `stepped_down` says whether the newcomer took over. A stop that came
    /// in between wins.
    pub(crate) fn end_transfer(&mut self, stepped_down: bool) {
        if *self == State::Transferring {
            *self = if stepped_down { State::Completed } else { State::Owner };
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
        assert!(matches!(s.check_add(), Err(Error::UpgradeInProgress)));
        assert!(matches!(s.check_remove(), Err(Error::UpgradeInProgress)));
        assert!(matches!(s.begin_transfer(), Err(Error::UpgradeInProgress)));
        s.end_transfer(true);
        assert_eq!(s, State::Completed);
        assert!(matches!(s.check_add(), Err(Error::UpgradeCompleted)));
        s.check_remove().unwrap();
        assert!(matches!(s.begin_transfer(), Err(Error::UpgradeCompleted)));
    }

    #[test]
    fn failed_transfer_keeps_ownership() {
        let mut s = State::Owner;
        s.begin_transfer().unwrap();
        s.end_transfer(false);
        assert_eq!(s, State::Owner);
        s.check_add().unwrap();
        s.begin_transfer().unwrap();
    }

    #[test]
    fn stop_wins_over_everything() {
        for mut s in [State::Inheriting, State::Owner, State::Transferring, State::Completed] {
            s.stop();
            assert!(matches!(s.check_add(), Err(Error::Stopped)));
            assert!(matches!(s.check_remove(), Err(Error::Stopped)));
            assert!(matches!(s.begin_transfer(), Err(Error::Stopped)));
            assert!(matches!(s.become_owner(), Err(Error::Stopped)));
            s.end_transfer(true);
            assert_eq!(s, State::Stopped);
        }
    }

    #[test]
    fn not_yet_ready_does_not_hand_over() {
        let mut s = State::Inheriting;
        assert!(matches!(s.begin_transfer(), Err(Error::Stopped)));
        assert_eq!(s, State::Inheriting);
    }
}
