//! A tiny HTTP server written for systemd socket activation, knowing nothing of tableroll:
//! it takes its listeners from `LISTEN_FDS`, reports `READY=1` to `NOTIFY_SOCKET`, answers
//! `GET /` with `hello from gen-<N>`, and on SIGTERM stops accepting, finishes the requests in
//! flight and exits 0. The tests of `tableroll run` drive it; try it by hand with
//!
//! ```sh
//! cargo build -p tableroll-cli
//! mkdir -p /tmp/tr && target/debug/tableroll run --dir /tmp/tr --listen web=tcp:127.0.0.1:8080 \
//!     -- target/debug/activated_server --generation 1
//! # in another terminal: curl localhost:8080; then start the same with --generation 2
//! ```
//!
//! On startup it prints one JSON line on stdout describing what it was given (its pid,
//! `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, the kind of each descriptor from 3 on and
//! every descriptor open in the process), so the tests can check the activation exactly.
//!
//! Flags: `--generation N`; `--ready never` (never reports ready) or `--ready exit:CODE`
//! (exits with CODE instead of reporting ready); `--ignore-sigterm`; `--slow-ms N` (every
//! answer takes N ms). `GET /crash` makes it exit with status 3 at once; each SIGHUP prints a
//! `sighup` line.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::sockopt;
use serde_json::json;

struct Opts {
    generation: u32,
    ready: Ready,
    ignore_sigterm: bool,
    slow: Duration,
}

enum Ready {
    Now,
    Never,
    Exit(u8),
}

fn main() {
    let opts = match parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("activated_server: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = serve(&opts) {
        eprintln!("activated_server gen-{}: {e}", opts.generation);
        std::process::exit(1);
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut opts = Opts { generation: 0, ready: Ready::Now, ignore_sigterm: false, slow: Duration::ZERO };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--generation" => opts.generation = value()?.parse().map_err(|e| format!("--generation: {e}"))?,
            "--slow-ms" => {
                opts.slow = Duration::from_millis(value()?.parse().map_err(|e| format!("--slow-ms: {e}"))?)
            }
            "--ignore-sigterm" => opts.ignore_sigterm = true,
            "--ready" => {
                let v = value()?;
                opts.ready = match v.as_str() {
                    "now" => Ready::Now,
                    "never" => Ready::Never,
                    _ => match v.strip_prefix("exit:").map(str::parse) {
                        Some(Ok(code)) => Ready::Exit(code),
                        _ => return Err(format!("--ready {v:?}: expected now, never or exit:CODE")),
                    },
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// The descriptors systemd-style activation passed: `LISTEN_FDS` from 3 on, only if
/// `LISTEN_PID` is this process (else they were meant for another).
fn activated_fds() -> Result<Vec<OwnedFd>, String> {
    let pid = std::env::var("LISTEN_PID").map_err(|_| "LISTEN_PID is not set")?;
    if pid != std::process::id().to_string() {
        return Err(format!("LISTEN_PID is {pid}, not this process ({})", std::process::id()));
    }
    let count: RawFd = std::env::var("LISTEN_FDS")
        .map_err(|_| "LISTEN_FDS is not set")?
        .parse()
        .map_err(|e| format!("LISTEN_FDS: {e}"))?;
    // SAFETY: under socket activation descriptors 3 .. 3+LISTEN_FDS belong to this process and
    // nothing else in it has taken them; each is owned exactly once here.
    Ok((3..3 + count).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect())
}

fn serve(opts: &Opts) -> Result<(), String> {
    let fds = activated_fds()?;
    report_startup(opts, &fds);
    let listeners: Vec<Listener> = fds.into_iter().filter_map(Listener::from_fd).collect();
    if listeners.is_empty() {
        return Err("no stream listener among the passed descriptors".into());
    }
    let (stop_read, stop_write) = UnixStream::pair().map_err(|e| e.to_string())?;
    if opts.ignore_sigterm {
        // Caught and never acted on: the process lives on after SIGTERM.
        let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, ignored)
            .map_err(|e| format!("catching SIGTERM: {e}"))?;
    } else {
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, stop_write)
            .map_err(|e| format!("catching SIGTERM: {e}"))?;
    }
    report_sighup(opts.generation).map_err(|e| format!("catching SIGHUP: {e}"))?;
    for listener in &listeners {
        listener.set_nonblocking().map_err(|e| format!("O_NONBLOCK: {e}"))?;
    }
    match opts.ready {
        Ready::Now => notify_ready()?,
        Ready::Never => {}
        Ready::Exit(code) => std::process::exit(code.into()),
    }
    let in_flight = accept_until_stopped(opts, &listeners, stop_read.as_fd())?;
    drop(listeners);
    for request in in_flight {
        let _ = request.join();
    }
    println!("{}", json!({ "event": "exiting", "generation": opts.generation, "pid": std::process::id() }));
    Ok(())
}

fn report_startup(opts: &Opts, fds: &[OwnedFd]) {
    let kinds: Vec<String> = fds.iter().map(|fd| describe_fd(fd.as_fd())).collect();
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    // The listing saw its own descriptor, closed by now.
    let open: Vec<RawFd> = listed
        .into_iter()
        .filter(|fd| std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok())
        .collect();
    let event = json!({
        "event": "started",
        "generation": opts.generation,
        "pid": std::process::id(),
        "listen_pid": std::env::var("LISTEN_PID").ok(),
        "listen_fds": std::env::var("LISTEN_FDS").ok(),
        "listen_fdnames": std::env::var("LISTEN_FDNAMES").ok(),
        "notify_socket": std::env::var("NOTIFY_SOCKET").ok(),
        "tableroll_generation": std::env::var("TABLEROLL_GENERATION").ok(),
        "kinds": kinds,
        "open_fds": open,
    });
    println!("{event}");
}

/// `tcp-listener`, `unix-listener`, `udp`, or what else a descriptor is.
fn describe_fd(fd: BorrowedFd<'_>) -> String {
    let Ok(kind) = sockopt::socket_type(fd) else { return "not-a-socket".into() };
    let domain = match sockopt::socket_domain(fd) {
        Ok(rustix::net::AddressFamily::UNIX) => "unix",
        Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6) => {
            if kind == rustix::net::SocketType::DGRAM {
                "udp"
            } else {
                "tcp"
            }
        }
        _ => "other",
    };
    let listening = sockopt::socket_acceptconn(fd).unwrap_or(false);
    match (domain, listening) {
        ("udp", _) => "udp".into(),
        (domain, true) => format!("{domain}-listener"),
        (domain, false) => format!("{domain}-socket"),
    }
}

/// Prints a `sighup` event for each SIGHUP (a reload request, to this server a no-op).
fn report_sighup(generation: u32) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    thread::spawn(move || {
        for _ in signals.forever() {
            println!("{}", json!({ "event": "sighup", "generation": generation, "pid": std::process::id() }));
        }
    });
    Ok(())
}

fn notify_ready() -> Result<(), String> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(()) };
    let socket = UnixDatagram::unbound().map_err(|e| e.to_string())?;
    socket.send_to(b"READY=1\nSTATUS=serving", &path).map_err(|e| format!("notifying readiness: {e}"))?;
    Ok(())
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn from_fd(fd: OwnedFd) -> Option<Listener> {
        match describe_fd(fd.as_fd()).as_str() {
            "tcp-listener" => Some(Listener::Tcp(TcpListener::from(fd))),
            "unix-listener" => Some(Listener::Unix(UnixListener::from(fd))),
            _ => None,
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    /// The next waiting connection, if any.
    fn accept(&self) -> io::Result<Option<Box<dyn Connection>>> {
        let accepted: io::Result<Box<dyn Connection>> = match self {
            Listener::Tcp(l) => l.accept().map(|(c, _)| Box::new(c) as Box<dyn Connection>),
            Listener::Unix(l) => l.accept().map(|(c, _)| Box::new(c) as Box<dyn Connection>),
        };
        match accepted {
            Ok(conn) => Ok(Some(conn)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

trait Connection: Read + Write + Send {
    fn set_blocking(&self) -> io::Result<()>;
}

impl Connection for TcpStream {
    fn set_blocking(&self) -> io::Result<()> {
        self.set_nonblocking(false)
    }
}

impl Connection for UnixStream {
    fn set_blocking(&self) -> io::Result<()> {
        self.set_nonblocking(false)
    }
}

/// Accepts on every listener until SIGTERM; returns the threads still answering.
fn accept_until_stopped(
    opts: &Opts,
    listeners: &[Listener],
    stop: BorrowedFd<'_>,
) -> Result<Vec<thread::JoinHandle<()>>, String> {
    let mut in_flight = Vec::new();
    loop {
        let mut polled: Vec<PollFd<'_>> =
            listeners.iter().map(|l| PollFd::from_borrowed_fd(l.fd(), PollFlags::IN)).collect();
        polled.push(PollFd::from_borrowed_fd(stop, PollFlags::IN));
        match poll(&mut polled, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if !polled.last().map(|p| p.revents().is_empty()).unwrap_or(true) {
            return Ok(in_flight);
        }
        for listener in listeners {
            while let Some(conn) = listener.accept().map_err(|e| format!("accept: {e}"))? {
                let (generation, slow) = (opts.generation, opts.slow);
                in_flight.push(thread::spawn(move || answer(conn, generation, slow)));
            }
        }
        in_flight.retain(|t| !t.is_finished());
    }
}

fn answer(mut conn: Box<dyn Connection>, generation: u32, slow: Duration) {
    let _ = conn.set_blocking();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    if head.starts_with(b"GET /crash ") {
        std::process::exit(3);
    }
    if !slow.is_zero() {
        thread::sleep(slow);
    }
    let body = format!("hello from gen-{generation}\n");
    let response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = conn.write_all(response.as_bytes());
}
