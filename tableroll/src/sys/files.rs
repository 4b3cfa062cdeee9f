//! Opening files in the coordination directory without following symlinks, and checking
//! access to it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{Access, OFlags};

/// How a file is opened by [`open_nofollow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Read only; never blocks on a FIFO put at the path (`O_NONBLOCK`).
    Read,
    /// Read and write, created with `mode` if missing, never truncated.
    ReadWriteCreate { mode: u32 },
    /// Read, and write only at the end (`O_APPEND`: each write lands whole at the end),
    /// created with `mode` if missing.
    ReadAppendCreate { mode: u32 },
}

/// Opens `path` without following a symlink at its last component (`O_NOFOLLOW`); then checks
/// that it is a regular file.
///
/// # Errors
///
/// The file cannot be opened (a symlink gives `ELOOP`), or is not a regular file
/// (`InvalidInput`).
pub(crate) fn open_nofollow(path: &Path, how: OpenMode) -> io::Result<File> {
    let mut options = OpenOptions::new();
    let file = match how {
        OpenMode::Read => {
            let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
            options.read(true).custom_flags(flags.bits() as i32).open(path)?
        }
        OpenMode::ReadWriteCreate { mode } => options
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(path)?,
        // Not blocking on a FIFO put at the path either.
        OpenMode::ReadAppendCreate { mode } => options
            .read(true)
            .append(true)
            .create(true)
            .mode(mode)
            .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
            .open(path)?,
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`).
///
/// # Errors
///
/// The kernel has no `getrandom` (older than 3.17), or it was interrupted before filling all.
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let n = rustix::rand::getrandom(&mut *buf, rustix::rand::GetRandomFlags::empty())?;
    if n == buf.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::Interrupted, "getrandom returned fewer bytes"))
    }
}

/// Whether this process may create files in the directory `path` (`access(2)` for write and
/// search permission).
///
/// # Errors
///
/// The check failed: no permission (`EACCES`), a read-only file system, a missing path.
pub(crate) fn check_writable_dir(path: &Path) -> io::Result<()> {
    rustix::fs::access(path, Access::WRITE_OK | Access::EXEC_OK).map_err(Into::into)
}
