//! Signals caught on a thread of their own and handed to a callback, from creation until drop:
//! the drill turns them into events of its loop, `run` into bytes its poll loop reads.

use std::io;
use std::thread::JoinHandle;

use signal_hook::iterator::{Handle, Signals};

/// Catches its signals while alive; restores their handling when dropped.
pub struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalThread {
    /// Catches `signals` from now on and calls `on_signal` with each, on a thread named
    /// "signals", until it returns false or this is dropped.
    pub fn spawn(
        signals: &[i32],
        mut on_signal: impl FnMut(i32) -> bool + Send + 'static,
    ) -> io::Result<SignalThread> {
        let mut caught = Signals::new(signals)?;
        let handle = caught.handle();
        let thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in caught.forever() {
                if !on_signal(signal) {
                    break;
                }
            }
        })?;
        Ok(SignalThread { handle, thread: Some(thread) })
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
