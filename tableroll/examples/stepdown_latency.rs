//! How long an old owner takes to step down, between our conformance peer and the Go tableroll
//! peers: for each owner/newcomer pair, N handoffs of a serving TCP listener, each timed from
//! the newcomer's `ready` event to the old owner's `upgrade_complete` event (both stamped when
//! this program read the line from the process's stdout). A Go owner steps down as soon as it
//! has said "stepping down", so its figure can be negative.
//!
//! ```text
//! cargo build --release --example peer --example stepdown_latency
//! target/release/examples/stepdown_latency [GO_PEERS_DIR [PEER]] [--peer PEER] [--rounds N]
//! ```
//!
//! `GO_PEERS_DIR` defaults to `$TABLEROLL_GO_PEERS`; `PEER`, our peer's binary, to
//! `target/release/examples/peer`; `--rounds` to 20. Pairs: ours to ours, ours to each Go version and back, and Go v4 to Go v4
//! for reference. Prints the p50 and the maximum for each pair and the failed handoffs; the
//! times are shown, not judged. Exit status 0 only if every handoff completed, 1 if one did
//! not, 2 on bad arguments or missing binaries.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const GO_VERSIONS: [&str; 4] = ["v1.1.0", "v2.0.0", "v2.1.0", "v4.0.0"];
/// How long any one event may take before the handoff counts as failed; it only detects a hang.
const EVENT_BOUND: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let config = match Config::from_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("stepdown_latency: {message}");
            eprintln!("usage: stepdown_latency [GO_PEERS_DIR [PEER]] [--peer PEER] [--rounds N]");
            return ExitCode::from(2);
        }
    };
    println!(
        "step-down latency (pairs: OWNER -> NEWCOMER): from the newcomer's ready to the old owner's \
         upgrade_complete, {} handoffs a pair",
        config.rounds
    );
    let mut all_completed = true;
    for (owner, newcomer) in pairs() {
        let mut times = Vec::new();
        let mut failures = Vec::new();
        for round in 0..config.rounds {
            match handoff(&config, owner, newcomer, round) {
                Ok(ms) => times.push(ms),
                Err(e) => failures.push(e),
            }
        }
        all_completed &= failures.is_empty();
        print_pair(owner, newcomer, &mut times, &failures);
    }
    if all_completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_pair(owner: Side, newcomer: Side, times: &mut [f64], failures: &[String]) {
    let pair = format!("{owner} -> {newcomer}");
    times.sort_by(f64::total_cmp);
    let figures = match (times.get((times.len().max(1) - 1) / 2), times.last()) {
        (Some(p50), Some(max)) => format!("p50 {p50:8.2} ms   max {max:8.2} ms"),
        _ => format!("{:>34}", "no handoff completed"),
    };
    println!("{pair:<22} {figures}   {} completed, {} failed", times.len(), failures.len());
    for failure in failures {
        println!("    failed: {failure}");
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments and pairs

struct Config {
    go_dir: PathBuf,
    peer: PathBuf,
    rounds: usize,
}

impl Config {
    fn from_args() -> Result<Config, String> {
        let mut args = std::env::args().skip(1);
        let (mut go_dir, mut peer, mut rounds) = (None, None, 20);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--peer" => peer = Some(args.next().ok_or("--peer needs a path")?.into()),
                "--rounds" => {
                    let n = args.next().ok_or("--rounds needs a number")?;
                    rounds = n.parse().map_err(|_| format!("--rounds {n:?}: not a number"))?;
                }
                flag if flag.starts_with('-') => return Err(format!("unknown flag {flag:?}")),
                dir if go_dir.is_none() => go_dir = Some(PathBuf::from(dir)),
                path if peer.is_none() => peer = Some(PathBuf::from(path)),
                extra => return Err(format!("unexpected argument {extra:?}")),
            }
        }
        let go_dir = go_dir
            .or_else(|| std::env::var_os("TABLEROLL_GO_PEERS").map(PathBuf::from))
            .ok_or("no Go peers directory: give it as the argument or in TABLEROLL_GO_PEERS")?;
        let peer = peer.unwrap_or_else(|| PathBuf::from("target/release/examples/peer"));
        let config = Config { go_dir, peer, rounds };
        config.check_binaries()?;
        Ok(config)
    }

    fn check_binaries(&self) -> Result<(), String> {
        let hint = "(build it: cargo build --release --example peer)";
        if !self.peer.is_file() {
            return Err(format!("our peer {} is missing {hint}", self.peer.display()));
        }
        for version in GO_VERSIONS {
            let go = self.go_binary(version);
            if !go.is_file() {
                return Err(format!("the Go peer {} is missing", go.display()));
            }
        }
        Ok(())
    }

    fn go_binary(&self, version: &str) -> PathBuf {
        self.go_dir.join(format!("go-tableroll-{version}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Rust,
    Go(&'static str),
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Rust => f.write_str("Rust"),
            Side::Go(version) => write!(f, "Go {version}"),
        }
    }
}

/// Rust -> Rust; Rust -> Go X and Go X -> Rust for each version X; Go v4 -> Go v4.
fn pairs() -> Vec<(Side, Side)> {
    let mut pairs = vec![(Side::Rust, Side::Rust)];
    for version in GO_VERSIONS {
        pairs.push((Side::Rust, Side::Go(version)));
        pairs.push((Side::Go(version), Side::Rust));
    }
    pairs.push((Side::Go("v4.0.0"), Side::Go("v4.0.0")));
    pairs
}

// ---------------------------------------------------------------------------------------------
// One handoff

/// Hands a serving TCP listener from an `owner` process to a `newcomer` on a fresh directory;
/// returns the newcomer's `ready` to the owner's `upgrade_complete`, in milliseconds.
fn handoff(config: &Config, owner: Side, newcomer: Side, round: usize) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("stepdown-latency-{}-{round}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let result = timed_handoff(config, &dir, owner, newcomer);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn timed_handoff(config: &Config, dir: &Path, owner: Side, newcomer: Side) -> Result<f64, String> {
    // Go v1.1.0 names processes by pid: in a pair with it, ours must too.
    let pid_ids = [owner, newcomer].contains(&Side::Go("v1.1.0"));
    let mut old = Proc::start(config, owner, dir, "owner", pid_ids, &["--listen", "web=tcp:127.0.0.1:0"])?;
    let (listening, _) = old.wait("listening")?;
    let addr = listening["addrs"]["web"].as_str().ok_or(format!("owner: no address in {listening}"))?;
    old.wait("ready")?;

    let listen = format!("web=tcp:{addr}");
    let mut new = Proc::start(config, newcomer, dir, "newcomer", pid_ids, &["--listen", &listen])?;
    let (_, ready_at) = new.wait("ready")?;
    let (_, stepped_down_at) = old.wait("upgrade_complete")?;
    old.wait("exit")?;
    let named = fs::read_to_string(dir.join("pid")).map_err(|e| format!("reading the owner file: {e}"))?;
    if named != new.id {
        return Err(format!("the owner file names {named:?}, not the newcomer {:?}", new.id));
    }
    Ok(signed_ms(stepped_down_at, ready_at))
}

/// `later - earlier` in milliseconds, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    }
}

// ---------------------------------------------------------------------------------------------
// A peer process and its events

/// A running peer (ours or Go), serving HTTP, with its stdout read on a thread; killed on drop.
struct Proc {
    role: &'static str,
    /// Its library id: what the owner file names once it owns the group.
    id: String,
    child: Child,
    events: Receiver<(Instant, Value)>,
}

impl Proc {
    fn start(
        config: &Config,
        side: Side,
        dir: &Path,
        role: &'static str,
        pid_ids: bool,
        args: &[&str],
    ) -> Result<Proc, String> {
        let mut cmd = match (side, pid_ids) {
            (Side::Go(version), _) => Command::new(config.go_binary(version)),
            (Side::Rust, false) => Command::new(&config.peer),
            // `exec` keeps the shell's pid, so `$$` is the peer's.
            (Side::Rust, true) => {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", r#"exec "$0" --id $$ "$@""#]).arg(&config.peer);
                cmd
            }
        };
        cmd.arg("--dir").arg(dir);
        if !pid_ids {
            cmd.args(["--id", role]);
        }
        cmd.args(args).arg("--serve");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("{role}: spawning {cmd:?}: {e}"))?;
        let id = if pid_ids { child.id().to_string() } else { role.to_string() };
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send((at, event)).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { role, id, child, events })
    }

    /// The next event named `name` and when its line was read; other events are skipped.
    fn wait(&mut self, name: &str) -> Result<(Value, Instant), String> {
        let deadline = Instant::now() + EVENT_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((at, event)) if event["event"] == name => return Ok((event, at)),
                Ok((_, event)) if event["event"] == "error" => {
                    return Err(format!("{}: error while waiting for {name}: {event}", self.role))
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: stdout ended before {name}", self.role))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no {name} within {EVENT_BOUND:?}", self.role))
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Killed by the pid it was spawned with, before it is reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
