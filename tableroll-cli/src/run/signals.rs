//! Signals to the supervisor, delivered as readable bytes on a socket its loop polls.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use signal_hook::iterator::{Handle, Signals};

/// Catches the given signals from creation until drop.
pub struct SignalPipe {
    read: UnixStream,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalPipe {
    pub fn catch(signals: &[i32]) -> io::Result<SignalPipe> {
        let mut caught = Signals::new(signals)?;
        let handle = caught.handle();
        let (read, mut write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in caught.forever() {
                // Signal numbers fit a byte on Linux (at most 64).
                if io::Write::write_all(&mut write, &[signal as u8]).is_err() {
                    break;
                }
            }
        })?;
        Ok(SignalPipe { read, handle, thread: Some(thread) })
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

impl Drop for SignalPipe {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
