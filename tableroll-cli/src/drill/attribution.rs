//! Which failed requests a crashed generation took down with it.
//!
//! Requests that a generation had accepted and not answered when it crashed are lost whatever
//! the library does; the drill counts them apart, as lost *inside* the crashed generation, and
//! judges the library by the rest. The client cannot tell which server it reached, so the drill
//! puts a failed request down to a crash when all of these hold:
//!
//! - it failed the way requests to a dead peer fail: a reset, or the connection closed before a
//!   whole response (a refused connection never is: nobody took it; nor is a timeout: a dead
//!   peer's kernel answers at once);
//! - it ended no earlier than the crash was reported (the report comes just before the kill);
//! - it started before the drill saw the generation gone (its stdout closed), so it may have
//!   reached the generation while it was alive;
//! - no more requests are put down to the crash than the connections the generation held open
//!   when it crashed (it accepted none after counting them, and a closed-loop client has at most
//!   one request on a connection).
//!
//! A failure that fits the windows of several crashes goes to the earliest that has room.
//! Every other failed request is lost outside the crashed generations.

/// A crashed generation, as the attribution sees it (times on [`crate::sys::now_ns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashWindow {
    /// When it reported its crash, just before the kill.
    pub at_ns: u64,
    /// When the drill saw it gone.
    pub gone_ns: u64,
    /// The connections it held open at its crash: the most requests put down to it.
    pub open_connections: u64,
}

impl CrashWindow {
    fn holds(&self, (started_ns, ended_ns): (u64, u64)) -> bool {
        ended_ns >= self.at_ns && started_ns < self.gone_ns
    }
}

/// How many of `failures` (resets and early closes, each as its start and end) each of
/// `crashes` took down, in the order of `crashes`.
pub fn lost_inside(crashes: &[CrashWindow], failures: &[(u64, u64)]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..crashes.len()).collect();
    order.sort_by_key(|&i| crashes[i].at_ns);
    let mut failures = failures.to_vec();
    failures.sort_by_key(|&(_, ended_ns)| ended_ns);
    let mut lost = vec![0; crashes.len()];
    for failure in failures {
        let room =
            order.iter().find(|&&i| crashes[i].holds(failure) && lost[i] < crashes[i].open_connections);
        if let Some(&i) = room {
            lost[i] += 1;
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH: CrashWindow = CrashWindow { at_ns: 100, gone_ns: 110, open_connections: 3 };

    #[test]
    fn failures_within_the_window_are_put_down_to_the_crash() {
        // Started before, ended at or after the report.
        assert_eq!(lost_inside(&[CRASH], &[(90, 100), (95, 103), (109, 130)]), [3]);
    }

    #[test]
    fn failures_before_the_crash_or_started_after_it_was_gone_are_not() {
        assert_eq!(lost_inside(&[CRASH], &[(90, 99), (110, 120), (200, 210)]), [0]);
    }

    #[test]
    fn no_more_than_the_connections_it_held() {
        let failures = [(90, 101), (91, 102), (92, 103), (93, 104), (94, 105)];
        assert_eq!(lost_inside(&[CRASH], &failures), [3]);
        let idle = CrashWindow { open_connections: 0, ..CRASH };
        assert_eq!(lost_inside(&[idle], &failures), [0]);
    }

    #[test]
    fn overlapping_windows_fill_the_earliest_crash_first() {
        let later = CrashWindow { at_ns: 102, gone_ns: 120, open_connections: 5 };
        let failures = [(90, 101), (91, 103), (92, 104), (93, 105), (94, 106)];
        // Listed later first: the order of the answer follows the order of the crashes given.
        assert_eq!(lost_inside(&[later, CRASH], &failures), [2, 3]);
    }

    #[test]
    fn no_crash_takes_nothing() {
        assert!(lost_inside(&[], &[(1, 2)]).is_empty());
    }
}
