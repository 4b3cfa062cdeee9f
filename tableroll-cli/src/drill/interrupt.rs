//! SIGINT and SIGTERM become an [`Event::Interrupted`] in the drill's event channel, so the
//! main loop stops where it is and cleans up: children stopped (killed by their pid if they
//! linger), the temporary directory removed.

use std::io;
use std::sync::mpsc::Sender;

use signal_hook::consts::{SIGINT, SIGTERM};

use super::generation::Event;
use crate::signal_thread::SignalThread;

/// Catches SIGINT and SIGTERM from now on and sends each as an event to `events`, until the
/// returned thread is dropped.
pub fn forward(events: Sender<Event>) -> io::Result<SignalThread> {
    SignalThread::spawn(&[SIGINT, SIGTERM], move |_| events.send(Event::Interrupted).is_ok())
}
