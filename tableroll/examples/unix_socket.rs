//! A server on a Unix listening socket, upgraded in place, on tokio without a framework: each
//! new generation takes the socket over from the running one (same path, same socket, never
//! unlinked in between), which stops accepting, finishes its connections and exits.
//!
//! ```text
//! cargo run --example unix_socket -- [DIR] [PATH]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default:
//! `tableroll-unix-socket` in `$XDG_RUNTIME_DIR`, else in the temporary directory; created if
//! missing). `PATH` is where the server's socket is bound the first time (default:
//! `tableroll-unix-socket.sock` next to the default directory); later generations inherit it.
//! Keep it out of `DIR`, which belongs to the library.
//!
//! Try it by hand, in two terminals:
//!
//! ```text
//! terminal 1$ cargo run --example unix_socket         # ready pid=1001 path=…/tableroll-unix-socket.sock
//! terminal 2$ curl --unix-socket "${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/tableroll-unix-socket.sock" http://x/
//!                                                     # hello from 1001
//! terminal 2$ cargo run --example unix_socket         # ready pid=1002 …; terminal 1 exits
//! terminal 2$ curl --unix-socket "${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/tableroll-unix-socket.sock" http://x/
//!                                                     # hello from 1002
//! ```
//!
//! Every request (one per connection) is answered `hello from PID`. One line on stdout for each
//! step, for scripts and tests: `ready pid=PID path=PATH`, `draining pid=PID` once it stopped
//! accepting, `exit pid=PID served=N` once its connections are done.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinSet;

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, path) = args()?;
    let pid = std::process::id();

    let upgrader = tableroll::Upgrader::new(&dir)?;
    let listener = upgrader.fds().listen_unix_tokio("app", &path)?;
    upgrader.ready()?;
    println!("ready pid={pid} path={}", path.display());

    let served = Arc::new(AtomicU64::new(0));
    let mut connections = JoinSet::new();
    let mut upgrade_complete = upgrader.upgrade_complete();
    loop {
        tokio::select! {
            () = &mut upgrade_complete => break,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    connections.spawn(serve(conn, pid, served.clone()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(e.into()),
            },
            // Reap finished connections as they go, so the set does not grow for ever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // The socket stays open, and its path in place, in the new generation.
    drop(listener);
    println!("draining pid={pid}");
    while connections.join_next().await.is_some() {}
    println!("exit pid={pid} served={}", served.load(Ordering::SeqCst));
    Ok(())
}

/// Reads one request head and answers it; a client that sends nothing in time is dropped.
async fn serve(mut conn: UnixStream, pid: u32, served: Arc<AtomicU64>) {
    match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return eprintln!("pid {pid}: reading a request: {e}"),
        Err(_) => return eprintln!("pid {pid}: no request within {REQUEST_TIMEOUT:?}"),
    }
    let body = format!("hello from {pid}\n");
    let response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    match conn.write_all(response.as_bytes()).await {
        Ok(()) => {
            served.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => eprintln!("pid {pid}: answering: {e}"),
    }
}

/// Reads until the end of the request head.
async fn read_head(conn: &mut UnixStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head too long"));
        }
        match conn.read(&mut chunk).await? {
            0 => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed mid-head")),
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(())
}

/// `[DIR] [PATH]`, with the defaults filled in and the directory created.
fn args() -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| default_path("tableroll-unix-socket"));
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| default_path("tableroll-unix-socket.sock"));
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?}; usage: unix_socket [DIR] [PATH]").into());
    }
    create_private_dir(&dir)?;
    Ok((dir, path))
}

/// `name` in the user's runtime directory, or else in the temporary directory.
fn default_path(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join(name)
}

/// The coordination directory is the trust boundary: only this user may enter it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
