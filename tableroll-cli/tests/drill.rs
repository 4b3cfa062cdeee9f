//! `tableroll drill` end to end: real drills with real generations, judged by their JSON.
//! Nothing here measures time; every wait is bounded by [`util::LIMIT`] only to fail a hung
//! drill.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use serde_json::Value;
use util::{assert_cleaned_up, num, run, tableroll, wait_bounded, Run};

/// Runs a drill with `--json` and the given flags.
fn drill(flags: &[&str]) -> (Run, Value) {
    let mut args = vec!["drill", "--json", "--clients", "2"];
    args.extend_from_slice(flags);
    let run = run(&args);
    let report = run.json();
    (run, report)
}

/// Checks a drill that should have passed: exit 0, `upgrades` complete upgrades each with its
/// timings and `fds` descriptors received, every request answered.
fn assert_passed(run: &Run, report: &Value, upgrades: usize, fds: u64) {
    let context = run.describe();
    assert_eq!(run.code(), Some(0), "{context}");
    assert_eq!(report["result"], "passed", "{context}");
    let records = report["upgrades"].as_array().expect("upgrades");
    assert_eq!(records.len(), upgrades, "{context}");
    assert_eq!(num(report, &["upgrades_completed"]), upgrades as u64, "{context}");
    for record in records {
        assert_eq!(record["completed"], true, "{record}\n{context}");
        assert_eq!(record["inherited"], fds, "{record}\n{context}");
        for timing in
            ["construction_us", "ready_us", "spawn_to_ready_us", "spawn_to_old_notified_us", "old_drain_us"]
        {
            assert!(record[timing].is_u64(), "{timing} missing in {record}\n{context}");
        }
    }
    let sent = num(report, &["requests", "sent"]);
    assert!(sent > 0, "{context}");
    assert_eq!(sent, num(report, &["requests", "succeeded"]), "{context}");
    assert_eq!(num(report, &["requests", "failed"]), 0, "{context}");
    let generations = report["generations"].as_array().expect("generations");
    assert_eq!(generations.len(), upgrades + 1, "{context}");
    for generation in generations {
        assert_eq!(generation["exit_code"], 0, "{generation}\n{context}");
    }
    assert_cleaned_up(report, run);
}

fn sum(values: &Value) -> u64 {
    values.as_array().expect("an array").iter().map(|v| v.as_u64().expect("a count")).sum()
}

#[test]
fn a_short_drill_passes_and_accounts_for_every_request() {
    let (run, report) = drill(&["--upgrades", "3", "--interval", "200ms"]);
    assert_passed(&run, &report, 3, 1);
    assert_eq!(num(&report, &["settings", "upgrades"]), 3);
    for timing in ["construction_us", "ready_us", "spawn_to_ready_us", "spawn_to_old_notified_us"] {
        assert_eq!(num(&report, &["timings", timing, "n"]), 3, "{timing}");
    }
    assert_eq!(num(&report, &["throughput", "bucket_ms"]), 50);
    assert_eq!(sum(&report["throughput"]["ok"]), num(&report, &["requests", "succeeded"]));
    assert_eq!(sum(&report["throughput"]["failed"]), 0);
    // The generations between them answered every request.
    let served: u64 =
        report["generations"].as_array().unwrap().iter().map(|g| g["served"].as_u64().unwrap()).sum();
    assert_eq!(served, num(&report, &["requests", "succeeded"]), "{}", run.describe());
}

#[test]
fn a_unix_listener_is_handed_over_too() {
    let (run, report) = drill(&["--listener", "unix", "--upgrades", "2", "--interval", "200ms"]);
    assert_passed(&run, &report, 2, 1);
    assert_eq!(report["settings"]["listener"], "unix");
}

#[test]
fn fifty_extra_listeners_go_with_every_handoff() {
    let (run, report) = drill(&["--fds", "50", "--upgrades", "2", "--interval", "200ms"]);
    assert_passed(&run, &report, 2, 51);
}

#[test]
fn kept_alive_connections_survive_the_upgrades() {
    let (run, report) = drill(&["--keep-alive", "--upgrades", "3", "--interval", "200ms"]);
    assert_passed(&run, &report, 3, 1);
}

/// Runs a drill against a server broken in `mode`; checks that it failed, that every failure is
/// of `kind`, and that the accounting adds up.
fn assert_broken(mode: &str, kind: &str, extra: &[&str]) {
    let mut flags = vec!["--upgrades", "1", "--interval", "300ms", "--break-server", mode];
    flags.extend_from_slice(extra);
    let (run, report) = drill(&flags);
    let context = run.describe();
    assert_eq!(run.code(), Some(1), "{context}");
    assert_eq!(report["result"], "failed", "{context}");
    let failed = num(&report, &["requests", "failed"]);
    assert!(failed > 0, "{context}");
    assert_eq!(
        num(&report, &["requests", "failures", kind]),
        failed,
        "every failure should be {kind}\n{context}"
    );
    let sent = num(&report, &["requests", "sent"]);
    assert_eq!(sent, num(&report, &["requests", "succeeded"]) + failed, "{context}");
    assert_eq!(sum(&report["throughput"]["failed"]), failed, "{context}");
    // The server misbehaved, the upgrade itself went through.
    assert_eq!(num(&report, &["upgrades_completed"]), 1, "{context}");
    assert!(!report["requests"]["failure_examples"].as_array().unwrap().is_empty(), "{context}");
    assert_cleaned_up(&report, &run);
}

#[test]
fn connections_closed_without_an_answer_are_counted_as_closed() {
    assert_broken("drop-connections", "closed", &[]);
}

#[test]
fn reset_connections_are_counted_as_resets() {
    assert_broken("reset-connections", "reset", &[]);
}

#[test]
fn error_responses_are_counted_as_bad_responses() {
    assert_broken("bad-response", "bad_response", &[]);
}

#[test]
fn unanswered_requests_are_counted_as_timeouts() {
    assert_broken("stall", "timeout", &["--request-timeout", "100ms"]);
}

#[test]
fn the_chart_is_an_svg_with_a_line_and_the_summary_says_where_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("drill.svg");
    let svg_arg = svg.to_str().unwrap();
    let run = run(&["drill", "--upgrades", "1", "--interval", "200ms", "--clients", "1", "--svg", svg_arg]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let stdout = run.stdout();
    for line in [
        "tableroll drill: 1 upgrade of a TCP server under load from 1 client (",
        "upgrade timings (1 upgrade)",
        &format!("chart written to {svg_arg}\n"),
        "PASSED: 1 of 1 upgrade completed, no request failed",
    ] {
        assert!(stdout.contains(line), "{line:?} missing\n{}", run.describe());
    }
    let text = std::fs::read_to_string(&svg).expect("the chart was written");
    let start = text.trim_start();
    assert!(start.starts_with("<svg") || start.starts_with("<?xml"), "{}", &text[..text.len().min(200)]);
    assert!(text.contains("<path") || text.contains("<polyline"), "no line in the chart");
    assert!(text.trim_end().ends_with("</svg>"));
}

#[test]
fn a_chart_that_cannot_be_created_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("drill.svg");
    let is_dir = dir.path().to_path_buf();
    for (path, reason) in [(&missing, "does not exist"), (&is_dir, "cannot create the chart")] {
        let run = run(&["drill", "--upgrades", "1", "--svg", path.to_str().unwrap()]);
        let context = run.describe();
        assert_eq!(run.code(), Some(2), "{context}");
        assert!(run.stderr().contains("--svg"), "{context}");
        assert!(run.stderr().contains(reason), "{context}");
        // Refused before generation 0 was started: no step line, no verdict.
        assert!(!run.stderr().contains("generation 0"), "{context}");
        assert_eq!(run.stdout(), "", "{context}");
    }
    assert!(!missing.parent().unwrap().exists());
}

/// Reads the drill's stderr (taken from `child`) until a line starts with `prefix`; kills the
/// drill and fails with `missing` and what it printed if none comes within the limit.
fn wait_for_stderr_line(child: &mut Child, prefix: &'static str, missing: &str) {
    let (lines_tx, lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        stderr.lines().map_while(Result::ok).for_each(|line| drop(lines_tx.send(line)))
    });
    let mut seen = String::new();
    loop {
        match lines.recv_timeout(util::LIMIT) {
            Ok(line) if line.starts_with(prefix) => return,
            Ok(line) => seen.push_str(&(line + "\n")),
            Err(e) => {
                let _ = child.kill();
                panic!("{missing} ({e}); stderr so far:\n{seen}");
            }
        }
    }
}

#[test]
fn a_chart_lost_during_the_run_fails_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let charts = dir.path().join("charts");
    std::fs::create_dir(&charts).unwrap();
    let svg = charts.join("drill.svg");
    let mut child = tableroll()
        .args(["drill", "--upgrades", "2", "--interval", "1s", "--clients", "1"])
        .arg("--svg")
        .arg(&svg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once generation 0 serves, the drill has at least three one-second intervals to go (two
    // upgrades, then the last one's): the chart's directory is removed well before it ends.
    wait_for_stderr_line(&mut child, "generation 0", "generation 0 never served");
    assert!(svg.exists(), "the chart's file was not created before the drill started");
    std::fs::remove_dir_all(&charts).unwrap();
    let run = Run { args: vec!["drill (chart directory removed)".into()], output: wait_bounded(child) };
    let context = run.describe();
    assert_eq!(run.code(), Some(1), "{context}");
    assert!(!run.stdout().contains("PASSED"), "{context}");
    assert!(run.stdout().contains("FAILED: 2 of 2 upgrades completed"), "{context}");
    assert!(run.stdout().contains("the chart is missing: writing the chart to"), "{context}");
    assert!(!run.stdout().contains("chart written to"), "{context}");
}

#[test]
fn ctrl_c_stops_the_drill_and_cleans_up() {
    let mut child = tableroll()
        .args(["drill", "--json", "--clients", "2", "--upgrades", "1000", "--interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first upgrade's line on stderr: the drill is well under way.
    wait_for_stderr_line(&mut child, "upgrade 1/1000", "no first upgrade");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let output = wait_bounded(child);
    let run = Run { args: vec!["drill (interrupted)".into()], output };
    assert_eq!(run.code(), Some(130), "{}", run.describe());
    let report = run.json();
    assert_eq!(report["result"], "interrupted", "{}", run.describe());
    assert_cleaned_up(&report, &run);
}

#[test]
fn help_explains_the_drill_and_hides_the_internals() {
    let top = run(&["--help"]);
    assert_eq!(top.code(), Some(0));
    assert!(top.stdout().contains("drill"), "{}", top.describe());
    assert!(!top.stdout().contains("drill-server"), "{}", top.describe());
    let help = run(&["drill", "--help"]);
    assert_eq!(help.code(), Some(0));
    for flag in [
        "--upgrades",
        "--clients",
        "--listener",
        "--fds",
        "--interval",
        "--keep-alive",
        "--json",
        "--svg",
        "--crash",
        "--probation",
    ] {
        assert!(help.stdout().contains(flag), "{flag} missing\n{}", help.describe());
    }
    assert!(help.stdout().contains("What counts as a failed request"), "{}", help.describe());
    assert!(help.stdout().contains("lost inside a crashed generation"), "{}", help.describe());
    assert!(!help.stdout().contains("--break-server"), "{}", help.describe());
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in
        [&["drill", "--interval", "5"][..], &["drill", "--clients", "0"], &["drill", "--listener", "udp"]]
    {
        let run = run(args);
        assert_eq!(run.code(), Some(2), "{}", run.describe());
    }
}

/// Runs `tableroll ARGS`, which must be refused as a usage error naming `flag` and saying `why`.
fn assert_usage_error(args: &[&str], flag: &str, why: &str) {
    let run = run(args);
    let context = run.describe();
    assert_eq!(run.code(), Some(2), "{context}");
    assert!(run.stderr().contains(flag), "{flag} not named\n{context}");
    assert!(run.stderr().contains(why), "{why:?} not said\n{context}");
    assert_eq!(run.stdout(), "", "{context}");
}

#[test]
fn a_drill_needs_at_least_one_upgrade() {
    assert_usage_error(&["drill", "--upgrades", "0"], "--upgrades", "must be at least 1");
}

#[test]
fn negative_intervals_are_refused_with_a_reason() {
    for args in [&["drill", "--interval=-1s"][..], &["drill", "--interval", "-1s"]] {
        assert_usage_error(args, "--interval", "negative durations are not accepted");
    }
    // A flag where the interval should be is not taken for a duration silently.
    assert_usage_error(&["drill", "--interval", "--json"], "--interval", "not a duration");
}

#[test]
fn generation_0_cannot_crash() {
    assert_usage_error(&["drill", "--crash", "0"], "--crash", "generation 0 cannot crash");
    assert_usage_error(&["drill", "--crash", "2,0"], "--crash", "generation 0 cannot crash");
}

#[test]
fn a_crash_beyond_the_last_generation_is_refused() {
    assert_usage_error(
        &["drill", "--upgrades", "3", "--crash", "2,4"],
        "--crash 4",
        "there is no generation 4 (--upgrades 3 starts generations 0 to 3)",
    );
}

/// The report's entry `key` as an array.
fn array<'a>(report: &'a Value, key: &str) -> &'a Vec<Value> {
    report[key].as_array().unwrap_or_else(|| panic!("{key} is not an array in {report:#}"))
}

/// Checks what any drill with crashes must report: the generations in `crashed` (and no other)
/// crashed, each by SIGKILL after reporting its crash, with no more requests put down to it
/// than the connections it held; the failures inside and outside add up; nothing is left
/// behind.
fn assert_crashes_accounted(run: &Run, report: &Value, crashed: &[u64]) {
    let context = run.describe();
    let crashes = array(report, "crashes");
    let numbers: Vec<u64> = crashes.iter().map(|c| c["generation"].as_u64().unwrap()).collect();
    assert_eq!(numbers, crashed, "{context}");
    for crash in crashes {
        let lost = crash["lost_inside"].as_u64().unwrap();
        assert!(lost <= crash["open_connections"].as_u64().unwrap(), "{crash}\n{context}");
        let line = format!("generation {} (pid {}) crashed on purpose", crash["generation"], crash["pid"]);
        assert!(run.stderr().contains(&line), "{line:?} missing\n{context}");
    }
    for generation in array(report, "generations") {
        let planned = crashed.contains(&generation["generation"].as_u64().unwrap());
        assert_eq!(generation["crashed"], planned, "{generation}\n{context}");
        match planned {
            true => assert_eq!(generation["signal"], 9, "{generation}\n{context}"),
            false => assert_eq!(generation["exit_code"], 0, "{generation}\n{context}"),
        }
    }
    let inside: u64 = crashes.iter().map(|c| c["lost_inside"].as_u64().unwrap()).sum();
    assert_eq!(num(report, &["requests", "lost_inside_crashed"]), inside, "{context}");
    let failed = num(report, &["requests", "failed"]);
    assert_eq!(failed, inside + num(report, &["requests", "lost_outside"]), "{context}");
    // Refused connections are never put down to a crash.
    assert!(num(report, &["requests", "lost_outside"]) >= num(report, &["requests", "failures", "refused"]));
    let sent = num(report, &["requests", "sent"]);
    assert_eq!(sent, num(report, &["requests", "succeeded"]) + failed, "{context}");
    assert_cleaned_up(report, run);
}

#[test]
fn without_probation_a_crash_loses_requests_outside_it_and_fails_the_drill() {
    let (run, report) = drill(&["--upgrades", "3", "--interval", "300ms", "--crash", "2"]);
    let context = run.describe();
    assert_crashes_accounted(&run, &report, &[2]);
    assert!(array(&report, "rollbacks").is_empty(), "{context}");
    assert_eq!(report["crashes"][0]["rolled_back_to"], Value::Null, "{context}");
    // Nobody held the listener from the crash until generation 3 bound it afresh: refused.
    assert!(num(&report, &["requests", "failures", "refused"]) > 0, "{context}");
    assert!(num(&report, &["requests", "lost_outside"]) > 0, "{context}");
    assert_eq!(report["upgrades"][2]["took_over_from"], Value::Null, "{context}");
    assert_eq!(run.code(), Some(1), "{context}");
    assert_eq!(report["result"], "failed", "{context}");
    assert_eq!(report["error"], Value::Null, "the drill itself ran to its end\n{context}");
    // Of the three upgrades only the first was a handoff to complete: the second was to the
    // generation that crashed, and the third found no owner and started afresh.
    assert_eq!(num(&report, &["upgrades_expected"]), 1, "{context}");
    assert_eq!(num(&report, &["upgrades_completed"]), 1, "{context}");
}

#[test]
fn with_probation_each_crash_is_rolled_back_and_nothing_else_is_lost() {
    // Generation 4 is the last: after its crash, generation 3 stays the owner to the end.
    let flags = ["--upgrades", "4", "--interval", "300ms", "--crash", "2,4", "--probation", "1s"];
    let (run, report) = drill(&flags);
    let context = run.describe();
    assert_crashes_accounted(&run, &report, &[2, 4]);
    let rollbacks = array(&report, "rollbacks");
    assert_eq!(rollbacks.len(), 2, "{context}");
    for (rollback, (owner, failed)) in rollbacks.iter().zip([(1, 2), (3, 4)]) {
        assert_eq!(rollback["generation"], owner, "{rollback}\n{context}");
        assert_eq!(rollback["failed_generation"], failed, "{rollback}\n{context}");
        assert_eq!(rollback["failed_owner"], format!("gen-{failed}"), "{rollback}\n{context}");
        assert!(rollback["crash_to_rollback_us"].is_u64(), "{rollback}\n{context}");
    }
    for crash in array(&report, "crashes") {
        assert!(crash["rolled_back_to"].is_u64(), "{crash}\n{context}");
        assert!(crash["crash_to_rollback_us"].is_u64(), "{crash}\n{context}");
    }
    assert_eq!(num(&report, &["requests", "failures", "refused"]), 0, "{context}");
    assert_eq!(num(&report, &["requests", "lost_outside"]), 0, "{context}");
    // Generation 3 took over from generation 1, the owner again after generation 2 crashed.
    assert_eq!(report["upgrades"][2]["took_over_from"], 1, "{context}");
    assert_eq!(num(&report, &["upgrades_expected"]), 2, "{context}");
    assert_eq!(num(&report, &["upgrades_completed"]), 2, "{context}");
    assert_eq!(run.code(), Some(0), "{context}");
    assert_eq!(report["result"], "passed", "{context}");
}

#[test]
fn a_rollback_shows_in_the_summary_and_on_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("drill.svg");
    let flags = ["drill", "--upgrades", "2", "--interval", "300ms", "--clients", "2", "--crash", "2"];
    let run = run(&[&flags[..], &["--probation", "1s", "--svg", svg.to_str().unwrap()]].concat());
    let context = run.describe();
    assert_eq!(run.code(), Some(0), "{context}");
    let stdout = run.stdout();
    for line in [
        "generation 2 made to crash (SIGKILL, no drain) 75ms after ready()\n",
        "every generation on probation for 1s after it handed over\n",
        "crashed generations (1 of 1)\n",
        "; generation 1 owner again ",
        "rollbacks: 1 (the library's measure: p50 ",
        "  lost inside crashed generations ",
        "PASSED: 1 of 1 upgrade completed, 1 generation crashed on purpose (1 rolled back), no request lost outside them (",
    ] {
        assert!(stdout.contains(line), "{line:?} missing\n{context}");
    }
    assert!(run.stderr().contains("  generation 1 is the owner again after gen-2 died, "), "{context}");
    // The chart marks the crash (x2) and the rollback to generation 1 (r1), with their legend.
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    let texts: Vec<&str> = chart.lines().map(str::trim).collect();
    for text in ["x2", "r1", "a generation crashed (x)", "rollback: owner again (r)"] {
        assert!(texts.contains(&text), "{text:?} not on the chart\n{context}");
    }
}
