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
        std::time::Duration::from_secs_f64(s.interval_ms / 1e3),
        report.duration_ms / 1e3
    );
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
    row(out, "spawn to old generation notified", t.spawn_to_old_notified_us);
    row(out, "old generation notice to exit", t.old_drain_us);
    out.push('\n');
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
        count(report.settings.upgrades, "upgrade", "upgrades")
    );
    let failed = match report.requests.failed {
        0 => "no request failed".to_string(),
        n => count(n, "request", "requests") + " failed",
    };
    let word = match report.result {
        "passed" => "PASSED",
        "interrupted" => "INTERRUPTED",
        _ => "FAILED",
    };
    let _ = writeln!(out, "{word}: {upgrades}, {failed}");
    if let Some(error) = &report.error {
        let _ = writeln!(out, "the drill stopped early: {error}");
    }
    if let Some(error) = &report.chart_error {
        let _ = writeln!(out, "the chart is missing: {error}");
    }
}
