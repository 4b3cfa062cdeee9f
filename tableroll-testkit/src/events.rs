//! What a child process reported, as a queue a test waits on: each item with the moment the
//! reading thread received it, the items not consumed yet kept in order, and the end of the
//! output remembered.
//!
//! Every harness over [`crate::process::Process`] (the conformance peer's JSON events, the
//! examples' word lines, `tableroll run`'s two JSON streams) waits through this one type.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

/// Where a reading thread sends items, each with the moment it was read.
pub type EventSender<T> = Sender<(Instant, T)>;

/// How a wait ended without the item it waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed<T> {
    /// The deadline passed.
    TimedOut,
    /// The sender is gone (the process closed its output) and no pending item matched.
    Ended,
    /// An item for which the stop condition held arrived first: here it is, with the moment it
    /// was read.
    Stopped(Instant, T),
}

/// Items received from a child process, consumed in any order.
pub struct Events<T> {
    items: Receiver<(Instant, T)>,
    pending: VecDeque<(Instant, T)>,
    ended: bool,
}

impl<T> Events<T> {
    /// A queue, and the sender its reading thread feeds.
    pub fn channel() -> (EventSender<T>, Events<T>) {
        let (tx, items) = mpsc::channel();
        (tx, Events { items, pending: VecDeque::new(), ended: false })
    }

    /// Whether the sender is gone and everything it sent was received.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next item received; `Err` if the deadline passed or the output ended first.
    pub fn receive(&mut self, deadline: Instant) -> Result<(Instant, T), Missed<T>> {
        if self.ended {
            return Err(Missed::Ended);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.items.recv_timeout(left) {
            Ok(item) => Ok(item),
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Err(Missed::Ended)
            }
            Err(RecvTimeoutError::Timeout) => Err(Missed::TimedOut),
        }
    }

    /// Receives one more item into the pending ones.
    pub fn receive_pending(&mut self, deadline: Instant) -> Result<(), Missed<T>> {
        let item = self.receive(deadline)?;
        self.pending.push_back(item);
        Ok(())
    }

    /// Moves every item received so far, without waiting, into the pending ones.
    pub fn poll(&mut self) {
        while let Ok(item) = self.items.try_recv() {
            self.pending.push_back(item);
        }
    }

    /// Takes the first item, pending or coming before `deadline`, for which `wanted` holds; the
    /// others stay pending, in order. A newly received item for which `stop` holds (and `wanted`
    /// does not) ends the wait instead: it is taken and returned in [`Missed::Stopped`].
    pub fn wait(
        &mut self,
        deadline: Instant,
        wanted: impl Fn(&T) -> bool,
        stop: impl Fn(&T) -> bool,
    ) -> Result<(Instant, T), Missed<T>> {
        if let Some(i) = self.pending.iter().position(|(_, item)| wanted(item)) {
            return Ok(self.pending.remove(i).expect("position is in range"));
        }
        loop {
            let (at, item) = self.receive(deadline)?;
            if wanted(&item) {
                return Ok((at, item));
            }
            if stop(&item) {
                return Err(Missed::Stopped(at, item));
            }
            self.pending.push_back((at, item));
        }
    }

    /// Receives into the pending items until the output ends (or `deadline` passes: then
    /// `false`).
    pub fn wait_end(&mut self, deadline: Instant) -> bool {
        loop {
            match self.receive_pending(deadline) {
                Ok(()) => {}
                Err(Missed::Ended) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Puts an item back at the front of the pending ones.
    pub fn push_front(&mut self, at: Instant, item: T) {
        self.pending.push_front((at, item));
    }

    /// The items received and not consumed, in order.
    pub fn pending(&self) -> impl Iterator<Item = &T> {
        self.pending.iter().map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn items_not_waited_for_stay_pending_in_order() {
        let (tx, mut events) = Events::channel();
        for n in [1, 2, 3, 4] {
            tx.send((Instant::now(), n)).unwrap();
        }
        assert_eq!(events.wait(soon(), |n| *n == 3, |_| false).unwrap().1, 3);
        assert_eq!(events.pending().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(events.wait(soon(), |n| *n == 2, |_| false).unwrap().1, 2);
        drop(tx);
        assert!(events.wait_end(soon()));
        assert_eq!(events.pending().copied().collect::<Vec<_>>(), [1, 4]);
        assert_eq!(events.wait(soon(), |n| *n == 9, |_| false), Err(Missed::Ended));
    }

    #[test]
    fn a_stop_item_ends_the_wait_and_stays() {
        let (tx, mut events) = Events::channel();
        tx.send((Instant::now(), -1)).unwrap();
        tx.send((Instant::now(), 5)).unwrap();
        assert!(matches!(events.wait(soon(), |n| *n == 5, |n| *n < 0), Err(Missed::Stopped(_, -1))));
        assert_eq!(events.pending().count(), 0);
        assert_eq!(events.wait(soon(), |n| *n == 5, |n| *n < 0).unwrap().1, 5);
    }

    #[test]
    fn nothing_in_time_is_a_timeout() {
        let (_tx, mut events) = Events::<u8>::channel();
        assert_eq!(events.wait(Instant::now(), |_| true, |_| false), Err(Missed::TimedOut));
    }
}
