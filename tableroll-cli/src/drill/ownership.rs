//! Which generation owned the group when: the owner as the drill reconstructs it from the
//! generations' events, ordered by their own timestamps (one clock for every process) rather
//! than by the order their lines reached the drill, since every generation's stdout is read on a
//! thread of its own.
//!
//! A generation becomes the owner when its `ready()` returns, or again at a rollback; a
//! generation that crashes while it is the owner leaves the group without one until another
//! becomes the owner.

use super::generation::Generation;

/// A change of owner, at a time ([`crate::sys::now_ns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// This generation's `ready()` returned.
    Ready(u32),
    /// This generation was the owner again after a rollback.
    RolledBack(u32),
    /// This generation crashed.
    Crashed(u32),
}

/// The owner's history.
#[derive(Debug, Default)]
pub struct Ownership {
    /// Every change seen, by time.
    changes: Vec<(u64, Change)>,
}

impl Ownership {
    /// The history told by `gens`' events.
    pub fn of(gens: &[Generation]) -> Ownership {
        let mut changes = Vec::new();
        for gen in gens {
            if let Some((_, at_ns)) = gen.ready {
                changes.push((at_ns, Change::Ready(gen.number)));
            }
            changes.extend(gen.rollbacks.iter().map(|r| (r.at_ns, Change::RolledBack(gen.number))));
            if let Some(crash) = gen.crash {
                changes.push((crash.at_ns, Change::Crashed(gen.number)));
            }
        }
        Ownership::new(changes)
    }

    /// The history made of `changes`, in any order.
    fn new(mut changes: Vec<(u64, Change)>) -> Ownership {
        changes.sort_by_key(|&(at_ns, _)| at_ns);
        Ownership { changes }
    }

    /// The owner just before `at_ns` (changes at `at_ns` itself not included); `None` if there
    /// was none.
    pub fn owner_before(&self, at_ns: u64) -> Option<u32> {
        let mut owner = None;
        for &(_, change) in self.changes.iter().take_while(|(t, _)| *t < at_ns) {
            owner = match change {
                Change::Ready(n) | Change::RolledBack(n) => Some(n),
                Change::Crashed(n) if owner == Some(n) => None,
                Change::Crashed(_) => owner,
            };
        }
        owner
    }

    /// The owner after every change seen.
    pub fn owner_now(&self) -> Option<u32> {
        self.owner_before(u64::MAX)
    }

    /// The generation that owned the group when generation `gen` became the owner (the one it
    /// took over from); `None` if it never became the owner, or if it found no owner.
    pub fn predecessor(&self, gen: &Generation) -> Option<u32> {
        gen.ready.and_then(|(_, at_ns)| self.owner_before(at_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ownership(changes: &[(u64, Change)]) -> Ownership {
        Ownership::new(changes.to_vec())
    }

    #[test]
    fn each_ready_makes_an_owner() {
        let o = ownership(&[(10, Change::Ready(0)), (20, Change::Ready(1)), (30, Change::Ready(2))]);
        assert_eq!(o.owner_before(10), None);
        assert_eq!(o.owner_before(11), Some(0));
        assert_eq!(o.owner_before(20), Some(0));
        assert_eq!(o.owner_before(25), Some(1));
        assert_eq!(o.owner_now(), Some(2));
    }

    #[test]
    fn a_crashed_owner_leaves_none_until_a_rollback_or_a_newcomer() {
        let crash = [(10, Change::Ready(0)), (20, Change::Ready(1)), (25, Change::Crashed(1))];
        let o = ownership(&crash);
        assert_eq!(o.owner_before(30), None);
        let o = ownership(&[crash.as_slice(), &[(26, Change::RolledBack(0))]].concat());
        assert_eq!(o.owner_before(30), Some(0));
        let o = ownership(&[crash.as_slice(), &[(40, Change::Ready(2))]].concat());
        assert_eq!(o.owner_before(40), None);
        assert_eq!(o.owner_now(), Some(2));
    }

    #[test]
    fn a_crash_of_a_generation_that_is_not_the_owner_changes_nothing() {
        let o = ownership(&[(10, Change::Ready(0)), (20, Change::Crashed(3))]);
        assert_eq!(o.owner_now(), Some(0));
    }

    #[test]
    fn changes_count_in_the_order_of_their_times() {
        // Listed out of order, as lines from different generations may arrive.
        let o = ownership(&[(26, Change::RolledBack(0)), (25, Change::Crashed(1)), (20, Change::Ready(1))]);
        assert_eq!(o.owner_now(), Some(0));
    }
}
