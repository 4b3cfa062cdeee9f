//! The drill's result: gathered from the generations and the clients, printed as a summary
//! table or as JSON, and judged: passed only if every upgrade completed (a generation crashed
//! on purpose, with `--probation`, by a rollback) and no request was lost outside the crashed
//! generations.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::args::{DrillArgs, ListenerKind};
use super::crashes::{self, CrashRecord, RollbackRecord};
use super::generation::Generation;
use super::load::{FailureCounts, LoadStats, BUCKET_NS};
use super::ownership::Ownership;
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
    /// How many upgrades were to complete: all but those to crashed generations, and those of
    /// generations that found no owner because a crashed one left none.
    pub upgrades_expected: usize,
    /// The generations that crashed as planned (`--crash`).
    pub crashes: Vec<CrashRecord>,
    /// Every rollback: a generation that became the owner again.
    pub rollbacks: Vec<RollbackRecord>,
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
    /// The generations made to crash.
    pub crash: Vec<u32>,
    /// How long after its `ready()` a crashing generation crashes.
    pub crash_after_ms: Option<f64>,
    /// Every generation's probation.
    pub probation_ms: Option<f64>,
}

/// One upgrade's timings; `None` for what did not happen.
#[derive(Debug, Serialize)]
pub struct UpgradeRecord {
    /// The new generation.
    pub generation: u32,
    /// Its pid.
    pub pid: u32,
    /// The generation that owned the group when it became the owner; `None` if none did (a
    /// crashed one left none) or it never became the owner.
    pub took_over_from: Option<u32>,
    /// Whether it crashed as planned (`--crash`).
    pub crashed: bool,
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
    /// From its spawn until the old generation's `upgrade_complete()` fired (with a
    /// probation, at its end). Given for the last generation that took over from it only.
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
    /// Failed, put down to the crashed generations (see `attribution`).
    pub lost_inside_crashed: u64,
    /// Failed otherwise.
    pub lost_outside: u64,
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
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Whether it crashed as planned (`--crash`).
    pub crashed: bool,
    /// How many times it became the owner again.
    pub rollbacks: usize,
}

pub fn us_between(from_ns: u64, to_ns: u64) -> u64 {
    to_ns.saturating_sub(from_ns) / 1000
}

/// Milliseconds from `from_ns` to `to_ns`.
pub fn ms_since(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

impl UpgradeRecord {
    /// The upgrade to `new` from `old` (if it found an owner); `notice` says whether `old`'s
    /// notice is `new`'s doing (it was the last to take over from `old`).
    fn new(
        old: Option<&Generation>,
        new: &Generation,
        notice: bool,
        origin_ns: u64,
        expected_fds: usize,
    ) -> UpgradeRecord {
        let listening = new.listening.as_ref();
        let noticed = old.filter(|_| notice);
        let mut record = UpgradeRecord {
            generation: new.number,
            pid: new.pid,
            took_over_from: old.map(|g| g.number),
            crashed: new.crashed(),
            started_at_ms: ms_since(origin_ns, new.spawned_ns),
            inherited: listening.map(|l| l.2),
            construction_us: listening.map(|l| l.1),
            ready_us: new.ready.map(|r| r.0),
            spawn_to_ready_us: new.ready.map(|r| us_between(new.spawned_ns, r.1)),
            spawn_to_old_notified_us: noticed
                .and_then(|old| old.notified_ns)
                .map(|at| us_between(new.spawned_ns, at)),
            old_drain_us: noticed
                .and_then(|old| old.notified_ns.zip(old.closed_ns))
                .map(|(from, to)| us_between(from, to)),
            completed: false,
        };
        record.completed = record.inherited == Some(expected_fds)
            && record.ready_us.is_some()
            && record.spawn_to_old_notified_us.is_some()
            && noticed.is_some_and(Generation::exited_cleanly);
        record
    }

    /// Whether it was to complete: not if its generation was to crash, nor if it became the
    /// owner while there was none (a crashed generation left none and nobody rolled back).
    fn expected(&self, args: &DrillArgs) -> bool {
        !args.crashes_generation(self.generation) && !self.started_afresh()
    }

    /// Whether its generation became ready with no owner to take over from (a crashed
    /// generation left none and nobody rolled back).
    pub fn started_afresh(&self) -> bool {
        self.ready_us.is_some() && self.took_over_from.is_none()
    }
}

/// The upgrades of `gens`, each from the generation that owned the group when its generation
/// became the owner.
fn upgrade_records(gens: &[Generation], origin_ns: u64, expected_fds: usize) -> Vec<UpgradeRecord> {
    let ownership = Ownership::of(gens);
    let olds: Vec<Option<u32>> = gens.iter().map(|g| ownership.predecessor(g)).collect();
    (1..gens.len())
        .map(|k| {
            let old = olds[k].and_then(|n| gens.get(n as usize));
            let notice = olds[k + 1..].iter().all(|later| *later != olds[k]);
            UpgradeRecord::new(old, &gens[k], notice, origin_ns, expected_fds)
        })
        .collect()
}

/// Whether every generation to crash crashed and, with a probation, was rolled back.
fn crashes_as_planned(args: &DrillArgs, crashes: &[CrashRecord]) -> bool {
    args.crashes().iter().all(|&n| {
        crashes.iter().any(|c| c.generation == n && (args.probation.is_none() || c.rolled_back_to.is_some()))
    })
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
        let upgrades = upgrade_records(gens, window.0, 1 + args.fds as usize);
        let expected: Vec<&UpgradeRecord> = upgrades.iter().filter(|u| u.expected(args)).collect();
        let upgrades_completed = expected.iter().filter(|u| u.completed).count();
        let (crashes, rollbacks) = crashes::records(gens, window.0, window.1, &stats.dead_peer_failures);
        let duration_ns = window.1 - window.0;
        let requests = Requests::of(stats, &crashes, duration_ns);
        let (result, error) = match outcome {
            Outcome::Interrupted => ("interrupted", None),
            Outcome::Failed(why) => ("failed", Some(why)),
            Outcome::Finished => {
                let clean = requests.lost_outside == 0 && stats.succeeded > 0;
                let all = upgrades_completed == expected.len() && upgrades.len() == args.upgrades as usize;
                let planned = crashes_as_planned(args, &crashes);
                (if clean && all && planned { "passed" } else { "failed" }, None)
            }
        };
        let upgrades_expected = expected.len();
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
                crash: args.crashes(),
                crash_after_ms: (!args.crash.is_empty()).then(|| args.crash_after().as_secs_f64() * 1e3),
                probation_ms: args.probation.map(|p| p.as_secs_f64() * 1e3),
            },
            duration_ms: duration_ns as f64 / 1e6,
            timings: Timings::of(&upgrades),
            upgrades,
            upgrades_completed,
            upgrades_expected,
            crashes,
            rollbacks,
            requests,
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
    fn of(stats: &LoadStats, crashes: &[CrashRecord], duration_ns: u64) -> Requests {
        let inside: u64 = crashes.iter().map(|c| c.lost_inside).sum();
        Requests {
            sent: stats.sent,
            succeeded: stats.succeeded,
            failed: stats.failures.total(),
            failures: stats.failures,
            lost_inside_crashed: inside,
            lost_outside: stats.failures.total().saturating_sub(inside),
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
            signal: gen.status.and_then(|s| s.signal()),
            crashed: gen.crashed(),
            rollbacks: gen.rollbacks.len(),
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
