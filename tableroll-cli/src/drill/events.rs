//! What a demo server tells the drill: one JSON object a line on its stdout.
//!
//! Times named `…_ns` are readings of `CLOCK_MONOTONIC` (see [`crate::sys::now_ns`]), which
//! the drill can compare with its own readings; `…_us` are durations measured inside the
//! server.

use serde::{Deserialize, Serialize};

/// One line of a demo server's stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Joined the group and holds its listener; accepting from now on.
    Listening {
        /// Where it serves: `HOST:PORT` or a socket path.
        addr: String,
        /// Time inside `Builder::build()`: lock, connect, every descriptor received.
        construction_us: u64,
        /// How many descriptors it inherited.
        inherited: usize,
    },
    /// `ready()` returned: it is the owner.
    Ready {
        /// Time inside `ready()`.
        ready_us: u64,
        /// When `ready()` returned.
        at_ns: u64,
    },
    /// Its `upgrade_complete()` fired: a newer generation took over (or it was told to stop).
    UpgradeComplete {
        /// When the signal fired.
        at_ns: u64,
    },
    /// About to kill itself with SIGKILL, as the drill's `--crash` asked: the last line it
    /// writes.
    Crash {
        /// Just before the kill.
        at_ns: u64,
        /// The connections it held open (accepted and not yet closed), counted after it stopped
        /// accepting: the most requests that can die with it, one per connection.
        open_connections: u64,
    },
    /// The newer generation that took over from it died during its probation, and it is the
    /// owner again (its `on_rollback` hook ran).
    Rollback {
        /// The id of the owner that died, as the owner file named it (`gen-N`).
        failed_owner: String,
        /// The library's measure: from seeing that owner gone to being the owner again.
        took_us: u64,
        /// When the hook ran, just after it was recorded as the owner again.
        at_ns: u64,
    },
    /// Stopped accepting and finished every request in flight; about to exit 0.
    Exit {
        /// Requests answered by this generation.
        served: u64,
    },
    /// Something failed; about to exit 1.
    Error {
        /// What failed.
        message: String,
    },
}

impl ServerEvent {
    /// The event as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"event":"error","message":"{e}"}}"#))
    }

    /// Whether it is a [`ServerEvent::Crash`].
    pub fn is_crash(&self) -> bool {
        matches!(self, ServerEvent::Crash { .. })
    }

    /// Whether it is a [`ServerEvent::Rollback`].
    pub fn is_rollback(&self) -> bool {
        matches!(self, ServerEvent::Rollback { .. })
    }

    /// Parses one line.
    pub fn from_line(line: &str) -> Result<ServerEvent, String> {
        serde_json::from_str(line).map_err(|e| format!("unexpected line {line:?} from a demo server: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_lines() {
        let events = [
            ServerEvent::Listening { addr: "127.0.0.1:80".into(), construction_us: 3, inherited: 1 },
            ServerEvent::Ready { ready_us: 1, at_ns: 2 },
            ServerEvent::UpgradeComplete { at_ns: 5 },
            ServerEvent::Crash { at_ns: 6, open_connections: 2 },
            ServerEvent::Rollback { failed_owner: "gen-3".into(), took_us: 7, at_ns: 8 },
            ServerEvent::Exit { served: 9 },
            ServerEvent::Error { message: "no\n\"way\"".into() },
        ];
        for event in events {
            let line = event.to_line();
            assert!(!line.contains('\n'));
            assert_eq!(ServerEvent::from_line(&line), Ok(event));
        }
        assert_eq!(
            ServerEvent::from_line(r#"{"event":"ready","ready_us":7,"at_ns":8}"#),
            Ok(ServerEvent::Ready { ready_us: 7, at_ns: 8 })
        );
        assert!(ServerEvent::from_line("hello").is_err());
    }
}
