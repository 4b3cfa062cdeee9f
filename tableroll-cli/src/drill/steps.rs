//! The step lines the drill prints on stderr as it goes: each upgrade, each generation that
//! drained and exited, each planned crash and each rollback.

use std::fmt::Write as _;

use super::generation::{Generation, Rollback};
use super::report::{count, ms, us_between};

/// The step line for an upgrade to `new`, from `old` if it found an owner.
pub fn upgrade_line(old: Option<&Generation>, new: &Generation, total: u32) -> String {
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
    match old {
        Some(old) => match old.notified_ns {
            Some(at_ns) => {
                let after = ms(us_between(new.spawned_ns, at_ns));
                let _ = write!(line, ", generation {} notified after {after}", old.number);
            }
            None => {
                let _ = write!(line, ", generation {} on probation", old.number);
            }
        },
        None => line.push_str(", no owner to take over from: started afresh"),
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

/// The step line for a generation that crashed as planned.
pub fn crash_line(gen: &Generation) -> String {
    let mut line = format!("  generation {} (pid {}) crashed on purpose", gen.number, gen.pid);
    if let (Some(crash), Some((_, ready_ns))) = (gen.crash, gen.ready) {
        let open = count(crash.open_connections, "connection", "connections");
        let _ = write!(line, " {} after ready, holding {open} open", ms(us_between(ready_ns, crash.at_ns)));
    }
    line
}

/// The step line for a rollback to `gen`; `crashed` is the generation that died, if it
/// crashed as planned.
pub fn rollback_line(gen: &Generation, rollback: &Rollback, crashed: Option<&Generation>) -> String {
    let mut line =
        format!("  generation {} is the owner again after {} died", gen.number, rollback.failed_owner);
    if let Some(crash) = crashed.and_then(|g| g.crash) {
        let _ = write!(line, ", {} after the crash", ms(us_between(crash.at_ns, rollback.at_ns)));
    }
    let _ = write!(line, " (the library's measure: {})", ms(rollback.took_us));
    line
}
