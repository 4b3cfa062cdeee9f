//! `tableroll drill`: a demo server upgraded again and again under load, every handoff timed.
//!
//! The drill creates a temporary directory, starts generation 0 of the demo server (this
//! program's hidden `drill-server` subcommand, see [`server`]) as an independent process,
//! drives load at it from client threads ([`tableroll_load`], counted in [`load`]), and starts
//! generation k+1 every interval; each generation takes the listener over from the one before
//! through the library. With `--crash`, some generations kill themselves soon after they become
//! the owner ([`crash`]); the next generation still starts on schedule, and the requests they
//! took down are counted apart ([`attribution`]). With `--probation`, the generation that
//! handed over to a crashed one becomes the owner again; who owned the group when is
//! reconstructed from the generations' events ([`ownership`]).
//!
//! Every event of every generation comes through one channel (with SIGINT and SIGTERM), which
//! the main loop here waits on: nothing is synchronised by sleeping. At the end, or on the first
//! failure or signal, it stops the load, stops every generation (killing by pid what lingers),
//! removes the directory and reports ([`report`], [`chart`]).

pub mod args;
mod attribution;
mod chart;
mod crash;
mod crashes;
mod events;
mod generation;
mod handler;
mod interrupt;
mod load;
mod ownership;
mod progress;
mod report;
pub mod server;
mod stats;
mod steps;
mod summary;

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::Context as _;
use tableroll_load::{Load, LoadConfig, Target};

use self::args::{DrillArgs, ListenerKind};
use self::events::ServerEvent;
use self::generation::{Event, Generation, Listen, ServerSpec};
use self::load::{LoadStats, Tally};
use self::ownership::Ownership;
use self::progress::Progress;
use self::report::{Outcome, Report};
use crate::sys;

/// How long one step may take (a generation getting ready, an upgrade, the old generations
/// draining) before the drill gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How long the generations get to stop by themselves at the end before they are killed.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
/// How often the progress bar's counters are refreshed.
const TICK: Duration = Duration::from_millis(100);

/// The exit status of a usage error, as clap's own.
const USAGE_ERROR: u8 = 2;

/// Runs the drill; the exit code says whether it passed.
pub fn run(args: &DrillArgs) -> anyhow::Result<ExitCode> {
    if let Err(why) = args.check_crash() {
        eprintln!("tableroll drill: error: {why}");
        return Ok(ExitCode::from(USAGE_ERROR));
    }
    // A chart that cannot be written is a usage error, found before anything starts.
    if let Some(path) = &args.svg {
        if let Err(why) = chart::prepare(path) {
            eprintln!("tableroll drill: error: --svg {}: {why}", path.display());
            return Ok(ExitCode::from(USAGE_ERROR));
        }
    }
    tableroll_load::raise_nofile_limit(u64::MAX).context("raising the descriptor limit")?;
    let (sender, events) = mpsc::channel();
    let interrupts = interrupt::forward(sender.clone()).context("catching SIGINT and SIGTERM")?;
    let temp = tempfile::Builder::new()
        .prefix("tableroll-drill-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut drill = Drill::new(args, temp.path(), sender, events)?;
    let outcome = drill.execute();
    let stats = drill.shutdown();
    drop(interrupts);
    let mut report = Report::new(args, &drill.gens, &stats, drill.window(), outcome, temp.path());
    drop(drill);
    temp.close().context("removing the temporary directory")?;
    // Written before the verdict is printed, so that a chart that could not be written fails it.
    if let Some(path) = &args.svg {
        report.chart_written(path, chart::write_svg(path, &report));
    }
    report::print(&report, args.json)?;
    if let (Some(path), true, false) = (&report.chart, args.json, args.quiet) {
        eprintln!("{}", summary::chart_line(path));
    }
    Ok(report.exit_code())
}

/// The state of a drill in progress.
struct Drill<'a> {
    args: &'a DrillArgs,
    spec: ServerSpec,
    sender: Sender<Event>,
    events: Receiver<Event>,
    gens: Vec<Generation>,
    load: Option<Load<Tally>>,
    progress: Progress,
    /// The newest generation whose upgrade line was printed (exit lines follow it).
    announced: u32,
    /// When the load started and stopped ([`sys::now_ns`]).
    started_ns: u64,
    stopped_ns: u64,
}

impl<'a> Drill<'a> {
    fn new(
        args: &'a DrillArgs,
        temp: &Path,
        sender: Sender<Event>,
        events: Receiver<Event>,
    ) -> anyhow::Result<Drill<'a>> {
        let dir = temp.join("coordination");
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let listen = match args.listener {
            ListenerKind::Tcp => Listen::Tcp("127.0.0.1:0".into()),
            ListenerKind::Unix => Listen::Unix(temp.join("http.sock")),
        };
        let exe = std::env::current_exe().context("finding this program to start the demo server")?;
        let spec = ServerSpec {
            exe,
            dir,
            listen,
            fds: args.fds,
            break_server: args.break_server,
            probation: args.probation,
        };
        let progress = Progress::new(args.upgrades, args.quiet, args.json);
        let started_ns = sys::now_ns();
        Ok(Drill {
            args,
            spec,
            sender,
            events,
            gens: Vec::new(),
            load: None,
            progress,
            announced: 0,
            started_ns,
            stopped_ns: 0,
        })
    }

    /// The time the load ran, as (start, end) readings of [`sys::now_ns`].
    fn window(&self) -> (u64, u64) {
        (self.started_ns, self.stopped_ns.max(self.started_ns))
    }

    /// The drill proper: generation 0, the load, the upgrades, one more interval of load.
    fn execute(&mut self) -> Outcome {
        match self.upgrades() {
            Ok(()) => Outcome::Finished,
            Err(stop) => stop,
        }
    }

    fn upgrades(&mut self) -> Result<(), Outcome> {
        self.spawn(0)?;
        self.wait_for("generation 0 to be ready", |d| d.gens[0].ready.is_some())?;
        self.start_load()?;
        let interval = u64::try_from(self.args.interval.as_nanos()).unwrap_or(u64::MAX);
        for k in 1..=self.args.upgrades {
            self.wait_until(self.started_ns.saturating_add(interval.saturating_mul(u64::from(k))))?;
            self.spawn(k)?;
            let new = k as usize;
            self.wait_for(&format!("upgrade {k}"), |d| d.upgraded(new))?;
            let old = self.old_of(new);
            let line = steps::upgrade_line(old.map(|o| &self.gens[o]), &self.gens[new], self.args.upgrades);
            self.progress.line(&line);
            self.announced = k;
            if let Some(old) = old.filter(|&o| self.gens[o].reaped()) {
                self.announce_exit(old);
            }
        }
        let last = self.gens.len() - 1;
        self.wait_until(self.gens[last].spawned_ns.saturating_add(interval))?;
        // With a probation, the last generation's predecessor stays until the window passed.
        let limit = STEP_LIMIT.saturating_add(self.args.probation.unwrap_or_default());
        self.wait_for_within(limit, "the old generations to drain and exit", |d| {
            let owner = Ownership::of(&d.gens).owner_now();
            d.gens.iter().all(|g| g.reaped() || Some(g.number) == owner)
        })
    }

    /// The generation that generation `new` took over from, if it found an owner.
    fn old_of(&self, new: usize) -> Option<usize> {
        Ownership::of(&self.gens).predecessor(&self.gens[new]).map(|n| n as usize)
    }

    /// Whether generation `new` is the owner and (without a probation) the one it took over
    /// from was notified. With a probation, the old generation's notice comes when its window
    /// passes or a newer generation takes over in turn.
    fn upgraded(&self, new: usize) -> bool {
        let notified = |old: usize| self.args.probation.is_some() || self.gens[old].notified_ns.is_some();
        self.gens[new].ready.is_some() && self.old_of(new).is_none_or(notified)
    }

    fn spawn(&mut self, number: u32) -> Result<(), Outcome> {
        let crash_after = self.args.crashes_generation(number).then(|| self.args.crash_after());
        let generation = Generation::spawn(&self.spec, number, crash_after, &self.sender)
            .map_err(|e| Outcome::Failed(format!("starting generation {number}: {e}")))?;
        self.gens.push(generation);
        Ok(())
    }

    fn start_load(&mut self) -> Result<(), Outcome> {
        let (addr, ..) = self.gens[0].listening.clone().unwrap_or_default();
        let target = match &self.spec.listen {
            Listen::Tcp(_) => {
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(Outcome::Failed(format!("a bad address {addr:?}")));
                }
                // Every later generation must serve on the very same address.
                self.spec.listen = Listen::Tcp(addr.clone());
                Target::Tcp(addr)
            }
            Listen::Unix(path) => Target::Unix(path.clone()),
        };
        let line = format!(
            "generation 0 (pid {}) serving on {target}; coordination directory {}",
            self.gens[0].pid,
            self.spec.dir.display()
        );
        self.progress.line(&line);
        self.started_ns = sys::now_ns();
        let mut config = LoadConfig::new(vec![target], self.args.clients as usize, self.args.request_timeout);
        config.keep_alive = self.args.keep_alive;
        let origin_ns = self.started_ns;
        let load = Load::start(&config, |_| Tally::new(origin_ns))
            .map_err(|e| Outcome::Failed(format!("starting the clients: {e}")))?;
        self.load = Some(load);
        Ok(())
    }

    /// Handles events until `done` holds; fails if a generation fails or the step takes longer
    /// than [`STEP_LIMIT`].
    fn wait_for(&mut self, what: &str, done: impl Fn(&Self) -> bool) -> Result<(), Outcome> {
        self.wait_for_within(STEP_LIMIT, what, done)
    }

    /// Handles events until `done` holds; fails if a generation fails or the step takes longer
    /// than `limit`.
    fn wait_for_within(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), Outcome> {
        let deadline = deadline_after(limit);
        loop {
            self.check()?;
            if done(self) {
                return Ok(());
            }
            if sys::now_ns() >= deadline {
                return Err(Outcome::Failed(format!("gave up waiting for {what} after {limit:?}")));
            }
            self.next_event(deadline)?;
        }
    }

    /// Handles events until the clock reads `at_ns`.
    fn wait_until(&mut self, at_ns: u64) -> Result<(), Outcome> {
        loop {
            self.check()?;
            if sys::now_ns() >= at_ns {
                return Ok(());
            }
            self.next_event(at_ns)?;
        }
    }

    /// Handles the next event, or returns at `deadline_ns` or after [`TICK`].
    fn next_event(&mut self, deadline_ns: u64) -> Result<(), Outcome> {
        let wait = Duration::from_nanos(deadline_ns.saturating_sub(sys::now_ns())).min(TICK);
        match self.events.recv_timeout(wait) {
            Ok(Event::Interrupted) => return Err(Outcome::Interrupted),
            Ok(event) => self.handle(event),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        self.refresh();
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Server { generation, event } => self.observe(generation as usize, event),
            Event::Closed { generation } => {
                self.gens[generation as usize].closed();
                // After the line of the upgrade that made it step down, not before.
                if generation < self.announced || self.load.is_none() {
                    self.announce_exit(generation as usize);
                }
            }
            Event::Interrupted => {}
        }
    }

    /// Takes in an event of generation `number`; a crash or a rollback gets its step line.
    fn observe(&mut self, number: usize, event: ServerEvent) {
        let (crash, rollback) = (event.is_crash(), event.is_rollback());
        self.gens[number].observe(event);
        let gen = &self.gens[number];
        if crash {
            self.progress.line(&steps::crash_line(gen));
        }
        if let Some(rollback) = gen.rollbacks.last().filter(|_| rollback) {
            let crashed = rollback.failed_generation().and_then(|n| self.gens.get(n as usize));
            self.progress.line(&steps::rollback_line(gen, rollback, crashed));
        }
    }

    fn announce_exit(&self, generation: usize) {
        let gen = &self.gens[generation];
        if gen.exited_cleanly() && gen.notified_ns.is_some() {
            self.progress.line(&steps::exit_line(gen));
        }
    }

    fn refresh(&self) {
        let upgrades = self.gens.iter().skip(1).filter(|g| g.ready.is_some()).count() as u32;
        let (sent, failed) = self.load.as_ref().map_or((0, 0), |l| (l.started(), l.failed()));
        self.progress.update(upgrades, sent, failed);
    }

    /// Fails if a generation reported an error, or exited when it should not have (a
    /// generation that crashed as planned should have).
    fn check(&self) -> Result<(), Outcome> {
        let newest = self.gens.len().saturating_sub(1);
        for (i, gen) in self.gens.iter().enumerate() {
            let trouble = match (&gen.error, gen.status) {
                (Some(error), _) => error.clone(),
                (None, Some(_)) if gen.crashed() && self.args.crashes_generation(gen.number) => continue,
                (None, Some(status)) if !status.success() => format!("generation {i} exited with {status}"),
                (None, Some(_)) if i == newest => format!("generation {i} exited while it was the newest"),
                _ => continue,
            };
            let stderr = gen.stderr_tail();
            let stderr = if stderr.is_empty() { String::new() } else { format!("\nits stderr:\n{stderr}") };
            return Err(Outcome::Failed(format!("{trouble}{stderr}")));
        }
        Ok(())
    }

    /// Stops the load, then every generation (by closing its stdin, then by its pid), and
    /// reaps them all; returns what the clients did.
    fn shutdown(&mut self) -> LoadStats {
        let stats = self.load.take().map(|load| LoadStats::total(load.stop()));
        self.stopped_ns = sys::now_ns();
        self.progress.finish();
        self.gens.iter_mut().for_each(Generation::stop);
        let deadline = deadline_after(SHUTDOWN_LIMIT);
        while !self.gens.iter().all(Generation::reaped) && sys::now_ns() < deadline {
            let wait = Duration::from_nanos(deadline.saturating_sub(sys::now_ns()));
            match self.events.recv_timeout(wait) {
                Ok(Event::Interrupted) | Err(_) => break,
                Ok(event) => self.handle(event),
            }
        }
        self.gens.iter_mut().for_each(Generation::kill);
        stats.unwrap_or_else(LoadStats::empty)
    }
}

fn deadline_after(limit: Duration) -> u64 {
    sys::now_ns().saturating_add(u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX))
}
