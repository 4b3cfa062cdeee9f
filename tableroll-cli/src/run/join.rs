//! Joining the group while answering SIGTERM and SIGINT: the library's `build` may wait for the
//! lock as long as another newcomer holds it, and a supervisor told to stop meanwhile gives the
//! attempt up cleanly, its upgrade socket removed, instead of dying of the signal.
//!
//! `build` cannot be interrupted, so it runs on a thread of its own (a "join" thread, which
//! owns the builder and ends with `build`); the supervisor's thread waits for its answer or a
//! stop. Given up, the process exits with the thread still blocked in `flock`: the kernel
//! releases what it holds.

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::signals::SignalPipe;
use crate::sys::wait_readable;

/// Runs `builder.build()` until it answers or a SIGTERM or SIGINT arrives on `signals` (other
/// signals are dropped: there is no program yet to pass them to); `None` after a stop. `id`
/// is the id the builder was given, if any: on a stop, the upgrade socket `build` bound for it
/// is removed.
pub fn join(
    builder: tableroll::Builder,
    dir: &Path,
    id: Option<&str>,
    signals: &SignalPipe,
) -> anyhow::Result<Option<tableroll::Upgrader>> {
    let (done, done_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("creating the join pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("join".into())
        .spawn(move || {
            let _ = tx.send(builder.build());
            // Closing the write end makes `done` readable.
            drop(done_write);
        })
        .context("spawning the join thread")?;
    loop {
        let woke = wait_readable(&[done.as_fd(), signals.fd()], None).context("waiting to join")?;
        if woke[0] {
            let upgrader = rx.recv().context("the join thread ended without an answer")?;
            return Ok(Some(upgrader?));
        }
        if signals.take().iter().any(|&s| s == SIGTERM || s == SIGINT) {
            // Joined meanwhile: dropping the upgrader stops it, which removes its socket.
            drop(rx.try_recv());
            remove_socket(dir, id);
            return Ok(None);
        }
    }
}

/// Removes this process's upgrade socket `DIR/<id>.sock`, left by a `build` that is still
/// waiting. Without a known id, the library's default id starts with this process's pid.
fn remove_socket(dir: &Path, id: Option<&str>) {
    let candidates: Vec<PathBuf> = match id {
        Some(id) => vec![dir.join(format!("{id}.sock"))],
        None => own_default_sockets(dir),
    };
    for path in candidates {
        if std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_socket()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The sockets in `dir` named like the library's default id for this process (`<pid>-<hex>`).
fn own_default_sockets(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| {
            name.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".sock"))
                .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|name| dir.join(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn only_this_process_upgrade_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let sockets =
            [format!("{me}-00c0ffee.sock"), format!("{}-00c0ffee.sock", me + 1), "g2-1-ab.sock".into()];
        for name in &sockets {
            drop(UnixListener::bind(dir.path().join(name)).unwrap());
        }
        // Not a socket: never removed, whatever its name.
        std::fs::write(dir.path().join(format!("{me}-0bad.sock")), b"").unwrap();
        let names = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        remove_socket(dir.path(), None);
        let mut expected =
            vec![format!("{}-00c0ffee.sock", me + 1), format!("{me}-0bad.sock"), "g2-1-ab.sock".into()];
        expected.sort();
        assert_eq!(names(), expected);
        remove_socket(dir.path(), Some("g2-1-ab"));
        expected.retain(|name| name != "g2-1-ab.sock");
        assert_eq!(names(), expected);
    }
}
