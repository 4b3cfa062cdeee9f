//! The conformance peer: a small HTTP server driven by flags that reports what it does as one
//! JSON event a line on stdout. Black-box tests (ours, and the interop checks against the Go
//! original) start it, read its events and kill it.
//!
//! ```text
//! peer --dir DIR [--id ID] [--listen ID=tcp:HOST:PORT | --listen ID=unix:PATH]... [--many N]
//!      [--serve] [--ready-delay-ms N] [--no-ready] [--upgrade-timeout-ms N]
//!      [--connect-timeout-ms N] [--probation-ms N] [--fault POINT=abort|pause]...
//! ```
//!
//! Events, in order: `inherited`, `listening`, `ready`, `upgrade_complete` (printed once the
//! peer stopped accepting), `exit` (once the requests in flight finished); or `error` (then exit
//! status 1) at any point.
//!
//! `--probation-ms N` (an addition of ours, not in the Go peers' interface) keeps the peer a
//! backup for N ms after a newcomer took over (`Builder::probation`): each time it becomes the
//! owner again it prints `{"event":"rolled_back","id":ID,"failed_owner":OWNER,"took_us":N}`,
//! and `upgrade_complete` comes only when a probation ends.
//!
//! `--fault POINT=ACTION` (repeatable) arms a fault point of the library (`owner-after-list`,
//! `newcomer-in-handshake`… see `tableroll::fault::Point`): when a handoff reaches it, the peer
//! prints `{"event":"fault","id":ID,"point":POINT,"action":ACTION}` (ID is the `--id` value) and
//! then aborts (`abort`: dies by `SIGABRT`), blocks that thread until it is killed (`pause`),
//! or stops the whole process until it gets `SIGCONT` (`stop`, an addition of ours).
//! It needs the library's `fault-injection` feature (on for examples and tests); a peer built
//! without it answers the flag with an `error` event.

use std::ffi::OsString;
use std::io::{self, Write};

use std::os::fd::OwnedFd;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use serde_json::{json, Value};
use tableroll::Upgrader;
use tableroll_load::net::{Conn, Listener};

/// How long the exit waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a connection may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let _ = tracing::subscriber::set_global_default(StderrLog::from_env());
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut id = id_hint(&args);
    let result = parse_args(args).and_then(|opts| run(opts, &mut id));
    match result {
        Ok(served) => {
            emit(&id, "exit", json!({ "served": served }));
            std::process::exit(0);
        }
        Err(message) => fail(&id, &message),
    }
}

// ---------------------------------------------------------------------------------------------
// Flags

#[derive(Default)]
struct Opts {
    dir: Option<PathBuf>,
    id: Option<String>,
    listens: Vec<ListenSpec>,
    many: usize,
    serve: bool,
    ready_delay: Option<Duration>,
    no_ready: bool,
    upgrade_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    probation: Option<Duration>,
    /// `--fault` values, `POINT=ACTION`, checked when the faults are armed.
    faults: Vec<String>,
}

struct ListenSpec {
    id: String,
    endpoint: Endpoint,
}

enum Endpoint {
    Tcp(String),
    Unix(String),
}

fn parse_args(args: Vec<OsString>) -> Result<Opts, String> {
    let mut opts = Opts::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value.to_string())),
            _ => (arg, None),
        };
        if let "--serve" | "--no-ready" = name.as_str() {
            if inline.is_some() {
                return Err(format!("{name} takes no value"));
            }
            match name.as_str() {
                "--serve" => opts.serve = true,
                _ => opts.no_ready = true,
            }
            continue;
        }
        let mut value = || match inline.clone() {
            Some(value) => Ok(value),
            None => args.next().map(utf8).unwrap_or_else(|| Err(format!("{name} needs a value"))),
        };
        match name.as_str() {
            "--dir" => opts.dir = Some(PathBuf::from(value()?)),
            "--id" => opts.id = Some(value()?),
            "--listen" => opts.listens.push(parse_listen(&value()?)?),
            "--many" => opts.many = parse_number(&name, &value()?)? as usize,
            "--ready-delay-ms" => opts.ready_delay = Some(parse_ms(&name, &value()?)?),
            "--upgrade-timeout-ms" => opts.upgrade_timeout = Some(parse_ms(&name, &value()?)?),
            "--connect-timeout-ms" => opts.connect_timeout = Some(parse_ms(&name, &value()?)?),
            "--probation-ms" => opts.probation = Some(parse_ms(&name, &value()?)?),
            "--fault" => opts.faults.push(value()?),
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    Ok(opts)
}

fn utf8(arg: OsString) -> Result<String, String> {
    arg.into_string().map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))
}

fn parse_listen(spec: &str) -> Result<ListenSpec, String> {
    let bad = || format!("--listen {spec:?}: expected ID=tcp:HOST:PORT or ID=unix:PATH");
    let (id, endpoint) = spec.split_once('=').ok_or_else(bad)?;
    let endpoint = if let Some(addr) = endpoint.strip_prefix("tcp:") {
        Endpoint::Tcp(addr.to_string())
    } else if let Some(path) = endpoint.strip_prefix("unix:") {
        Endpoint::Unix(path.to_string())
    } else {
        return Err(bad());
    };
    Ok(ListenSpec { id: id.to_string(), endpoint })
}

fn parse_number(name: &str, value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| format!("{name}: {value:?} is not a non-negative integer"))
}

fn parse_ms(name: &str, value: &str) -> Result<Duration, String> {
    parse_number(name, value).map(Duration::from_millis)
}

/// The id to report errors under before the upgrader exists: the `--id` value, if any.
fn id_hint(args: &[OsString]) -> String {
    let mut hint = String::new();
    let mut args = args.iter().map(|arg| arg.to_string_lossy());
    while let Some(arg) = args.next() {
        if let Some(id) = arg.strip_prefix("--id=") {
            hint = id.to_string();
        } else if arg == "--id" {
            hint = args.next().map(|id| id.into_owned()).unwrap_or_default();
        }
    }
    hint
}

// ---------------------------------------------------------------------------------------------
// Events

/// Writes one event line and flushes it. A closed stdout is not an error worth dying for.
fn emit(id: &str, event: &str, fields: Value) {
    let mut object = match fields {
        Value::Object(object) => object,
        _ => serde_json::Map::new(),
    };
    object.insert("event".into(), event.into());
    object.insert("id".into(), id.into());
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", Value::Object(object));
    let _ = out.flush();
}

fn fail(id: &str, message: &str) -> ! {
    emit(id, "error", json!({ "message": message }));
    std::process::exit(1)
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().try_into().unwrap_or(u64::MAX)
}

/// Prints the library's `tracing` events to stderr (info and above, or debug with
/// `TABLEROLL_PEER_LOG=debug`), so that a failing test shows what the library saw.
struct StderrLog(tracing::Level);

impl StderrLog {
    fn from_env() -> StderrLog {
        let debug = std::env::var("TABLEROLL_PEER_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug"));
        StderrLog(if debug { tracing::Level::DEBUG } else { tracing::Level::INFO })
    }
}

impl tracing::Subscriber for StderrLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.0
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        use std::fmt::Write as _;
        let mut line =
            format!("[{} {}] {}", std::process::id(), event.metadata().level(), event.metadata().target());
        event.record(&mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let _ = match field.name() {
                "message" => write!(line, ": {value:?}"),
                name => write!(line, " {name}={value:?}"),
            };
        });
        eprintln!("{line}");
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------------------------
// The life of the peer

/// Runs the peer until a newcomer took over and the requests in flight finished; returns the
/// number of requests served.
fn run(opts: Opts, id: &mut String) -> Result<u64, String> {
    let dir = opts.dir.as_ref().ok_or("--dir is required")?;
    arm_faults(&opts.faults, id)?;
    let mut probation_id = None;
    let mut builder = Upgrader::builder(dir);
    if let Some(explicit) = &opts.id {
        builder = builder.id(explicit.clone());
    }
    if let Some(timeout) = opts.upgrade_timeout {
        builder = builder.upgrade_timeout(timeout);
    }
    if let Some(timeout) = opts.connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    if let Some(window) = opts.probation {
        // The id is known only once built; the hook reads it then.
        let own_id = Arc::new(Mutex::new(String::new()));
        let hook_id = Arc::clone(&own_id);
        builder = builder.probation(window).on_rollback(move |rollback| {
            let took_us: u64 = rollback.took().as_micros().try_into().unwrap_or(u64::MAX);
            let id = hook_id.lock().map(|id| id.clone()).unwrap_or_default();
            emit(&id, "rolled_back", json!({ "failed_owner": rollback.failed_owner(), "took_us": took_us }));
        });
        probation_id = Some(own_id);
    }
    let started = Instant::now();
    let upgrader = builder.build().map_err(|e| format!("construction failed: {e}"))?;
    let new_us = micros(started);
    *id = upgrader.id().to_string();
    if let Some(own_id) = probation_id {
        *own_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = id.clone();
    }
    let mut inherited = upgrader.inherited_ids().to_vec();
    inherited.sort();
    emit(id, "inherited", json!({ "fds": inherited, "new_us": new_us }));

    let (listeners, addrs) = open_listeners(&upgrader, &opts)?;
    for i in 0..opts.many {
        let name = format!("ln-{i}");
        upgrader.fds().listen_tcp(&name, "127.0.0.1:0").map_err(|e| format!("listener {name}: {e}"))?;
    }
    emit(id, "listening", json!({ "addrs": addrs }));
    let server = if opts.serve { Some(Server::start(id, listeners)?) } else { None };

    if let Some(delay) = opts.ready_delay {
        thread::sleep(delay);
    }
    if opts.no_ready {
        loop {
            thread::park();
        }
    }
    let started = Instant::now();
    upgrader.ready().map_err(|e| format!("ready failed: {e}"))?;
    emit(id, "ready", json!({ "ready_us": micros(started) }));

    upgrader.upgrade_complete().wait();
    let server = server.map(Server::stop_accepting);
    emit(id, "upgrade_complete", json!({}));
    drop(upgrader);
    Ok(server.map(|s| s.drain()).unwrap_or(0))
}

/// Arms every `--fault POINT=ACTION`, with a hook that reports each hit as a `fault` event
/// under `id` (the `--id` value) before the action happens.
#[cfg(feature = "fault-injection")]
fn arm_faults(faults: &[String], id: &str) -> Result<(), String> {
    use tableroll::fault::{self, Action, Point};
    if faults.is_empty() {
        return Ok(());
    }
    for spec in faults {
        let (point, action) = spec
            .split_once('=')
            .ok_or_else(|| format!("--fault {spec:?}: expected POINT=abort|pause|stop"))?;
        let point: Point = point.parse().map_err(|e| format!("--fault {spec:?}: {e}"))?;
        let action: Action = action.parse().map_err(|e| format!("--fault {spec:?}: {e}"))?;
        fault::arm(point, action);
    }
    let id = id.to_string();
    fault::on_hit(move |point, action| {
        emit(&id, "fault", json!({ "point": point.name(), "action": action.to_string() }));
    });
    Ok(())
}

/// Without the library's `fault-injection` feature there is nothing to arm.
#[cfg(not(feature = "fault-injection"))]
fn arm_faults(faults: &[String], _id: &str) -> Result<(), String> {
    match faults.first() {
        None => Ok(()),
        Some(spec) => Err(format!(
            "--fault {spec:?}: this peer was built without fault injection (the fault-injection feature)"
        )),
    }
}

/// Gets or creates every `--listen` listener; returns them with their actual addresses.
fn open_listeners(
    upgrader: &Upgrader,
    opts: &Opts,
) -> Result<(Vec<Listener>, serde_json::Map<String, Value>), String> {
    let mut listeners = Vec::new();
    let mut addrs = serde_json::Map::new();
    for spec in &opts.listens {
        let context = |e: &dyn std::fmt::Display| format!("listener {}: {e}", spec.id);
        let (listener, addr) = match &spec.endpoint {
            Endpoint::Tcp(addr) => {
                let listener = upgrader.fds().listen_tcp(&spec.id, addr.as_str()).map_err(|e| context(&e))?;
                let local = listener.local_addr().map_err(|e| context(&e))?;
                (Listener::Tcp(listener), local.to_string())
            }
            Endpoint::Unix(path) => {
                let listener = upgrader.fds().listen_unix(&spec.id, path).map_err(|e| context(&e))?;
                (Listener::Unix(listener), path.clone())
            }
        };
        listeners.push(listener);
        addrs.insert(spec.id.clone(), addr.into());
    }
    Ok((listeners, addrs))
}

// ---------------------------------------------------------------------------------------------
// HTTP serving

/// What the acceptor and handler threads share.
struct Shared {
    id: String,
    served: AtomicU64,
    in_flight: Mutex<usize>,
    drained: Condvar,
}

/// One acceptor thread per listener; each connection on a thread of its own.
struct Server {
    shared: Arc<Shared>,
    /// Dropping the write end of the wake pipe makes its read end readable for every acceptor.
    wake: Option<OwnedFd>,
    acceptors: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(id: &str, listeners: Vec<Listener>) -> Result<Server, String> {
        let shared = Arc::new(Shared {
            id: id.to_string(),
            served: AtomicU64::new(0),
            in_flight: Mutex::new(0),
            drained: Condvar::new(),
        });
        let (wake_read, wake_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("wake pipe: {e}"))?;
        let wake_read = Arc::new(wake_read);
        let mut acceptors = Vec::new();
        for listener in listeners {
            listener.set_nonblocking().map_err(|e| format!("set_nonblocking: {e}"))?;
            let (shared, wake_read) = (shared.clone(), wake_read.clone());
            let acceptor = thread::Builder::new()
                .name("acceptor".into())
                .spawn(move || accept_loop(&listener, &wake_read, &shared))
                .map_err(|e| format!("spawning an acceptor: {e}"))?;
            acceptors.push(acceptor);
        }
        Ok(Server { shared, wake: Some(wake_write), acceptors })
    }

    /// Stops every acceptor and closes its listener; requests in flight go on.
    fn stop_accepting(mut self) -> Server {
        drop(self.wake.take());
        for acceptor in self.acceptors.drain(..) {
            let _ = acceptor.join();
        }
        self
    }

    /// Waits (at most [`DRAIN_LIMIT`]) for the requests in flight; returns the number served.
    fn drain(self) -> u64 {
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut in_flight = self.shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while *in_flight > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            in_flight = match self.shared.drained.wait_timeout(in_flight, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        self.shared.served.load(Ordering::SeqCst)
    }
}

fn accept_loop(listener: &Listener, wake: &OwnedFd, shared: &Arc<Shared>) {
    loop {
        let mut fds = [PollFd::new(listener, PollFlags::IN), PollFd::new(wake, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => fail(&shared.id, &format!("poll: {e}")),
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        match listener.accept().and_then(|conn| conn.set_timeouts(Some(REQUEST_TIMEOUT)).map(|()| conn)) {
            Ok(conn) => spawn_handler(conn, shared),
            Err(e) if is_transient(&e) => {}
            Err(e) => fail(&shared.id, &format!("accept: {e}")),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), WouldBlock | Interrupted | ConnectionAborted | ConnectionReset)
}

fn spawn_handler(conn: Conn, shared: &Arc<Shared>) {
    *shared.in_flight.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let handler_shared = shared.clone();
    let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
        let shared = handler_shared;
        if handle(conn, &shared.id).is_ok() {
            shared.served.fetch_add(1, Ordering::SeqCst);
        }
        let mut in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *in_flight -= 1;
        shared.drained.notify_all();
    });
    if let Err(e) = spawned {
        fail(&shared.id, &format!("spawning a connection thread: {e}"));
    }
}

/// Reads the request head, waits if the path is `/slow?ms=N`, and answers `hello from ID`.
fn handle(mut conn: Conn, id: &str) -> io::Result<()> {
    let head = read_head(&mut conn)?;
    let target = head.split(' ').nth(1).unwrap_or("/");
    if let Some(ms) = slow_ms(target) {
        thread::sleep(Duration::from_millis(ms));
    }
    let body = format!("hello from {id}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes())?;
    conn.flush()
}

/// The request head, by the reader the test kit's clients and the drill's server use.
fn read_head(conn: &mut Conn) -> io::Result<String> {
    let mut head = Vec::new();
    let end = tableroll_load::http::read_head(conn, &mut head)?;
    Ok(String::from_utf8_lossy(&head[..end]).into_owned())
}

fn slow_ms(target: &str) -> Option<u64> {
    let query = target.strip_prefix("/slow")?.strip_prefix('?')?;
    query.split('&').find_map(|pair| pair.strip_prefix("ms=")?.parse().ok())
}
