//! An HTTP server on std threads, no async runtime, upgraded in place: each new generation
//! takes the listening socket over from the running one, which stops accepting, finishes the
//! requests in flight and exits.
//!
//! ```text
//! cargo run --example std_http -- [DIR] [ADDR]
//! ```
//!
//! `DIR` is the coordination directory every generation shares (default: `tableroll-std-http`
//! in `$XDG_RUNTIME_DIR`, else in the temporary directory; created if missing). `ADDR` is the
//! address to listen on (default `127.0.0.1:8081`); a later generation given the same address
//! (or a port 0 one) inherits the socket, while one given another address binds that one and
//! the old socket closes when it becomes the owner.
//!
//! Try it by hand, in two terminals:
//!
//! ```text
//! terminal 1$ cargo run --example std_http     # ready pid=1001 addr=127.0.0.1:8081
//! terminal 2$ curl localhost:8081/             # hello from 1001
//! terminal 2$ curl 'localhost:8081/slow?ms=10000' &
//! terminal 2$ cargo run --example std_http     # ready pid=1002 addr=127.0.0.1:8081
//!                                              # terminal 1: draining pid=1001, then, once the
//!                                              # slow request got its answer, exit pid=1001 …
//! terminal 2$ curl localhost:8081/             # hello from 1002
//! ```
//!
//! Endpoints: `GET /` answers `hello from PID`; `GET /slow?ms=N` answers the same after `N`
//! milliseconds; `POST /upload` reads the request body and answers with its length and the pid,
//! and prints `upload pid=PID` when it starts reading, so that a test can hold a request in
//! flight by sending the body late. One request per connection.
//!
//! One line on stdout for each step, for scripts and tests: `ready pid=PID addr=ADDR` once
//! serving, `draining pid=PID` once it stopped accepting, `exit pid=PID served=N` once the
//! requests in flight are answered.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tableroll::{UpgradeComplete, Upgrader};

/// How long the accept loop sleeps when no connection is waiting. The listener must be
/// non-blocking (the next generation shares its mode, see `tableroll::Fds`), and std has no
/// way to wait for "a connection or the end of the upgrade" at once; `wait_timeout` returns as
/// soon as the upgrade completes, so this bounds only the latency of a connection to an idle
/// server. A server that cannot afford it polls the listener with a wake-up descriptor.
const ACCEPT_IDLE_WAIT: Duration = Duration::from_millis(2);
/// How long a client may take to send its request (and the exit to wait for it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the exit waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// The longest `/slow` delay honoured.
const MAX_SLOW: Duration = Duration::from_secs(300);
/// The largest request head and the largest body read.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args()?;
    let pid = std::process::id();

    let upgrader = Upgrader::new(&dir)?;
    let listener = upgrader.fds().listen_tcp("web", &addr)?;
    listener.set_nonblocking(true)?;
    upgrader.ready()?;
    println!("ready pid={pid} addr={}", listener.local_addr()?);

    let in_flight = Arc::new(InFlight::default());
    let served = Arc::new(AtomicU64::new(0));
    let done = upgrader.upgrade_complete();
    while let Some(conn) = accept_until(&listener, &done)? {
        let guard = in_flight.enter();
        let served = served.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(conn, pid, &served) {
                eprintln!("pid {pid}: a request failed: {e}");
            }
            drop(guard);
        });
    }
    // Closing this copy leaves the socket open in the new generation, which accepts what is
    // queued on it from now on.
    drop(listener);
    println!("draining pid={pid}");
    if !in_flight.wait_idle(DRAIN_LIMIT) {
        eprintln!("pid {pid}: requests still in flight after {DRAIN_LIMIT:?}; exiting anyway");
    }
    println!("exit pid={pid} served={}", served.load(Ordering::SeqCst));
    Ok(())
}

/// The next connection, or `None` once the upgrade completed (a newer generation is serving).
fn accept_until(listener: &std::net::TcpListener, done: &UpgradeComplete) -> io::Result<Option<TcpStream>> {
    while !done.is_complete() {
        match listener.accept() {
            Ok((conn, _)) => return Ok(Some(conn)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                done.wait_timeout(ACCEPT_IDLE_WAIT);
            }
            // A client that gave up while queued: not this server's problem.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Requests being handled, and a way to wait until there are none.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

/// One request in flight, until dropped.
struct Entered(Arc<InFlight>);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(self: &Arc<Self>) -> Entered {
        *self.lock() += 1;
        Entered(self.clone())
    }

    /// Waits until no request is in flight; false if `limit` passed first.
    fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut count = self.lock();
        while *count > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            count = self.idle.wait_timeout(count, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut count = self.0.lock();
        *count -= 1;
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Reads one request and answers it.
fn handle(mut conn: TcpStream, pid: u32, served: &AtomicU64) -> io::Result<()> {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux; this handler thread
    // wants blocking reads bounded by a timeout, whatever the platform does.
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let (head, body_start) = read_head(&mut conn)?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match (method, path) {
        ("GET", "/") => ("200 OK", format!("hello from {pid}\n")),
        ("GET", "/slow") => {
            let ms = query.split('&').find_map(|kv| kv.strip_prefix("ms=")).and_then(|ms| ms.parse().ok());
            std::thread::sleep(Duration::from_millis(ms.unwrap_or(1000)).min(MAX_SLOW));
            ("200 OK", format!("hello from {pid}\n"))
        }
        ("POST", "/upload") => {
            println!("upload pid={pid}");
            let length = read_body(&mut conn, &head, body_start)?;
            ("200 OK", format!("received {length} bytes; hello from {pid}\n"))
        }
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    write!(conn, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    served.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// The request head as text, and the bytes read after it (the start of the body).
fn read_head(conn: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let body_start = raw.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&raw).into_owned(), body_start));
        }
        if raw.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        match conn.read(&mut chunk)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-head")),
            n => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads the body announced by `Content-Length`; returns its length.
fn read_body(conn: &mut TcpStream, head: &str, body_start: Vec<u8>) -> io::Result<usize> {
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no valid Content-Length"))?;
    if length > MAX_BODY || body_start.len() > length {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too long"));
    }
    let mut rest = vec![0u8; length - body_start.len()];
    conn.read_exact(&mut rest)?;
    Ok(length)
}

/// `[DIR] [ADDR]`, with the defaults filled in and the directory created.
fn args() -> Result<(PathBuf, String), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| default_dir("tableroll-std-http"));
    let addr = match args.next() {
        Some(addr) => addr.into_string().map_err(|a| format!("the address {a:?} is not UTF-8"))?,
        None => "127.0.0.1:8081".to_string(),
    };
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?}; usage: std_http [DIR] [ADDR]").into());
    }
    create_private_dir(&dir)?;
    Ok((dir, addr))
}

/// `name` in the user's runtime directory, or else in the temporary directory.
fn default_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join(name)
}

/// The coordination directory is the trust boundary: only this user may enter it.
fn create_private_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
