//! Handing over more than a listener: an established connection and an open file.
//!
//! The server keeps one long-lived TCP connection to a backend (think of an event collector
//! or a database) and an append-only log file, and writes a line to both for every request it
//! answers. A new generation inherits the connection and the open file along with the listener:
//! the backend sees a single connection for the life of the service, and the log keeps going
//! into the same file even if it was renamed in between (as a log rotation without a reopen
//! signal would leave it).
//!
//! ```text
//! cargo run --example connection_handover -- [DIR] [ADDR] [BACKEND] [LOG]
//! ```
//!
//! `DIR` is the coordination directory (default: `tableroll-handover` in `$XDG_RUNTIME_DIR`,
//! else in the temporary directory; created if missing); `ADDR` where to listen the first time
//! (default `127.0.0.1:8082`); `BACKEND` where to connect the first time (default
//! `127.0.0.1:9000`); `LOG` the file opened the first time (default `tableroll-handover.log`
//! next to the default directory).
//!
//! Try it by hand, in two terminals (and one for the backend):
//!
//! ```text
//! backend$    nc -lk 127.0.0.1 9000               # every line arrives on one connection
//! terminal 1$ cargo run --example connection_handover
//! terminal 2$ curl localhost:8082/                # hello from 1001; nc prints "request pid=1001 …"
//! terminal 2$ cargo run --example connection_handover   # terminal 1 exits
//! terminal 2$ curl localhost:8082/                # hello from 1002; nc prints "request pid=1002 …"
//! ```
//!
//! One line on stdout for each step, for scripts and tests:
//! `ready pid=PID addr=ADDR backend=new|inherited log=new|inherited`, `draining pid=PID`,
//! `exit pid=PID served=N`. On the backend connection: `hello pid=PID` when a generation starts
//! using it, then `request pid=PID n=N` for each request. In the log: `request pid=PID n=N`.
//!
//! What to know about sharing an established connection: both generations hold the same
//! socket, so either may write while both run, a line at a time (one `write` call each, which
//! a stream socket does not interleave for lines this short). Neither may read unless they
//! agree who reads, or a reply can go to the wrong process. Closing one copy leaves the
//! connection up; `shutdown(2)` would end it for both, so a draining generation only drops it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tableroll::{UpgradeComplete, Upgrader};

/// How long the accept loop sleeps when no connection is waiting (see `examples/std_http.rs`).
const ACCEPT_IDLE_WAIT: Duration = Duration::from_millis(2);
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

struct Args {
    dir: PathBuf,
    addr: String,
    backend: String,
    log: PathBuf,
}

/// What every request writes to: the backend connection and the log, inherited or new.
struct Sinks {
    pid: u32,
    backend: Mutex<TcpStream>,
    log: Mutex<File>,
    served: AtomicU64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let pid = std::process::id();

    let upgrader = Upgrader::new(&args.dir)?;
    let listener = upgrader.fds().listen_tcp("web", &args.addr)?;
    // The inherited connection if there is one: `connect_tcp` only connects if there is not.
    let backend = upgrader.fds().connect_tcp("backend", &args.backend)?;
    // The inherited open file if there is one: the path is only opened if there is not.
    let log = upgrader.fds().open_file("log", &args.log, OpenOptions::new().append(true).create(true))?;
    let origin =
        |id: &str| if upgrader.inherited_ids().iter().any(|i| i == id) { "inherited" } else { "new" };
    let (backend_origin, log_origin) = (origin("backend"), origin("log"));
    listener.set_nonblocking(true)?;
    upgrader.ready()?;

    let sinks = Arc::new(Sinks {
        pid,
        backend: Mutex::new(backend),
        log: Mutex::new(log),
        served: AtomicU64::new(0),
    });
    sinks.send_backend(&format!("hello pid={pid}\n"))?;
    println!("ready pid={pid} addr={} backend={backend_origin} log={log_origin}", listener.local_addr()?);

    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    while let Some(conn) = accept_until(&listener, &upgrader.upgrade_complete())? {
        let sinks = sinks.clone();
        handlers.retain(|h| !h.is_finished());
        handlers.push(std::thread::spawn(move || {
            if let Err(e) = sinks.handle(conn) {
                eprintln!("pid {pid}: a request failed: {e}");
            }
        }));
    }
    drop(listener);
    println!("draining pid={pid}");
    for handler in handlers {
        let _ = handler.join();
    }
    // Dropping the connection and the file closes only this process's copies.
    println!("exit pid={pid} served={}", sinks.served.load(Ordering::SeqCst));
    Ok(())
}

/// The next connection, or `None` once the upgrade completed (see `examples/std_http.rs`).
fn accept_until(listener: &TcpListener, done: &UpgradeComplete) -> io::Result<Option<TcpStream>> {
    while !done.is_complete() {
        match listener.accept() {
            Ok((conn, _)) => return Ok(Some(conn)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                done.wait_timeout(ACCEPT_IDLE_WAIT);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

impl Sinks {
    /// Reads one request, records it on the backend and in the log, and answers it.
    fn handle(&self, mut conn: TcpStream) -> io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        read_head(&mut conn)?;
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        let record = format!("request pid={} n={n}\n", self.pid);
        self.send_backend(&record)?;
        self.append_log(&record)?;
        let body = format!("hello from {}\n", self.pid);
        write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    }

    /// One line to the backend, in one `write` so that the other generation's lines cannot
    /// land inside it.
    fn send_backend(&self, line: &str) -> io::Result<()> {
        let backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        (&*backend).write_all(line.as_bytes())
    }

    /// One line to the log; `O_APPEND` keeps both generations' lines whole and in order.
    fn append_log(&self, line: &str) -> io::Result<()> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        (&*log).write_all(line.as_bytes())
    }
}

/// Reads until the end of the request head.
fn read_head(conn: &mut TcpStream) -> io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        match conn.read(&mut chunk)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-head")),
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(())
}

/// `[DIR] [ADDR] [BACKEND] [LOG]`, with the defaults filled in and the directory created.
fn args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let text = |arg: Option<std::ffi::OsString>, default: &str| match arg {
        Some(arg) => arg.into_string().map_err(|a| format!("the argument {a:?} is not UTF-8")),
        None => Ok(default.to_string()),
    };
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| default_path("tableroll-handover"));
    let addr = text(args.next(), "127.0.0.1:8082")?;
    let backend = text(args.next(), "127.0.0.1:9000")?;
    let log = args.next().map(PathBuf::from).unwrap_or_else(|| default_path("tableroll-handover.log"));
    if let Some(extra) = args.next() {
        let usage = "usage: connection_handover [DIR] [ADDR] [BACKEND] [LOG]";
        return Err(format!("unexpected argument {extra:?}; {usage}").into());
    }
    create_private_dir(&dir)?;
    Ok(Args { dir, addr, backend, log })
}

/// `name` in the user's runtime directory, or else in the temporary directory.
fn default_path(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join(name)
}

/// The coordination directory is the trust boundary: only this user may enter it.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
