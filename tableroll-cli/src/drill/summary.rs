//! The report as a table for people.

use std::fmt::Write as _;

use super::args::ListenerKind;
use super::report::{count, ms, Report};
use super::stats::Spread;

/// The summary table, ending with the verdict.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    timings(&mut out, report);
    crashes(&mut out, report);
    requests(&mut out, report);
    if let Some(path) = &report.chart {
        let _ = writeln!(out, "{}\n", chart_line(path));
    }
    verdict(&mut out, report);
    out
}

/// The line saying where the chart went.
pub fn chart_line(path: &str) -> String {
    format!("chart written to {path}")
}

fn header(out: &mut String, report: &Report) {
    let s = &report.settings;
    let connections = if s.keep_alive { "kept-alive connections" } else { "a new connection per request" };
    let listener = match s.listener {
        ListenerKind::Tcp => "TCP",
        ListenerKind::Unix => "Unix",
    };
    let _ = writeln!(
        out,
        "tableroll drill: {} of a {listener} server under load from {} ({connections}), {}",
        count(s.upgrades, "upgrade", "upgrades"),
        count(s.clients, "client", "clients"),
        count(s.fds, "extra fd", "extra fds")
    );
    let _ = writeln!(
        out,
        "a new generation every {:?}, load for {:.1} s\n",
        duration(s.interval_ms),
        report.duration_ms / 1e3
    );
    if let Some(after) = s.crash_after_ms {
        let _ = writeln!(
            out,
            "{} made to crash (SIGKILL, no drain) {:?} after ready()",
            generations(&s.crash),
            duration(after)
        );
    }
    if let Some(window) = s.probation_ms {
        let _ =
            writeln!(out, "every generation on probation for {:?} after it handed over", duration(window));
    }
    if s.crash_after_ms.is_some() || s.probation_ms.is_some() {
        out.push('\n');
    }
}

/// A duration from milliseconds, to print as `250ms` or `2s`.
fn duration(ms: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(ms / 1e3)
}

/// `generation 3`, `generations 3 and 6`, `generations 2, 4 and 6`.
fn generations(numbers: &[u32]) -> String {
    let words: Vec<String> = numbers.iter().map(u32::to_string).collect();
    match words.split_last() {
        None => "no generation".into(),
        Some((only, [])) => format!("generation {only}"),
        Some((last, rest)) => format!("generations {} and {last}", rest.join(", ")),
    }
}

fn row(out: &mut String, label: &str, spread: Option<Spread>) {
    let cells = spread.map_or_else(
        || format!("{:>10} {:>10} {:>10}", "-", "-", "-"),
        |s| format!("{:>10} {:>10} {:>10}", ms(s.p50), ms(s.p99), ms(s.max)),
    );
    let _ = writeln!(out, "  {label:<36}{cells}");
}

fn timings(out: &mut String, report: &Report) {
    let t = &report.timings;
    let title = format!("upgrade timings ({})", count(report.upgrades.len() as u64, "upgrade", "upgrades"));
    let _ = writeln!(out, "{title:<38}{:>10} {:>10} {:>10}", "p50", "p99", "max");
    row(out, "newcomer construction (fds received)", t.construction_us);
    row(out, "newcomer ready()", t.ready_us);
    row(out, "spawn to newcomer ready", t.spawn_to_ready_us);
    let notified = match report.settings.probation_ms {
        Some(_) => "spawn to old notified (probation)",
        None => "spawn to old generation notified",
    };
    row(out, notified, t.spawn_to_old_notified_us);
    row(out, "old generation notice to exit", t.old_drain_us);
    out.push('\n');
}

/// Each crashed generation: when, what it held, what it took down, and the rollback after it.
fn crashes(out: &mut String, report: &Report) {
    if report.settings.crash.is_empty() {
        return;
    }
    let _ =
        writeln!(out, "crashed generations ({} of {})", report.crashes.len(), report.settings.crash.len());
    for c in &report.crashes {
        let rollback = match (c.rolled_back_to, c.crash_to_rollback_us) {
            (Some(to), Some(us)) => format!("generation {to} owner again {} after the crash", ms(us)),
            (Some(to), None) => format!("generation {to} owner again"),
            (None, _) => "no rollback".to_string(),
        };
        let _ = writeln!(
            out,
            "  generation {} (pid {}) at {:.2} s, holding {}: {} lost inside it; {rollback}",
            c.generation,
            c.pid,
            c.at_ms / 1e3,
            count(c.open_connections, "connection", "connections"),
            count(c.lost_inside, "request", "requests"),
        );
    }
    let took = Spread::of(report.rollbacks.iter().map(|r| r.took_us));
    let took = took.map_or_else(String::new, |t| {
        format!(" (the library's measure: p50 {}, max {})", ms(t.p50), ms(t.max))
    });
    let _ = writeln!(out, "rollbacks: {}{took}\n", report.rollbacks.len());
}

fn requests(out: &mut String, report: &Report) {
    let r = &report.requests;
    let f = &r.failures;
    let _ = writeln!(out, "requests: {} sent, {} succeeded, {} failed", r.sent, r.succeeded, r.failed);
    let _ = writeln!(
        out,
        "  failed by kind: refused {}, reset {}, closed {}, timeout {}, bad response {}, other {}",
        f.refused, f.reset, f.closed, f.timeout, f.bad_response, f.other
    );
    if !report.settings.crash.is_empty() {
        let _ = writeln!(
            out,
            "  lost inside crashed generations {}, lost outside them {} (of which refused {})",
            r.lost_inside_crashed, r.lost_outside, f.refused
        );
    }
    if report.settings.keep_alive {
        let _ = writeln!(
            out,
            "  kept connections closed by the server between requests, replaced: {}",
            r.reconnects
        );
    }
    let _ = writeln!(out, "{:<38}{:>10} {:>10} {:>10}", "", "p50", "p99", "max");
    row(out, "request latency", r.latency_us);
    let lowest = r.lowest_bucket_per_s.map_or_else(|| "-".into(), |rate| format!("{rate:.0}/s"));
    let _ = writeln!(out, "  throughput: {:.0}/s on average, lowest 50 ms bucket {lowest}", r.mean_per_s);
    for example in &r.failure_examples {
        let _ = writeln!(out, "  e.g. {example}");
    }
    out.push('\n');
}

fn verdict(out: &mut String, report: &Report) {
    let upgrades = format!(
        "{} of {} completed",
        report.upgrades_completed,
        count(report.upgrades_expected as u64, "upgrade", "upgrades")
    );
    let failed = if report.settings.crash.is_empty() {
        match report.requests.failed {
            0 => "no request failed".to_string(),
            n => count(n, "request", "requests") + " failed",
        }
    } else {
        crash_verdict(report)
    };
    let word = match report.result {
        "passed" => "PASSED",
        "interrupted" => "INTERRUPTED",
        _ => "FAILED",
    };
    let _ = writeln!(out, "{word}: {upgrades}, {failed}");
    let afresh = report.upgrades.iter().filter(|u| u.started_afresh()).count();
    if afresh > 0 {
        let generations = count(afresh as u64, "generation", "generations");
        let _ = writeln!(
            out,
            "{generations} found no owner after a crash and started afresh (not counted as upgrades)"
        );
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "the drill stopped early: {error}");
    }
    if let Some(error) = &report.chart_error {
        let _ = writeln!(out, "the chart is missing: {error}");
    }
}

/// The verdict's words on crashes: how many, how many rolled back, and what was lost.
fn crash_verdict(report: &Report) -> String {
    let r = &report.requests;
    let crashed = report.crashes.len() as u64;
    let rolled_back = report.crashes.iter().filter(|c| c.rolled_back_to.is_some()).count();
    let outside = match r.lost_outside {
        0 => "no request lost outside them".to_string(),
        n => count(n, "request", "requests") + " lost outside them",
    };
    format!(
        "{} crashed on purpose ({rolled_back} rolled back), {outside} ({} inside)",
        count(crashed, "generation", "generations"),
        r.lost_inside_crashed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_listed_as_in_a_sentence() {
        assert_eq!(generations(&[3]), "generation 3");
        assert_eq!(generations(&[3, 6]), "generations 3 and 6");
        assert_eq!(generations(&[2, 4, 6]), "generations 2, 4 and 6");
        assert_eq!(format!("{:?}", duration(250.0)), "250ms");
        assert_eq!(format!("{:?}", duration(2000.0)), "2s");
    }
}
