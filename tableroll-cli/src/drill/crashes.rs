//! The report's account of the planned crashes (`--crash`) and the rollbacks that followed
//! them (`--probation`): one record per crashed generation, one per rollback.

use serde::Serialize;

use super::attribution::{self, CrashWindow};
use super::generation::{Generation, Rollback};
use super::report::{ms_since, us_between};

/// A generation that crashed as planned.
#[derive(Debug, Clone, Serialize)]
pub struct CrashRecord {
    /// Its number.
    pub generation: u32,
    /// Its pid.
    pub pid: u32,
    /// When it crashed, since the load started.
    pub at_ms: f64,
    /// From its `ready()` returning to its crash.
    pub after_ready_ms: Option<f64>,
    /// The connections it held open when it crashed.
    pub open_connections: u64,
    /// Failed requests put down to it (see [`attribution`]).
    pub lost_inside: u64,
    /// The generation that became the owner again after it, if one did.
    pub rolled_back_to: Option<u32>,
    /// From its crash to that generation being recorded as the owner again.
    pub crash_to_rollback_us: Option<u64>,
}

/// A generation becoming the owner again.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackRecord {
    /// The generation that is the owner again.
    pub generation: u32,
    /// The owner that died, as the owner file named it.
    pub failed_owner: String,
    /// That owner's generation, if it was one of the drill's.
    pub failed_generation: Option<u32>,
    /// When the rollback was recorded, since the load started.
    pub at_ms: f64,
    /// The library's measure ([`tableroll::Rollback::took`]): from seeing the failed owner
    /// gone to being the owner again.
    pub took_us: u64,
    /// From the failed generation's crash report to this rollback, if it crashed as planned.
    pub crash_to_rollback_us: Option<u64>,
}

/// The crash and rollback records of `gens`. `origin_ns` is when the load started,
/// `stopped_ns` when it stopped (the time a generation never seen gone counts as gone), and
/// `dead_peer_failures` the resets and early closes of the clients.
pub fn records(
    gens: &[Generation],
    origin_ns: u64,
    stopped_ns: u64,
    dead_peer_failures: &[(u64, u64)],
) -> (Vec<CrashRecord>, Vec<RollbackRecord>) {
    let rollbacks = rollback_records(gens, origin_ns);
    let crashed: Vec<(&Generation, CrashWindow)> =
        gens.iter().filter_map(|g| Some((g, window(g, stopped_ns)?))).collect();
    let windows: Vec<CrashWindow> = crashed.iter().map(|&(_, window)| window).collect();
    let lost = attribution::lost_inside(&windows, dead_peer_failures);
    let crashes = crashed
        .iter()
        .zip(lost)
        .map(|(&(gen, window), lost_inside)| {
            let rollback = rollback_after(&rollbacks, gen);
            CrashRecord {
                generation: gen.number,
                pid: gen.pid,
                at_ms: ms_since(origin_ns, window.at_ns),
                after_ready_ms: gen.ready.map(|(_, ready_ns)| ms_since(ready_ns, window.at_ns)),
                open_connections: window.open_connections,
                lost_inside,
                rolled_back_to: rollback.map(|r| r.generation),
                crash_to_rollback_us: rollback.and_then(|r| r.crash_to_rollback_us),
            }
        })
        .collect();
    (crashes, rollbacks)
}

/// Every rollback of `gens`, in the order they happened.
fn rollback_records(gens: &[Generation], origin_ns: u64) -> Vec<RollbackRecord> {
    let crash_of = |n: Option<u32>| n.and_then(|n| gens.get(n as usize)).and_then(|g| g.crash);
    let mut records: Vec<RollbackRecord> = gens
        .iter()
        .flat_map(|gen| gen.rollbacks.iter().map(move |r| (gen.number, r)))
        .map(|(generation, r): (u32, &Rollback)| {
            let failed_generation = r.failed_generation();
            RollbackRecord {
                generation,
                failed_owner: r.failed_owner.clone(),
                failed_generation,
                at_ms: ms_since(origin_ns, r.at_ns),
                took_us: r.took_us,
                crash_to_rollback_us: crash_of(failed_generation).map(|c| us_between(c.at_ns, r.at_ns)),
            }
        })
        .collect();
    records.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    records
}

/// The crash of `gen` as the attribution sees it, if it crashed.
fn window(gen: &Generation, stopped_ns: u64) -> Option<CrashWindow> {
    let crash = gen.crash?;
    let (at_ns, open_connections) = (crash.at_ns, crash.open_connections);
    Some(CrashWindow { at_ns, gone_ns: gen.gone_ns(stopped_ns), open_connections })
}

/// The rollback that followed the crash of `gen`, if one did.
fn rollback_after<'r>(rollbacks: &'r [RollbackRecord], gen: &Generation) -> Option<&'r RollbackRecord> {
    rollbacks.iter().find(|r| r.failed_generation == Some(gen.number))
}
