//! Fault injection: make this process abort or pause at a named point of a handoff, to test
//! what the rest of the group does when a process dies or hangs there.
//!
//! Available with the `fault-injection` cargo feature, which is off by default; without it,
//! every point compiles to nothing. Faults are process-wide, as crashes are.
//!
//! ```no_run
//! # #[cfg(feature = "fault-injection")]
//! # {
//! use tableroll::fault::{self, Action, Point};
//! fault::on_hit(|point, action| eprintln!("fault {point}: {action}"));
//! fault::arm(Point::NewcomerAfterList, Action::Pause);
//! # }
//! ```

use std::fmt;
use std::str::FromStr;

/// A place in the handoff where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Point {
    /// Owner: the descriptor list is sent, no descriptor yet.
    OwnerAfterList,
    /// Owner: after each descriptor but the last.
    OwnerBetweenFds,
    /// Owner: everything is sent; about to read the newcomer's ready byte.
    OwnerBeforeReadyByte,
    /// Owner: the newcomer's ready request is accepted; about to answer "stepping down".
    OwnerBeforeSteppingDown,
    /// Newcomer: holds the coordination lock; has not read the owner file yet.
    NewcomerAfterLock,
    /// Newcomer: received the descriptor list, no descriptor yet.
    NewcomerAfterList,
    /// Newcomer: after each received descriptor but the last.
    NewcomerBetweenFds,
    /// Newcomer: received everything; construction is about to return.
    NewcomerAfterReceive,
    /// Newcomer: sent its ready request; has not read the owner's answer.
    NewcomerInHandshake,
    /// Newcomer: the owner stepped down; about to write the owner file.
    NewcomerBeforeOwnerFile,
}

impl Point {
    /// Every point, owner's first.
    pub const ALL: [Point; 10] = [
        Point::OwnerAfterList,
        Point::OwnerBetweenFds,
        Point::OwnerBeforeReadyByte,
        Point::OwnerBeforeSteppingDown,
        Point::NewcomerAfterLock,
        Point::NewcomerAfterList,
        Point::NewcomerBetweenFds,
        Point::NewcomerAfterReceive,
        Point::NewcomerInHandshake,
        Point::NewcomerBeforeOwnerFile,
    ];

    /// The point's name, as `FromStr` reads it: `owner-after-list`, `newcomer-in-handshake`…
    pub fn name(self) -> &'static str {
        match self {
            Point::OwnerAfterList => "owner-after-list",
            Point::OwnerBetweenFds => "owner-between-fds",
            Point::OwnerBeforeReadyByte => "owner-before-ready-byte",
            Point::OwnerBeforeSteppingDown => "owner-before-stepping-down",
            Point::NewcomerAfterLock => "newcomer-after-lock",
            Point::NewcomerAfterList => "newcomer-after-list",
            Point::NewcomerBetweenFds => "newcomer-between-fds",
            Point::NewcomerAfterReceive => "newcomer-after-receive",
            Point::NewcomerInHandshake => "newcomer-in-handshake",
            Point::NewcomerBeforeOwnerFile => "newcomer-before-owner-file",
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Point {
    type Err = String;
    fn from_str(s: &str) -> Result<Point, String> {
        Point::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Point::ALL.iter().map(|p| p.name()).collect();
            format!("unknown fault point {s:?}; known: {}", names.join(", "))
        })
    }
}

/// What happens at an armed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// `abort()` the process: a crash at that point.
    Abort,
    /// Block the thread there forever (until the process is killed).
    Pause,
    /// Stop the whole process (`SIGSTOP`, as a debugger or a frozen container would) and go on
    /// when it is continued (`SIGCONT`): a process that hangs at that point for as long as the
    /// test wants.
    Stop,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Stop => "stop",
        })
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        match s {
            "abort" => Ok(Action::Abort),
            "pause" => Ok(Action::Pause),
            "stop" => Ok(Action::Stop),
            other => Err(format!("unknown fault action {other:?}; known: abort, pause, stop")),
        }
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::{Action, Point};
    use std::collections::HashMap;
    use std::sync::{Mutex, PoisonError};

    type Hook = Box<dyn Fn(Point, Action) + Send + Sync>;

    static ARMED: Mutex<Option<HashMap<Point, Action>>> = Mutex::new(None);
    static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

    pub(super) fn arm(point: Point, action: Action) {
        ARMED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(HashMap::new)
            .insert(point, action);
    }

    pub(super) fn on_hit(hook: Hook) {
        *HOOK.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    pub(super) fn hit(point: Point) {
        let action = ARMED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|m| m.get(&point).copied());
        let Some(action) = action else { return };
        if let Some(hook) = HOOK.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            hook(point, action);
        }
        match action {
            Action::Abort => std::process::abort(),
            Action::Pause => loop {
                std::thread::park();
            },
            Action::Stop => {
                if let Err(e) =
                    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP)
                {
                    tracing::error!(error = %e, "could not stop this process at a fault point");
                }
            }
        }
    }
}

/// Arms `point`: when a handoff reaches it, this process does `action`.
#[cfg(feature = "fault-injection")]
pub fn arm(point: Point, action: Action) {
    armed::arm(point, action);
}

/// Calls `hook` when an armed point is reached, before its action: to report it (a test waits
/// for that report before it kills the paused process).
#[cfg(feature = "fault-injection")]
pub fn on_hit(hook: impl Fn(Point, Action) + Send + Sync + 'static) {
    armed::on_hit(Box::new(hook));
}

/// Marks a fault point; without the feature it is nothing.
#[inline(always)]
pub(crate) fn hit(point: Point) {
    #[cfg(feature = "fault-injection")]
    armed::hit(point);
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for point in Point::ALL {
            assert_eq!(point.name().parse::<Point>().unwrap(), point);
        }
        assert!("nowhere".parse::<Point>().unwrap_err().contains("owner-after-list"));
        assert_eq!("pause".parse::<Action>().unwrap(), Action::Pause);
        assert_eq!("stop".parse::<Action>().unwrap(), Action::Stop);
        assert!("explode".parse::<Action>().is_err());
    }

    #[test]
    fn unarmed_points_do_nothing() {
        for point in Point::ALL {
            hit(point);
        }
    }
}
