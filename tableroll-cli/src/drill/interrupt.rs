//! SIGINT and SIGTERM become an [`Event::Interrupted`] in the drill's event channel, so the
//! main loop stops where it is and cleans up: children stopped (killed by their pid if they
//! linger), the temporary directory removed.

use std::io;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::generation::Event;

/// Forwards signals while alive; stops forwarding when dropped.
pub struct Interrupts {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Interrupts {
    /// Catches SIGINT and SIGTERM from now on and sends each as an event to `events`.
    pub fn forward(events: Sender<Event>) -> io::Result<Interrupts> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
            for _ in signals.forever() {
                if events.send(Event::Interrupted).is_err() {
                    break;
                }
            }
        })?;
        Ok(Interrupts { handle, thread: Some(thread) })
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
