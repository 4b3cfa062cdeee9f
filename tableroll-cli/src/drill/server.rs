//! One generation of the drill's demo server: the hidden `tableroll drill-server` subcommand,
//! started by the drill as an independent process.
//!
//! It joins the upgrade group in the coordination directory (taking the listener from the
//! previous generation, or creating it), starts accepting, calls `ready()`, and serves HTTP
//! until its `upgrade_complete()` fires. Then it stops accepting, finishes the requests in
//! flight and exits. It reports each step on stdout as one JSON line ([`ServerEvent`]). When
//! its stdin closes (the drill stops it, or died), it stops as if a newer generation had taken
//! over. With `--probation`, it stays a live backup for that long after a newer generation
//! took over, and reports each rollback; with `--crash-after`, it kills itself that long after
//! `ready()` returned ([`crash`]).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tableroll::Upgrader;
use tableroll_load::Listener;

use super::args::BreakMode;
use super::crash;
use super::events::ServerEvent;
use super::handler::Handlers;
use crate::duration::parse_duration;
use crate::sys::{self, WakePipe};

/// How long a newcomer waits for the lock, the descriptors and the ready handshake, and how
/// long an owner waits for a newcomer to finish its handoff.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// Flags of the hidden `tableroll drill-server` subcommand (set by the drill, not by people).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The coordination directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// This generation's number (0 for the first).
    #[arg(long, value_name = "N")]
    pub generation: u32,
    /// Serve on this TCP address (port 0 for the first generation, then the concrete one).
    #[arg(long, value_name = "ADDR", conflicts_with = "unix", required_unless_present = "unix")]
    pub tcp: Option<String>,
    /// Serve on a Unix socket at this path.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Extra TCP listeners to hold and hand over.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fds: u32,
    /// Misbehave on every fourth connection.
    #[arg(long, value_enum, value_name = "MODE")]
    pub break_server: Option<BreakMode>,
    /// Stay a live backup for this long after a newer generation took over
    /// (`Builder::probation`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub probation: Option<Duration>,
    /// Crash (SIGKILL, no drain) this long after `ready()` returned.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub crash_after: Option<Duration>,
}

/// Runs one generation; reports its end as an `exit` or `error` event.
pub fn run(args: &ServerArgs) -> ExitCode {
    match serve(args) {
        Ok(served) => {
            emit(&ServerEvent::Exit { served });
            ExitCode::SUCCESS
        }
        Err(e) => {
            emit(&ServerEvent::Error { message: format!("generation {}: {e:#}", args.generation) });
            ExitCode::FAILURE
        }
    }
}

/// Writes one event line; a parent that stopped reading is no reason to stop serving.
pub fn emit(event: &ServerEvent) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", event.to_line());
    let _ = out.flush();
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().try_into().unwrap_or(u64::MAX)
}

/// The life of one generation; returns the number of requests it answered.
fn serve(args: &ServerArgs) -> anyhow::Result<u64> {
    tableroll_load::raise_nofile_limit(u64::MAX).context("raising the descriptor limit")?;
    let started = Instant::now();
    let mut builder = Upgrader::builder(&args.dir)
        .id(format!("gen-{}", args.generation))
        .generation(u64::from(args.generation))
        .connect_timeout(STEP_LIMIT)
        .upgrade_timeout(STEP_LIMIT)
        .on_rollback(|rollback| {
            let took_us = rollback.took().as_micros().try_into().unwrap_or(u64::MAX);
            let failed_owner = rollback.failed_owner().to_string();
            emit(&ServerEvent::Rollback { failed_owner, took_us, at_ns: sys::now_ns() });
        });
    if let Some(window) = args.probation {
        builder = builder.probation(window);
    }
    let upgrader = builder.build().context("joining the upgrade group")?;
    let construction_us = micros(started);
    let upgrader = Arc::new(upgrader);
    let (listener, addr) = open_listener(&upgrader, args)?;
    open_extra_listeners(&upgrader, args.fds)?;
    listener.set_nonblocking().context("making the listener non-blocking")?;
    let inherited = upgrader.inherited_ids().len();
    emit(&ServerEvent::Listening { addr, construction_us, inherited });

    let mut wake = WakePipe::new().context("creating the wake pipe")?;
    let handlers = Handlers::new(args.generation, args.break_server, &wake)?;
    let acceptor = handlers.accept_on(listener, Arc::clone(&upgrader))?;
    stop_when_stdin_closes(Arc::clone(&upgrader));

    let started = Instant::now();
    let ready = upgrader.ready();
    if ready.is_ok() {
        emit(&ServerEvent::Ready { ready_us: micros(started), at_ns: sys::now_ns() });
        if let Some(after) = args.crash_after {
            crash::schedule(handlers.clone(), after).context("starting the crash thread")?;
        }
        upgrader.upgrade_complete().wait();
        emit(&ServerEvent::UpgradeComplete { at_ns: sys::now_ns() });
    }
    // Stop accepting (the listener stays open in the newer generation), then drain.
    wake.wake();
    let accepted = acceptor.join().unwrap_or_else(|_| Err(io::Error::other("the acceptor panicked")));
    let served = handlers.drain();
    upgrader.stop();
    ready.context("ready")?;
    accepted.context("accepting connections")?;
    Ok(served)
}

/// The previous generation's listener, or a new one; with the address it serves on.
fn open_listener(upgrader: &Upgrader, args: &ServerArgs) -> anyhow::Result<(Listener, String)> {
    if let Some(path) = &args.unix {
        let listener = upgrader.fds().listen_unix("web", path).context("the Unix listener")?;
        return Ok((Listener::Unix(listener), path.display().to_string()));
    }
    let addr = args.tcp.as_deref().unwrap_or("127.0.0.1:0");
    let listener = upgrader.fds().listen_tcp("web", addr).context("the TCP listener")?;
    let local = listener.local_addr().context("the TCP listener's address")?;
    Ok((Listener::Tcp(listener), local.to_string()))
}

/// Claims (or creates) the extra listeners; the store keeps them for the next generation.
fn open_extra_listeners(upgrader: &Upgrader, count: u32) -> anyhow::Result<()> {
    for i in 0..count {
        let id = format!("extra-{i}");
        upgrader.fds().listen_tcp(&id, "127.0.0.1:0").with_context(|| format!("extra listener {id}"))?;
    }
    Ok(())
}

/// Stops the upgrader when stdin reaches its end: the drill closes it to stop a generation,
/// and the kernel closes it if the drill dies, so no generation outlives its drill.
fn stop_when_stdin_closes(upgrader: Arc<Upgrader>) {
    let spawned = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        upgrader.stop();
    });
    if let Err(e) = spawned {
        eprintln!("tableroll drill-server: cannot watch stdin: {e}");
    }
}
