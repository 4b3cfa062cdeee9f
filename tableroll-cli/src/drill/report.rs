//! The drill's result: gathered from the generations and the clients, printed as a summary
//! table or as JSON, and judged (passed only if every upgrade completed and no request
//! failed).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::args::{DrillArgs, ListenerKind};
use super::generation::Generation;
use super::load::{FailureCounts, LoadStats, BUCKET_NS};
use super::stats::{Buckets, Spread};

/// How the drill ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every step ran (requests may still have failed).
    Finished,
    /// A step failed; why.
    Failed(String),
    /// SIGINT or SIGTERM.
    Interrupted,
}

/// Everything the drill found; its JSON form is the `--json` output.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `passed`, `failed` or `interrupted`.
    pub result: &'static str,
    /// Why the drill stopped early, if it did.
    pub error: Option<String>,
    /// The settings it ran with.
    pub settings: Settings,
    /// How long the load ran.
    pub duration_ms: f64,
    /// One record per upgrade (generation k taking over from k-1).
    pub upgrades: Vec<UpgradeRecord>,
    /// How many upgrades completed.
    pub upgrades_completed: usize,
    /// The spread of each upgrade timing, in microseconds.
    pub timings: Timings,
    /// The requests.
    pub requests: Requests,
    /// Requests per 50 ms bucket since the load started.
    pub throughput: Throughput,
    /// Every generation's process.
    pub generations: Vec<GenerationRecord>,
    /// The temporary directory (removed by the time this is printed).
    pub temp_dir: String,
    /// Where the chart was written (`--svg`), once it was.
    pub chart: Option<String>,
    /// Why the chart could not be written, if it could not (the drill then failed).
    pub chart_error: Option<String>,
}

/// The settings of a drill.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Upgrades asked for.
    pub upgrades: u32,
    /// Client threads.
    pub clients: u32,
    /// The listener kind.
    pub listener: ListenerKind,
    /// Extra listeners per handoff.
    pub fds: u32,
    /// Time between generations.
    pub interval_ms: f64,
    /// Whether connections were reused.
    pub keep_alive: bool,
}

/// One upgrade's timings; `None` for what did not happen.
#[derive(Debug, Serialize)]
pub struct UpgradeRecord {
    /// The new generation.
    pub generation: u32,
    /// Its pid.
    pub pid: u32,
    /// When it was spawned, since the load started.
    pub started_at_ms: f64,
    /// Descriptors it received.
    pub inherited: Option<usize>,
    /// Its time inside construction (every descriptor received).
    pub construction_us: Option<u64>,
    /// Its time inside `ready()`.
    pub ready_us: Option<u64>,
    /// From its spawn until its `ready()` returned.
    pub spawn_to_ready_us: Option<u64>,
    /// From its spawn until the old generation's `upgrade_complete()` fired.
    pub spawn_to_old_notified_us: Option<u64>,
    /// From that notice until the old generation had drained and exited.
    pub old_drain_us: Option<u64>,
    /// Whether it all happened, with every descriptor handed over and a clean exit.
    pub completed: bool,
}

/// The spread of each upgrade timing over the upgrades, in microseconds.
#[derive(Debug, Serialize)]
pub struct Timings {
    /// See [`UpgradeRecord::construction_us`].
    pub construction_us: Option<Spread>,
    /// See [`UpgradeRecord::ready_us`].
    pub ready_us: Option<Spread>,
    /// See [`UpgradeRecord::spawn_to_ready_us`].
    pub spawn_to_ready_us: Option<Spread>,
    /// See [`UpgradeRecord::spawn_to_old_notified_us`].
    pub spawn_to_old_notified_us: Option<Spread>,
    /// See [`UpgradeRecord::old_drain_us`].
    pub old_drain_us: Option<Spread>,
}

/// What happened to the requests.
#[derive(Debug, Serialize)]
pub struct Requests {
    /// Started.
    pub sent: u64,
    /// Answered `200 OK`.
    pub succeeded: u64,
    /// Failed, all kinds.
    pub failed: u64,
    /// Failed, by kind.
    pub failures: FailureCounts,
    /// Kept connections replaced between requests (not failures).
    pub reconnects: u64,
    /// The time of a successful request, in microseconds.
    pub latency_us: Option<Spread>,
    /// Successful requests per second over the whole load.
    pub mean_per_s: f64,
    /// The lowest success rate of a whole 50 ms bucket.
    pub lowest_bucket_per_s: Option<f64>,
    /// The first few failures, described.
    pub failure_examples: Vec<String>,
}

/// Requests per bucket.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// The width of a bucket.
    pub bucket_ms: u64,
    /// Succeeded and failed per bucket.
    #[serde(flatten)]
    pub buckets: Buckets,
}

/// One generation's process.
#[derive(Debug, Serialize)]
pub struct GenerationRecord {
    /// Its number.
    pub generation: u32,
    /// Its pid (reaped by the time this is printed).
    pub pid: u32,
    /// Requests it answered.
    pub served: Option<u64>,
    /// Its exit code (`None` if killed by a signal).
    pub exit_code: Option<i32>,
}

fn us_between(from_ns: u64, to_ns: u64) -> u64 {
    to_ns.saturating_sub(from_ns) / 1000
}

impl UpgradeRecord {
    fn new(old: &Generation, new: &Generation, origin_ns: u64, expected_fds: usize) -> UpgradeRecord {
        let listening = new.listening.as_ref();
        let mut record = UpgradeRecord {
            generation: new.number,
            pid: new.pid,
            started_at_ms: new.spawned_ns.saturating_sub(origin_ns) as f64 / 1e6,
            inherited: listening.map(|l| l.2),
            construction_us: listening.map(|l| l.1),
            ready_us: new.ready.map(|r| r.0),
            spawn_to_ready_us: new.ready.map(|r| us_between(new.spawned_ns, r.1)),
            spawn_to_old_notified_us: old.notified_ns.map(|at| us_between(new.spawned_ns, at)),
            old_drain_us: old.notified_ns.zip(old.closed_ns).map(|(from, to)| us_between(from, to)),
            completed: false,
        };
        record.completed = record.inherited == Some(expected_fds)
            && record.ready_us.is_some()
            && record.spawn_to_old_notified_us.is_some()
            && old.exited_cleanly();
        record
    }
}

impl Report {
    /// Gathers the report. `window` is when the load started and stopped.
    pub fn new(
        args: &DrillArgs,
        gens: &[Generation],
        stats: &LoadStats,
        window: (u64, u64),
        outcome: Outcome,
        temp: &Path,
    ) -> Report {
        let expected_fds = 1 + args.fds as usize;
        let upgrades: Vec<UpgradeRecord> = gens
            .windows(2)
            .map(|pair| UpgradeRecord::new(&pair[0], &pair[1], window.0, expected_fds))
            .collect();
        let upgrades_completed = upgrades.iter().filter(|u| u.completed).count();
        let duration_ns = window.1 - window.0;
        let (result, error) = match outcome {
            Outcome::Interrupted => ("interrupted", None),
            Outcome::Failed(why) => ("failed", Some(why)),
            Outcome::Finished => {
                let clean = stats.failures.total() == 0 && stats.succeeded > 0;
                let all = upgrades_completed == args.upgrades as usize;
                (if clean && all { "passed" } else { "failed" }, None)
            }
        };
        Report {
            result,
            error,
            settings: Settings {
                upgrades: args.upgrades,
                clients: args.clients,
                listener: args.listener,
                fds: args.fds,
                interval_ms: args.interval.as_secs_f64() * 1e3,
                keep_alive: args.keep_alive,
            },
            duration_ms: duration_ns as f64 / 1e6,
            timings: Timings::of(&upgrades),
            upgrades,
            upgrades_completed,
            requests: Requests::of(stats, duration_ns),
            throughput: throughput(stats, duration_ns),
            generations: gens.iter().map(GenerationRecord::of).collect(),
            temp_dir: temp.display().to_string(),
            chart: None,
            chart_error: None,
        }
    }

    /// Records that the chart was written to `path`, or why it could not be: a drill whose chart
    /// is missing did not pass (an interrupted one stays interrupted).
    pub fn chart_written(&mut self, path: &Path, written: anyhow::Result<()>) {
        match written {
            Ok(()) => self.chart = Some(path.display().to_string()),
            Err(e) => {
                self.chart_error = Some(format!("writing the chart to {}: {e:#}", path.display()));
                if self.result == "passed" {
                    self.result = "failed";
                }
            }
        }
    }

    /// 0 passed, 1 failed, 130 interrupted.
    pub fn exit_code(&self) -> ExitCode {
        match self.result {
            "passed" => ExitCode::SUCCESS,
            "interrupted" => ExitCode::from(130),
            _ => ExitCode::FAILURE,
        }
    }
}

impl Timings {
    fn of(upgrades: &[UpgradeRecord]) -> Timings {
        let spread = |f: fn(&UpgradeRecord) -> Option<u64>| Spread::of(upgrades.iter().filter_map(f));
        Timings {
            construction_us: spread(|u| u.construction_us),
            ready_us: spread(|u| u.ready_us),
            spawn_to_ready_us: spread(|u| u.spawn_to_ready_us),
            spawn_to_old_notified_us: spread(|u| u.spawn_to_old_notified_us),
            old_drain_us: spread(|u| u.old_drain_us),
        }
    }
}

impl Requests {
    fn of(stats: &LoadStats, duration_ns: u64) -> Requests {
        Requests {
            sent: stats.sent,
            succeeded: stats.succeeded,
            failed: stats.failures.total(),
            failures: stats.failures,
            reconnects: stats.reconnects,
            latency_us: Spread::of(stats.latencies_us.iter().copied()),
            mean_per_s: if duration_ns == 0 {
                0.0
            } else {
                stats.succeeded as f64 * 1e9 / duration_ns as f64
            },
            lowest_bucket_per_s: stats.buckets.min_ok_rate(duration_ns),
            failure_examples: stats.examples.clone(),
        }
    }
}

fn throughput(stats: &LoadStats, duration_ns: u64) -> Throughput {
    let mut buckets = stats.buckets.clone();
    buckets.cover(duration_ns);
    Throughput { bucket_ms: BUCKET_NS / 1_000_000, buckets }
}

impl GenerationRecord {
    fn of(gen: &Generation) -> GenerationRecord {
        GenerationRecord {
            generation: gen.number,
            pid: gen.pid,
            served: gen.served,
            exit_code: gen.status.and_then(|s| s.code()),
        }
    }
}

/// Prints the report on stdout: JSON, or the summary table.
pub fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    let text =
        if json { serde_json::to_string_pretty(report)? + "\n" } else { super::summary::table(report) };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `n` things: `1 upgrade`, `3 upgrades`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    match n.into() {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// Milliseconds from microseconds, for people.
pub fn ms(us: u64) -> String {
    let ms = us as f64 / 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The step line for an upgrade from `old` to `new`.
pub fn upgrade_line(old: &Generation, new: &Generation, total: u32) -> String {
    let mut line = format!("upgrade {}/{total}: generation {} (pid {})", new.number, new.number, new.pid);
    if let Some((_, construction_us, inherited)) = &new.listening {
        let fds = if *inherited == 1 { "fd" } else { "fds" };
        let _ = write!(line, " received {inherited} {fds} in {}", ms(*construction_us));
    }
    if let Some((ready_us, at_ns)) = new.ready {
        let _ = write!(
            line,
            ", ready() {}, ready {} after spawn",
            ms(ready_us),
            ms(us_between(new.spawned_ns, at_ns))
        );
    }
    if let Some(at_ns) = old.notified_ns {
        let _ = write!(
            line,
            ", generation {} notified after {}",
            old.number,
            ms(us_between(new.spawned_ns, at_ns))
        );
    }
    line
}

/// The step line for a generation that drained and exited.
pub fn exit_line(gen: &Generation) -> String {
    let drain = gen.notified_ns.zip(gen.closed_ns).map(|(from, to)| ms(us_between(from, to)));
    format!(
        "  generation {} drained and exited {} after its notice, having served {}",
        gen.number,
        drain.unwrap_or_else(|| "?".into()),
        gen.served.map_or_else(|| "? requests".into(), |n| count(n, "request", "requests"))
    )
}
