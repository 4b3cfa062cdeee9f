//! Helpers for the library's process tests, over the kit (`tableroll_testkit`: a directory per
//! test, a child process with its output captured, an HTTP client, closed-loop HTTP load): the
//! conformance peer as a child process with its JSON events, the test servers cargo built for
//! these tests (`examples`), the wire protocol by hand (`wire`), and views of a process from
//! `/proc`.
//!
//! Tests synchronise on events, sockets and process exits; the timeouts here only turn a hang
//! into a failure that shows the command, its status, its stdout and its stderr.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use tableroll_testkit::events::{EventSender, Events, Missed};
use tableroll_testkit::process::Process;

pub mod examples;
pub mod gopeer;
pub mod wire;

#[allow(unused_imports)] // not every test binary uses each
pub use tableroll_testkit::http::{http_get, http_get_unix, read_response, Response};
#[allow(unused_imports)]
pub use tableroll_testkit::{load, raise_nofile_limit, TestDir, TIMEOUT};

// ---------------------------------------------------------------------------------------------
// Finding the peer

/// The conformance peer binary: `$TABLEROLL_PEER` if set, else the one cargo built for these
/// tests from `tableroll/examples/peer.rs`.
pub fn peer_binary() -> &'static Path {
    static OVERRIDE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let from_env = OVERRIDE.get_or_init(|| std::env::var_os("TABLEROLL_PEER").map(PathBuf::from));
    from_env.as_deref().unwrap_or_else(|| examples::binary("peer"))
}

// ---------------------------------------------------------------------------------------------
// The peer as a child process

/// An event as the reading thread received it: from which peer, and when.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// The peer's label (its `--id`).
    pub label: String,
    /// When the line was read from the peer's stdout.
    pub at: Instant,
    pub event: Value,
}

/// Where [`Peer::start_tapped`] copies every event of its peers, in the order they were read.
pub type Tap = mpsc::Sender<Tapped>;

/// A line of the peer's stdout: an event, or the line that is not JSON.
type EventLine = Result<Value, String>;

/// Whether `line` is the event named `name`.
fn is_event(line: &EventLine, name: &str) -> bool {
    line.as_ref().is_ok_and(|event| event["event"] == name)
}

/// Whether `line` ends a wait for another event: an `error` event, or a line that is not JSON.
fn is_trouble(line: &EventLine) -> bool {
    line.as_ref().map_or(true, |event| event["event"] == "error")
}

/// A running peer. Its events are read on a thread; on drop it is killed (by the pid it was
/// spawned with, before it is reaped) and, if the test is failing, its output is printed.
pub struct Peer {
    /// First, so that it is killed (and its output printed) while `events` still has a
    /// receiver: the reading thread logs stdout until then.
    process: Process,
    pub label: String,
    events: Events<EventLine>,
}

impl Peer {
    /// Starts the peer on `dir` with `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Peer {
        let dir = dir.to_str().expect("a UTF-8 test directory");
        Peer::start_with_args(&[&["--dir", dir], args].concat())
    }

    /// Starts the peer with exactly `args` (no `--dir` added).
    pub fn start_with_args(args: &[&str]) -> Peer {
        Peer::spawn(args, &[], None)
    }

    /// Starts the peer on `dir` with `args` in a PID namespace of its own (`unshare(1)`, which
    /// needs root): it sees no other process, and others see it under another pid.
    pub fn start_in_new_pid_namespace(dir: &Path, args: &[&str]) -> Peer {
        let dir = dir.to_str().expect("a UTF-8 test directory");
        let peer = peer_binary().to_str().expect("a UTF-8 peer path");
        let wrapped = [&["--pid", "--fork", "--kill-child", peer, "--dir", dir], args].concat();
        Peer::spawn_command(Command::new("unshare"), &wrapped, &[], None)
    }

    /// Starts the peer on `dir` with `args` from `sh -c`, after the shell ran `setup` (for
    /// example `ulimit -f 0` to give it a file size limit).
    pub fn start_after_shell(dir: &Path, setup: &str, args: &[&str]) -> Peer {
        let dir = dir.to_str().expect("a UTF-8 test directory");
        let peer = peer_binary().to_str().expect("a UTF-8 peer path");
        let script = format!("{setup}; exec \"$0\" \"$@\"");
        let wrapped = [&["-c", script.as_str(), peer, "--dir", dir], args].concat();
        Peer::spawn_command(Command::new("sh"), &wrapped, &[], None)
    }

    /// Waits until the peer wrote `needle` to stderr (its library log); fails the test if it
    /// did not within [`TIMEOUT`].
    pub fn wait_for_log(&self, needle: &str) {
        if !self.process.wait_for_stderr(needle, TIMEOUT) {
            self.fail(&format!("no {needle:?} in the log within {TIMEOUT:?}"));
        }
    }

    /// Starts the peer on `dir` with `args` and the environment variables `env` set.
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Peer {
        let dir = dir.to_str().expect("a UTF-8 test directory");
        Peer::spawn(&[&["--dir", dir], args].concat(), env, None)
    }

    /// Starts the peer on `dir` with `args`, and copies each of its events to `tap` too (before
    /// the peer's own queue sees it: once [`Peer::drain_to_eof`] returned, the tap has every
    /// event of the process).
    pub fn start_tapped(dir: &Path, args: &[&str], tap: Tap) -> Peer {
        let dir = dir.to_str().expect("a UTF-8 test directory");
        Peer::spawn(&[&["--dir", dir], args].concat(), &[], Some(tap))
    }

    /// Starts `program` (the peer binary, or a copy of it another user can reach) with exactly
    /// `args`, as user and group `user` if given (which needs root; std drops the supplementary
    /// groups too when root changes the uid).
    pub fn start_as_user(program: &Path, user: Option<u32>, args: &[&str]) -> Peer {
        let mut cmd = Command::new(program);
        if let Some(id) = user {
            cmd.uid(id).gid(id);
        }
        let mut peer = Peer::spawn_command(cmd, args, &[], None);
        if let Some(id) = user {
            // The command line does not show it.
            peer.process.set_heading(format!("peer {} as uid {id}", peer.label));
        }
        peer
    }

    /// Starts `cmd` (any program with the peer's flags and events: a Go peer, or ours behind a
    /// wrapper) with exactly `args`.
    pub fn start_command(cmd: Command, args: &[&str]) -> Peer {
        Peer::spawn_command(cmd, args, &[], None)
    }

    fn spawn(args: &[&str], env: &[(&str, &std::ffi::OsStr)], tap: Option<Tap>) -> Peer {
        Peer::spawn_command(Command::new(peer_binary()), args, env, tap)
    }

    /// Spawns `cmd` with `args` and `env` added; the label is the `--id` among `args`, or else
    /// the pid.
    fn spawn_command(
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        tap: Option<Tap>,
    ) -> Peer {
        cmd.args(args);
        // A test run under systemd must not make the peers report to it.
        cmd.env_remove("NOTIFY_SOCKET");
        cmd.envs(env.iter().copied());
        let mut process = Process::spawn(&mut cmd);
        let label = args
            .windows(2)
            .find(|w| w[0] == "--id")
            .map(|w| w[1].to_string())
            .unwrap_or_else(|| format!("pid {}", process.pid()));
        process.set_heading(format!("peer {label}"));
        let (tx, events) = Events::channel();
        process.read_stdout(parse_events(label.clone(), tap, tx));
        Peer { process, label, events }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything known about the process, for failure messages.
    pub fn diagnostics(&self) -> String {
        self.process.diagnostics()
    }

    /// [`Peer::diagnostics`], marked as shown: the drop of a failing test does not print them
    /// again. For failure messages that gather the output of many peers.
    pub fn take_diagnostics(&self) -> String {
        self.process.take_diagnostics()
    }

    /// Fails the test with `message` and this peer's diagnostics.
    #[track_caller]
    pub fn fail(&self, message: &str) -> ! {
        self.process.fail(message)
    }

    /// Waits for the first event named `name` not consumed yet; other events stay pending. An
    /// `error` event while waiting for something else fails the test.
    #[track_caller]
    pub fn wait_for(&mut self, name: &str) -> Value {
        self.wait_for_timed(name).0
    }

    /// As [`Peer::wait_for`], with the moment the event's line was read from the peer's stdout
    /// (which can be well before this call returns).
    #[track_caller]
    pub fn wait_for_timed(&mut self, name: &str) -> (Value, Instant) {
        let deadline = Instant::now() + TIMEOUT;
        match self.events.wait(deadline, |line| is_event(line, name), is_trouble) {
            Ok((at, Ok(event))) => (event, at),
            Ok((_, Err(_))) => unreachable!("is_event holds only for events"),
            Err(Missed::Stopped(_, Err(bad))) => {
                self.fail(&format!("the peer printed a line that is not JSON: {bad}"))
            }
            Err(Missed::Stopped(_, Ok(error))) => {
                let _ = self.reap();
                self.fail(&format!("error event while waiting for {name:?}: {error}"))
            }
            Err(Missed::Ended) => {
                let _ = self.reap();
                self.fail(&format!("the peer's stdout ended before event {name:?}"))
            }
            Err(Missed::TimedOut) => {
                self.fail(&format!("timed out after {TIMEOUT:?} waiting for event {name:?}"))
            }
        }
    }

    /// As [`Peer::wait_for`], but the event stays pending: a later `wait_for(name)` gets it.
    #[track_caller]
    pub fn peek_for(&mut self, name: &str) -> Value {
        let (event, at) = self.wait_for_timed(name);
        self.events.push_front(at, Ok(event.clone()));
        event
    }

    /// Whether an event named `name` was received and not consumed (without waiting).
    pub fn has_pending(&mut self, name: &str) -> bool {
        self.events.poll();
        self.check_pending_lines();
        self.events.pending().any(|line| is_event(line, name))
    }

    /// Fails the test if the peer printed a line that is not JSON.
    #[track_caller]
    fn check_pending_lines(&self) {
        if let Some(Err(bad)) = self.events.pending().find(|line| line.is_err()) {
            self.fail(&format!("the peer printed a line that is not JSON: {bad}"));
        }
    }

    /// Every event the peer printed so far (consumed or not), in order.
    pub fn printed(&self) -> Vec<Value> {
        let lines = self.process.stdout_lines();
        lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Reads the peer's stdout to its end (waiting at most [`TIMEOUT`]: meant for a process
    /// that exited or was killed) and returns every event not consumed yet, in order.
    #[track_caller]
    pub fn drain_to_eof(&mut self) -> Vec<Value> {
        self.read_to_end("the end of the peer's stdout");
        self.events.pending().filter_map(|line| line.as_ref().ok().cloned()).collect()
    }

    /// Receives every line until the end of stdout (at most [`TIMEOUT`]), failing the test if
    /// one is not JSON.
    #[track_caller]
    fn read_to_end(&mut self, waiting_for: &str) {
        if !self.events.wait_end(Instant::now() + TIMEOUT) {
            self.fail(&format!("timed out after {TIMEOUT:?} waiting for {waiting_for}"));
        }
        self.check_pending_lines();
    }

    /// Waits for the end of stdout, then reaps the process.
    fn reap(&mut self) -> ExitStatus {
        if let Some(status) = self.process.status() {
            return status;
        }
        self.read_to_end("the peer to exit");
        self.process.wait()
    }

    /// Waits for the process to exit and returns its status.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.reap()
    }

    /// Waits for the `exit` event and a zero exit status; returns the number served.
    #[track_caller]
    pub fn expect_clean_exit(&mut self) -> u64 {
        let event = self.wait_for("exit");
        let status = self.reap();
        if !status.success() {
            self.fail("the peer emitted exit but its status is not 0");
        }
        event["served"].as_u64().unwrap_or_else(|| self.fail(&format!("exit event without served: {event}")))
    }

    /// Waits for an `error` event and exit status 1; returns the message.
    #[track_caller]
    pub fn expect_error_exit(&mut self) -> String {
        let event = self.wait_for("error");
        let status = self.reap();
        if status.code() != Some(1) {
            self.fail("the peer emitted error but did not exit with status 1");
        }
        event["message"].as_str().unwrap_or_default().to_string()
    }

    /// As [`Peer::wait_for_timed`], but waiting only until `deadline`, and returning what went
    /// wrong instead of failing the test: for tests that count failed rounds. An `error` event,
    /// a line that is not JSON or the end of stdout ends the wait too.
    pub fn wait_for_until(&mut self, name: &str, deadline: Instant) -> Result<(Value, Instant), String> {
        let label = &self.label;
        match self.events.wait(deadline, |line| is_event(line, name), is_trouble) {
            Ok((at, Ok(event))) => Ok((event, at)),
            Ok((_, Err(_))) => unreachable!("is_event holds only for events"),
            Err(Missed::Stopped(_, Ok(error))) => {
                Err(format!("{label}: error event while waiting for {name:?}: {error}"))
            }
            Err(Missed::Stopped(_, Err(bad))) => Err(format!("{label}: a line that is not JSON: {bad}")),
            Err(Missed::Ended) => Err(format!("{label}: stdout ended before event {name:?}")),
            Err(Missed::TimedOut) => Err(format!("{label}: no event {name:?} in time")),
        }
    }

    /// As [`Peer::expect_clean_exit`], but waiting for the `exit` event only until `deadline`,
    /// and returning what went wrong instead of failing the test.
    pub fn clean_exit_until(&mut self, deadline: Instant) -> Result<(), String> {
        self.wait_for_until("exit", deadline)?;
        if !self.events.wait_end(deadline) {
            return Err(format!("{}: stdout still open after the exit event", self.label));
        }
        if let Some(Err(bad)) = self.events.pending().find(|line| line.is_err()) {
            return Err(format!("{}: a line that is not JSON: {bad}", self.label));
        }
        // Stdout ended after the exit event: the process is exiting.
        match self.process.wait() {
            status if status.success() => Ok(()),
            status => Err(format!("{}: exit event, but the status is {status}", self.label)),
        }
    }

    /// Whether the process is still running (not exited), without waiting.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Sends SIGKILL to the process (by the pid it was spawned with) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill()
    }
}

/// What the reading thread does with each line of peer `label`'s stdout: parse it as a JSON
/// event, copy the event to `tap` first, then send it (or the line that is not JSON) to `tx`.
/// Stops once the peer's queue is gone.
fn parse_events(
    label: String,
    tap: Option<Tap>,
    tx: EventSender<EventLine>,
) -> impl FnMut(Instant, String) -> bool + Send + 'static {
    move |at, line| {
        let event = serde_json::from_str::<Value>(&line).map_err(|e| format!("{e}: {line}"));
        if let (Some(tap), Ok(event)) = (&tap, &event) {
            let _ = tap.send(Tapped { label: label.clone(), at, event: event.clone() });
        }
        tx.send((at, event)).is_ok()
    }
}

/// Waits until the child process `pid` of this test is stopped (by a signal or a fault point
/// with the `stop` action), leaving that state to be seen again.
pub fn wait_stopped(pid: u32) {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("a pid");
    waitid(WaitId::Pid(pid), WaitIdOptions::STOPPED | WaitIdOptions::NOWAIT)
        .unwrap_or_else(|e| panic!("waiting for process {pid:?} to stop: {e}"));
}

/// Stops process `pid` (`SIGSTOP`); [`wait_stopped`] waits until it is.
pub fn stop_process(pid: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("a pid");
    kill_process(pid, Signal::STOP).unwrap_or_else(|e| panic!("stopping process {pid:?}: {e}"));
}

/// Continues the stopped process `pid` (`SIGCONT`).
pub fn continue_process(pid: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("a pid");
    kill_process(pid, Signal::CONT).unwrap_or_else(|e| panic!("continuing process {pid:?}: {e}"));
}

/// The sorted inherited ids of an `inherited` event.
pub fn inherited_ids(event: &Value) -> Vec<String> {
    let fds = event["fds"].as_array().unwrap_or_else(|| panic!("no fds in {event}"));
    fds.iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("non-string fd id in {event}")).to_string())
        .collect()
}

/// The address of listener `id` in a `listening` event.
pub fn listen_addr(event: &Value, id: &str) -> String {
    event["addrs"][id].as_str().unwrap_or_else(|| panic!("no address for {id:?} in {event}")).to_string()
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// `GET /` must be answered 200 by the peer with id `id`.
#[track_caller]
pub fn assert_hello(result: io::Result<Response>, id: &str) {
    let response = result.unwrap_or_else(|e| panic!("request failed (expected hello from {id}): {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, format!("hello from {id}\n"), "{response:?}");
}

// ---------------------------------------------------------------------------------------------
// Processes seen from /proc

/// The number of open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).expect("reading /proc/<pid>/fd").count()
}

/// The TCP ports process `pid` holds a listening socket on (IPv4 and IPv6).
pub fn tcp_listen_ports(pid: u32) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).expect("reading /proc/<pid>/fd").flatten() {
        let Ok(target) = fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() < 10 || fields[3] != "0A" || !inodes.contains(fields[9]) {
                continue;
            }
            if let Some(port) = fields[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) {
                ports.insert(port);
            }
        }
    }
    ports
}

/// The uid of `nobody`, for tests that run a peer as another user (which needs root).
pub const NOBODY: u32 = 65534;

/// The peer binary, where `user` can run it: in place if every directory above it is
/// searchable by others and the file readable and executable by others, else a copy in `tmp`.
pub fn runnable_peer(tmp: &TestDir, user: Option<u32>) -> PathBuf {
    let peer = peer_binary();
    let Some(user) = user else { return peer.to_path_buf() };
    let mode = |p: &Path| fs::metadata(p).map(|m| m.mode()).unwrap_or(0);
    let path = fs::canonicalize(peer).unwrap_or_else(|_| peer.to_path_buf());
    let reachable = path.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0);
    if reachable && mode(&path) & 0o005 == 0o005 {
        return path;
    }
    let copy = tmp.join("peer");
    eprintln!("{} is out of reach for uid {user}; running a copy at {}", path.display(), copy.display());
    fs::copy(&path, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Starts a serving peer `id` with one TCP listener `web` on `addr` (`127.0.0.1:0` for a new
/// one) and `extra` arguments; waits until it is ready, and returns it with the listener's
/// address.
pub fn serving(dir: &TestDir, id: &str, addr: &str, extra: &[&str]) -> (Peer, String) {
    let listen = format!("web=tcp:{addr}");
    let mut args = vec!["--id", id, "--listen", &listen, "--serve"];
    args.extend_from_slice(extra);
    let mut peer = Peer::start(dir.path(), &args);
    let addr = listen_addr(&peer.wait_for("listening"), "web");
    peer.wait_for("ready");
    (peer, addr)
}

/// A handoff of `n` TCP listeners: `old`, started with `--many n`, becomes ready; the newcomer
/// that `start_new` starts (with `--many n` too) inherits `ln-0` to `ln-{n-1}` and holds the very
/// sockets `old` listened on, `old` steps down and exits cleanly, and the owner file names the
/// newcomer, which is returned.
pub fn hand_over_many(dir: &TestDir, n: usize, mut old: Peer, start_new: impl FnOnce() -> Peer) -> Peer {
    old.wait_for("ready");
    let ports = tcp_listen_ports(old.pid());
    assert_eq!(ports.len(), n, "the owner should listen on {n} TCP ports");

    let mut new = start_new();
    let inherited: BTreeSet<String> = inherited_ids(&new.wait_for("inherited")).into_iter().collect();
    let expected: BTreeSet<String> = (0..n).map(|i| format!("ln-{i}")).collect();
    assert_eq!(inherited, expected);
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    old.expect_clean_exit();
    assert_eq!(dir.owner(), new.label, "the owner file names the newcomer");

    assert_eq!(tcp_listen_ports(new.pid()), ports, "the newcomer holds the owner's sockets");
    for port in ports.iter().step_by(37) {
        std::net::TcpStream::connect(("127.0.0.1", *port))
            .unwrap_or_else(|e| new.fail(&format!("connecting to {port}: {e}")));
    }
    new
}
