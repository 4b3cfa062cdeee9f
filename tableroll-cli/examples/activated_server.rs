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
//! It checks the activation as systemd's `sd_listen_fds` does: the variables count only if
//! `LISTEN_PID` is its own pid; `LISTEN_FDS` must be a number from 1 to 4096, each descriptor
//! from 3 on open and a listening stream socket or a datagram socket, and `LISTEN_FDNAMES`, if
//! set, must name each one. Otherwise it says what is wrong and exits 1. Its unit tests run
//! with `cargo test -p tableroll-cli --example activated_server`.
//!
//! Flags: `--generation N`; `--ready never` (never reports ready) or `--ready exit:CODE`
//! (exits with CODE instead of reporting ready); `--ignore-sigterm`; `--slow-ms N` (every
//! answer takes N ms). `GET /crash` makes it exit with status 3 at once; each SIGHUP prints a
//! `sighup` line.
//!
//! `--ignore-stop-signals`: SIGTERM, SIGINT, SIGQUIT, SIGUSR1 and SIGUSR2 are caught, each
//! printed as a `signal` line, and otherwise ignored. `--fork-worker group|detached|daemon`:
//! once ready, it starts a worker, a copy of itself that accepts on the first stream listener
//! too and answers `hello from gen-<N> worker`, and prints a `worker` line with its pid. The
//! worker runs in the server's process group, in a group of its own, or in a group of its own
//! started through a go-between that exits at once (a double fork: the worker is orphaned).
//! The server does not wait for it on exit. The worker stops on SIGTERM unless
//! `--ignore-sigterm` is given too.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::{fcntl_setfd, FdFlags};
use rustix::net::{sockopt, SocketType};
use serde_json::json;
use tableroll_load::net::{Conn, Listener};

struct Opts {
    generation: u32,
    ready: Ready,
    ignore_sigterm: bool,
    ignore_stop_signals: bool,
    slow: Duration,
    fork_worker: Option<Fork>,
    /// Set in a worker: the listener's descriptor, passed by the server that started it.
    worker_fd: Option<RawFd>,
    /// Set in the go-between of `--fork-worker daemon`: start the worker, then exit.
    daemonize: bool,
}

/// Where a forked worker runs.
#[derive(Clone, Copy)]
enum Fork {
    /// In the server's process group.
    Group,
    /// In a process group of its own, as a daemon that left its parent's group.
    Detached,
    /// In a process group of its own, started through a process that exits at once (a double
    /// fork): the worker is nobody's child any more.
    Daemon,
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
    let served = match opts.worker_fd {
        Some(fd) if opts.daemonize => start_worker(&opts, fd, Fork::Detached).map(drop),
        Some(fd) => work(&opts, fd),
        None => serve(&opts),
    };
    if let Err(e) = served {
        eprintln!("activated_server gen-{}: {e}", opts.generation);
        std::process::exit(1);
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut opts = Opts {
        generation: 0,
        ready: Ready::Now,
        ignore_sigterm: false,
        ignore_stop_signals: false,
        slow: Duration::ZERO,
        fork_worker: None,
        worker_fd: None,
        daemonize: false,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--generation" => opts.generation = value()?.parse().map_err(|e| format!("--generation: {e}"))?,
            "--slow-ms" => {
                opts.slow = Duration::from_millis(value()?.parse().map_err(|e| format!("--slow-ms: {e}"))?)
            }
            "--ignore-sigterm" => opts.ignore_sigterm = true,
            "--ignore-stop-signals" => opts.ignore_stop_signals = true,
            "--fork-worker" => {
                opts.fork_worker = match value()?.as_str() {
                    "group" => Some(Fork::Group),
                    "detached" => Some(Fork::Detached),
                    "daemon" => Some(Fork::Daemon),
                    v => return Err(format!("--fork-worker {v:?}: expected group, detached or daemon")),
                }
            }
            "--daemonize" => opts.daemonize = true,
            "--worker-fd" => {
                opts.worker_fd = Some(value()?.parse().map_err(|e| format!("--worker-fd: {e}"))?)
            }
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

/// The first descriptor socket activation passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The most descriptors accepted from `LISTEN_FDS`: far more than a server listens on; a larger
/// number is a broken environment, not a request.
const MAX_LISTEN_FDS: u32 = 4096;

/// What the activation variables say, checked as systemd's `sd_listen_fds_with_names` checks
/// them.
#[derive(Debug, PartialEq)]
enum Activation {
    /// The variables are not for this process: `LISTEN_PID` is unset or another's (why).
    NotForUs(String),
    /// `count` descriptors from [`FIRST_FD`] on, named if `LISTEN_FDNAMES` is set.
    Fds { count: u32, names: Option<Vec<String>> },
}

/// Checks the values of `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` for the process `pid`:
/// the variables count only if `LISTEN_PID` is `pid`, and then `LISTEN_FDS` must be a number
/// from 1 to [`MAX_LISTEN_FDS`] and `LISTEN_FDNAMES`, if set, name exactly that many.
fn check_activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> Result<Activation, String> {
    let Some(listen_pid) = listen_pid else {
        return Ok(Activation::NotForUs("LISTEN_PID is not set".into()));
    };
    let listen_pid: u32 =
        listen_pid.parse().map_err(|_| format!("LISTEN_PID {listen_pid:?} is not a pid"))?;
    if listen_pid != pid {
        return Ok(Activation::NotForUs(format!("LISTEN_PID is {listen_pid}, not this process ({pid})")));
    }
    let listen_fds = listen_fds.ok_or("LISTEN_PID is this process but LISTEN_FDS is not set")?;
    let count: u32 = match listen_fds.parse() {
        Ok(n) if (1..=MAX_LISTEN_FDS).contains(&n) => n,
        _ => return Err(format!("LISTEN_FDS {listen_fds:?} is not a number from 1 to {MAX_LISTEN_FDS}")),
    };
    let names = listen_fdnames.map(|names| names.split(':').map(str::to_owned).collect::<Vec<_>>());
    if let Some(names) = &names {
        if names.len() != count as usize {
            return Err(format!("LISTEN_FDNAMES has {} names for {count} descriptors", names.len()));
        }
    }
    Ok(Activation::Fds { count, names })
}

/// The environment variable `name`, if set; one that is not UTF-8 is an error.
fn env_var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8")),
    }
}

/// The descriptors socket activation passed this process, owned and close-on-exec, each
/// checked to be a listening stream socket or a datagram socket. Called once, first thing:
/// nothing in this process has opened or taken a descriptor above stderr before.
fn activated_fds() -> Result<Vec<OwnedFd>, String> {
    let (pid, fds, names) = (env_var("LISTEN_PID")?, env_var("LISTEN_FDS")?, env_var("LISTEN_FDNAMES")?);
    match check_activation(pid.as_deref(), fds.as_deref(), names.as_deref(), std::process::id())? {
        Activation::NotForUs(why) => Err(format!("not started by socket activation: {why}")),
        Activation::Fds { count, names } => {
            let names = names.unwrap_or_default();
            let each = (FIRST_FD..).take(count as usize).zip(0..).map(|(fd, i): (RawFd, usize)| {
                let name = names.get(i).map(|name| format!(" ({name})")).unwrap_or_default();
                take_activated(fd).map_err(|e| format!("descriptor {fd}{name} of LISTEN_FDS {e}"))
            });
            each.collect()
        }
    }
}

/// Takes ownership of the activated descriptor `fd`, after checking that it is open, and
/// checks its kind. The error completes "descriptor N ...".
fn take_activated(fd: RawFd) -> Result<OwnedFd, String> {
    // Asked of /proc, so that the number is not used as a descriptor before it is known to be one.
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err("is not open".into());
    }
    // SAFETY: `fd` is open, and LISTEN_PID says it was passed to this process: it is this
    // process's to own. Nothing else in it owns `fd`: it was inherited, not opened here (this
    // runs before the server opens anything), and `activated_fds` takes each number once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    expect_listener(owned.as_fd())?;
    // As sd_listen_fds does: programs this one starts must not inherit the listeners.
    fcntl_setfd(&owned, FdFlags::CLOEXEC).map_err(|e| format!("cannot be made close-on-exec: {e}"))?;
    Ok(owned)
}

/// Whether `fd` is a socket activation can pass: a stream (or sequenced-packet) socket that
/// listens, or a datagram socket. The error completes "descriptor N ...".
fn expect_listener(fd: BorrowedFd<'_>) -> Result<(), String> {
    let kind = match sockopt::socket_type(fd) {
        Ok(kind) => kind,
        Err(rustix::io::Errno::NOTSOCK) => return Err("is not a socket".into()),
        Err(e) => return Err(format!("cannot be asked its socket type: {e}")),
    };
    if kind == SocketType::DGRAM {
        return Ok(());
    }
    if kind != SocketType::STREAM && kind != SocketType::SEQPACKET {
        return Err(format!("is a socket of an unexpected type ({kind:?})"));
    }
    match sockopt::socket_acceptconn(fd) {
        Ok(true) => Ok(()),
        Ok(false) => Err("is a stream socket that does not listen".into()),
        Err(e) => Err(format!("cannot be asked whether it listens: {e}")),
    }
}

fn serve(opts: &Opts) -> Result<(), String> {
    let fds = activated_fds()?;
    report_startup(opts, &fds);
    let listeners: Vec<Listener> = fds.into_iter().filter_map(listener_of).collect();
    if listeners.is_empty() {
        return Err("no stream listener among the passed descriptors".into());
    }
    let (stop, _never_written) = catch_stop_signals(opts)?;
    report_sighup(opts.generation).map_err(|e| format!("catching SIGHUP: {e}"))?;
    for listener in &listeners {
        listener.set_nonblocking().map_err(|e| format!("O_NONBLOCK: {e}"))?;
    }
    match opts.ready {
        Ready::Now => notify_ready()?,
        Ready::Never => {}
        Ready::Exit(code) => std::process::exit(code.into()),
    }
    if let Some(fork) = opts.fork_worker {
        fork_worker(opts, &listeners[0], fork)?;
    }
    let label = format!("gen-{}", opts.generation);
    accept_and_exit(opts, &label, listeners, stop.as_fd())
}

/// Accepts until stopped, finishes the requests in flight, prints `exiting`.
fn accept_and_exit(
    opts: &Opts,
    label: &str,
    listeners: Vec<Listener>,
    stop: BorrowedFd<'_>,
) -> Result<(), String> {
    let in_flight = accept_until_stopped(opts, label, &listeners, stop)?;
    drop(listeners);
    for request in in_flight {
        let _ = request.join();
    }
    println!("{}", json!({ "event": "exiting", "generation": opts.generation, "pid": std::process::id() }));
    Ok(())
}

/// The read end of a pair that becomes readable once the process is told to stop (SIGTERM),
/// unless the flags say to ignore it; and the write end, kept while nothing writes to it.
fn catch_stop_signals(opts: &Opts) -> Result<(UnixStream, Option<UnixStream>), String> {
    let (stop_read, stop_write) = UnixStream::pair().map_err(|e| e.to_string())?;
    if opts.ignore_stop_signals {
        report_stop_signals(opts.generation).map_err(|e| format!("catching the stop signals: {e}"))?;
    } else if opts.ignore_sigterm {
        // Caught and never acted on: the process lives on after SIGTERM.
        let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, ignored)
            .map_err(|e| format!("catching SIGTERM: {e}"))?;
    } else {
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, stop_write)
            .map_err(|e| format!("catching SIGTERM: {e}"))?;
        return Ok((stop_read, None));
    }
    // Not closed: a closed write end would read as a stop.
    Ok((stop_read, Some(stop_write)))
}

/// Prints a `signal` line for each stop signal, and otherwise ignores it.
fn report_stop_signals(generation: u32) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2])?;
    thread::spawn(move || {
        for signal in signals.forever() {
            let event = json!({ "event": "signal", "generation": generation, "pid": std::process::id(),
                                "signal": signal });
            println!("{event}");
        }
    });
    Ok(())
}

/// Starts a worker: this program again, accepting on `listener` too. It is not waited for.
fn fork_worker(opts: &Opts, listener: &Listener, fork: Fork) -> Result<(), String> {
    // An inheritable copy, for as long as the spawn takes (no other thread starts processes).
    let copy =
        rustix::io::fcntl_dupfd_cloexec(listener.as_fd(), FIRST_FD).map_err(|e| format!("dup: {e}"))?;
    fcntl_setfd(&copy, FdFlags::empty()).map_err(|e| format!("fcntl: {e}"))?;
    let mut started = start_worker(opts, copy.as_raw_fd(), fork)?;
    if let Fork::Daemon = fork {
        // The go-between, which exits as soon as the worker started.
        started.wait().map_err(|e| format!("waiting for the go-between: {e}"))?;
    }
    Ok(())
}

/// Starts a worker on the inheritable descriptor `fd` (or, for `Fork::Daemon`, the go-between
/// that starts it); prints the worker's pid.
fn start_worker(opts: &Opts, fd: RawFd, fork: Fork) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--generation", &opts.generation.to_string(), "--worker-fd", &fd.to_string()]);
    if opts.ignore_sigterm {
        cmd.arg("--ignore-sigterm");
    }
    match fork {
        Fork::Group => {}
        Fork::Detached => {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        Fork::Daemon => {
            cmd.arg("--daemonize");
        }
    }
    let started =
        cmd.stdin(std::process::Stdio::null()).spawn().map_err(|e| format!("starting a worker: {e}"))?;
    if !matches!(fork, Fork::Daemon) {
        println!("{}", json!({ "event": "worker", "generation": opts.generation, "pid": started.id() }));
    }
    Ok(started)
}

/// A worker's life: accepts on the listener its server passed until SIGTERM.
fn work(opts: &Opts, fd: RawFd) -> Result<(), String> {
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(format!("--worker-fd {fd} is not open"));
    }
    // SAFETY: `fd` is open, and the server that started this worker passed it (`fork_worker`):
    // it is this process's to own. Nothing else here owns it: this runs before the worker opens
    // anything, once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl_setfd(&owned, FdFlags::CLOEXEC).map_err(|e| format!("fcntl: {e}"))?;
    let listener = listener_of(owned).ok_or("--worker-fd is not a stream listener")?;
    listener.set_nonblocking().map_err(|e| format!("O_NONBLOCK: {e}"))?;
    let (stop, _never_written) = catch_stop_signals(opts)?;
    let label = format!("gen-{} worker", opts.generation);
    accept_and_exit(opts, &label, vec![listener], stop.as_fd())
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

/// Sends READY=1 to `$NOTIFY_SOCKET`, a path or an `@` abstract name, as `sd_notify(3)` does.
fn notify_ready() -> Result<(), String> {
    tableroll::systemd::notify("READY=1\nSTATUS=serving").map_err(|e| format!("notifying readiness: {e}"))?;
    Ok(())
}

/// The passed descriptor as a listener this server answers on, if it is a TCP or Unix stream
/// listener.
fn listener_of(fd: OwnedFd) -> Option<Listener> {
    match describe_fd(fd.as_fd()).as_str() {
        "tcp-listener" => Some(Listener::Tcp(TcpListener::from(fd))),
        "unix-listener" => Some(Listener::Unix(UnixListener::from(fd))),
        _ => None,
    }
}

/// The next waiting connection on `listener`, if any, made blocking for its thread.
fn accept_next(listener: &Listener) -> io::Result<Option<Conn>> {
    match listener.accept() {
        Ok(conn) => Ok(Some(conn)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Accepts on every listener until SIGTERM; returns the threads still answering.
fn accept_until_stopped(
    opts: &Opts,
    label: &str,
    listeners: &[Listener],
    stop: BorrowedFd<'_>,
) -> Result<Vec<thread::JoinHandle<()>>, String> {
    let mut in_flight = Vec::new();
    loop {
        let mut polled: Vec<PollFd<'_>> =
            listeners.iter().map(|l| PollFd::from_borrowed_fd(l.as_fd(), PollFlags::IN)).collect();
        polled.push(PollFd::from_borrowed_fd(stop, PollFlags::IN));
        match poll(&mut polled, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if !polled.last().map(|p| p.revents().is_empty()).unwrap_or(true) {
            return Ok(in_flight);
        }
        for listener in listeners {
            while let Some(conn) = accept_next(listener).map_err(|e| format!("accept: {e}"))? {
                let (label, slow) = (label.to_string(), opts.slow);
                in_flight.push(thread::spawn(move || answer(conn, &label, slow)));
            }
        }
        in_flight.retain(|t| !t.is_finished());
    }
}

fn answer(mut conn: Conn, label: &str, slow: Duration) {
    let mut head = Vec::new();
    if tableroll_load::http::read_head(&mut conn, &mut head).is_err() {
        return;
    }
    if head.starts_with(b"GET /crash ") {
        std::process::exit(3);
    }
    if !slow.is_zero() {
        thread::sleep(slow);
    }
    let body = format!("hello from {label}\n");
    let response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = conn.write_all(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: u32 = 4242;

    fn check(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> Result<Activation, String> {
        check_activation(pid, fds, names, PID)
    }

    fn fds(count: u32, names: Option<&[&str]>) -> Result<Activation, String> {
        Ok(Activation::Fds { count, names: names.map(|n| n.iter().map(|s| s.to_string()).collect()) })
    }

    #[test]
    fn the_variables_count_only_for_this_process() {
        assert!(matches!(check(None, Some("1"), None), Ok(Activation::NotForUs(_))));
        assert!(matches!(check(Some("4243"), Some("1"), None), Ok(Activation::NotForUs(_))));
        // Another process's variables are ignored, even broken ones.
        assert!(matches!(check(Some("1"), Some("many"), Some("a:b")), Ok(Activation::NotForUs(_))));
        assert!(check(Some("me"), Some("1"), None).is_err());
        assert!(check(Some("-4242"), Some("1"), None).is_err());
    }

    #[test]
    fn listen_fds_is_a_positive_number_within_the_bound() {
        assert_eq!(check(Some("4242"), Some("3"), None), fds(3, None));
        assert_eq!(check(Some("4242"), Some("4096"), None), fds(4096, None));
        for bad in ["0", "-1", "4097", "", "2x", " 2", "99999999999"] {
            assert!(check(Some("4242"), Some(bad), None).is_err(), "LISTEN_FDS={bad:?}");
        }
        assert!(check(Some("4242"), None, None).is_err());
    }

    #[test]
    fn listen_fdnames_names_every_descriptor() {
        assert_eq!(
            check(Some("4242"), Some("3"), Some("web:dns:admin")),
            fds(3, Some(&["web", "dns", "admin"]))
        );
        assert_eq!(check(Some("4242"), Some("1"), Some("")), fds(1, Some(&[""])));
        assert!(check(Some("4242"), Some("2"), Some("web")).is_err());
        assert!(check(Some("4242"), Some("1"), Some("web:dns")).is_err());
    }

    #[test]
    fn only_listeners_and_datagram_sockets_are_accepted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(expect_listener(listener.as_fd()), Ok(()));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(expect_listener(udp.as_fd()), Ok(()));
        let (stream, _) = UnixStream::pair().unwrap();
        assert!(expect_listener(stream.as_fd()).unwrap_err().contains("does not listen"));
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(expect_listener(file.as_fd()), Err("is not a socket".into()));
    }
}
