//! Signals to the supervisor (and to `tableroll wait`), delivered as readable bytes on a socket
//! its loop polls.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use crate::signal_thread::SignalThread;

/// Catches the given signals from creation until drop.
pub struct SignalPipe {
    read: UnixStream,
    _caught: SignalThread,
}

impl SignalPipe {
    pub fn catch(signals: &[i32]) -> io::Result<SignalPipe> {
        let (read, mut write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        // Signal numbers fit a byte on Linux (at most 64).
        let caught = SignalThread::spawn(signals, move |signal| write.write_all(&[signal as u8]).is_ok())?;
        Ok(SignalPipe { read, _caught: caught })
    }

    /// Readable when a signal is waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals received since the last call, in order.
    pub fn take(&self) -> Vec<i32> {
        let mut buf = [0u8; 64];
        let mut signals = Vec::new();
        loop {
            match (&self.read).read(&mut buf) {
                Ok(0) => return signals,
                Ok(n) => signals.extend(buf[..n].iter().map(|&b| i32::from(b))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return signals,
            }
        }
    }
}
