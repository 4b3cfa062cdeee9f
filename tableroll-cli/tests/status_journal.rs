//! `tableroll status --history`, `--watch` and `--format openmetrics` end to end: the real
//! binary reading the journals of real groups, made of `tableroll run` instances (generations,
//! a rollback) or of library `Upgrader`s in this process (a refused, failed handoff). The
//! OpenMetrics output is read by a real parser (the `openmetrics-parser` crate). Nothing here
//! sleeps or measures time: `--watch` is waited on line by line, each wait bounded by
//! [`TIMEOUT`] only to fail a hung run.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use openmetrics_parser::{openmetrics::parse_openmetrics, OpenMetricsType, OpenMetricsValue};
use rustix::process::Signal;
use serde_json::Value;
use tableroll::{PeerPolicy, Upgrader};
use tableroll_testkit::events::{Events, Missed};
use tableroll_testkit::process::Process;
use tableroll_testkit::TIMEOUT;
use util::instance::Instance;
use util::{kill_program, run, Run};

fn status(dir: &Path, flags: &[&str]) -> Run {
    run(&[&["status", "--dir", dir.to_str().expect("a UTF-8 temp path")], flags].concat())
}

/// A sample: its labels other than `dir`, and its value.
type Samples = Vec<(BTreeMap<String, String>, f64)>;

/// A metric family as parsed: type, unit, samples.
struct Family {
    kind: OpenMetricsType,
    unit: String,
    samples: Samples,
}

/// `status --format openmetrics` for `dir`, parsed; every sample's `dir` label checked.
fn metrics(dir: &Path) -> BTreeMap<String, Family> {
    let run = status(dir, &["--format", "openmetrics"]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let text = run.stdout();
    let exposition = parse_openmetrics(&text).unwrap_or_else(|e| panic!("not OpenMetrics: {e:?}\n{text}"));
    let want_dir = dir.canonicalize().unwrap();
    let mut families = BTreeMap::new();
    for (name, family) in exposition.families {
        let mut samples = Vec::new();
        for sample in family.iter_samples() {
            let labelset = sample.get_labelset().unwrap();
            let mut labels: BTreeMap<String, String> =
                labelset.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
            assert_eq!(labels.remove("dir").as_deref(), want_dir.to_str(), "{name}\n{text}");
            let value = match &sample.value {
                OpenMetricsValue::Gauge(n) => n.as_f64(),
                other => panic!("{name} is not a gauge: {other:?}\n{text}"),
            };
            samples.push((labels, value));
        }
        families.insert(name, Family { kind: family.family_type, unit: family.unit.clone(), samples });
    }
    families
}

/// The one unlabelled value of gauge `name`; `None` if the family is absent.
fn gauge(families: &BTreeMap<String, Family>, name: &str) -> Option<f64> {
    let family = families.get(name)?;
    assert_eq!(family.kind, OpenMetricsType::Gauge, "{name}");
    assert_eq!(family.samples.len(), 1, "{name}");
    assert!(family.samples[0].0.is_empty(), "{name}");
    Some(family.samples[0].1)
}

/// `tableroll_journal_handoffs` as (ok, failed).
fn handoffs(families: &BTreeMap<String, Family>) -> (f64, f64) {
    let family = &families["tableroll_journal_handoffs"];
    let by_result = |result: &str| {
        let found = family
            .samples
            .iter()
            .find(|(labels, _)| labels.get("result").map(String::as_str) == Some(result));
        found.unwrap_or_else(|| panic!("no result={result}")).1
    };
    assert_eq!(family.samples.len(), 2);
    (by_result("ok"), by_result("failed"))
}

/// `status --history N --json` for `dir`: the entries.
fn history_json(dir: &Path, count: &str) -> Vec<Value> {
    let run = status(dir, &["--history", count, "--json"]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let report = run.json();
    assert_eq!(report["skipped"], 0, "{report:#}");
    report["entries"].as_array().expect("entries").clone()
}

/// The `(id, event)` of each entry.
fn events(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["event"].as_str().unwrap().to_owned()))
        .collect()
}

/// The events of member `id`, in order.
fn events_of(entries: &[Value], id: &str) -> Vec<String> {
    events(entries).into_iter().filter(|(of, _)| of == id).map(|(_, event)| event).collect()
}

#[test]
fn history_and_metrics_of_run_generations_with_a_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut first =
        Instance::start("gen-1", dir, &["--listen", "web=tcp:127.0.0.1:0", "--probation", "600s"], &[]);
    let addr = first.address("web");
    let first_id = first.log("owner")["id"].as_str().unwrap().to_owned();
    let mut second = Instance::start("gen-2", dir, &["--listen", &format!("web=tcp:{addr}")], &[]);
    let second_owner = second.log("owner");
    let second_id = second_owner["id"].as_str().unwrap().to_owned();
    kill_program(&second_owner);
    assert_eq!(second.wait_exit(), 128 + 9);
    // The journal line is written before the supervisor hears of the rollback.
    first.log("rolled_back");

    let entries = history_json(dir, "100");
    assert_eq!(
        events_of(&entries, &first_id),
        ["joined", "committed", "handed_over", "on_probation", "rolled_back"],
        "{entries:#?}"
    );
    assert_eq!(events_of(&entries, &second_id)[..2], ["joined", "committed"], "{entries:#?}");
    let of = |id: &str, event: &str| {
        entries
            .iter()
            .find(|e| e["id"] == id && e["event"] == event)
            .unwrap_or_else(|| panic!("{id} {event}"))
    };
    assert_eq!(of(&first_id, "joined")["generation"], 1);
    assert_eq!(of(&first_id, "joined")["pid"], first.pid());
    assert_eq!(of(&second_id, "committed")["generation"], 2);
    assert_eq!(of(&second_id, "committed")["previous"], first_id.as_str());
    assert_eq!(of(&first_id, "handed_over")["descriptors"], 1);
    assert_eq!(of(&first_id, "rolled_back")["failed_owner"], second_id.as_str());

    // The last two in words: the rollback, said as one, and the second's stop (in either
    // order: two processes wrote them).
    let text = status(dir, &["--history", "2"]);
    assert_eq!(text.code(), Some(0), "{}", text.describe());
    let stdout = text.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text.describe());
    let rollback = format!(
        "{first_id} (generation 1, pid {})  rolled_back: {second_id} died on probation; the owner again after ",
        first.pid()
    );
    assert!(lines.iter().any(|line| line.contains(&rollback)), "{}", text.describe());
    assert!(
        lines.iter().any(|line| line.contains(&format!("{second_id} (generation 2"))),
        "{}",
        text.describe()
    );
    let none_asked = status(dir, &["--history", "0"]);
    assert_eq!(
        (none_asked.code(), none_asked.stdout()),
        (Some(0), String::new()),
        "{}",
        none_asked.describe()
    );
    let default = status(dir, &["--history"]);
    assert_eq!(default.stdout().lines().count(), entries.len().min(20), "{}", default.describe());

    let families = metrics(dir);
    assert_eq!(gauge(&families, "tableroll_owner_alive"), Some(1.0));
    assert_eq!(gauge(&families, "tableroll_owner_pid"), Some(f64::from(first.pid())));
    assert_eq!(gauge(&families, "tableroll_owner_generation"), Some(1.0));
    assert_eq!(gauge(&families, "tableroll_upgrade_in_progress"), Some(0.0));
    assert_eq!(handoffs(&families), (1.0, 0.0));
    assert_eq!(gauge(&families, "tableroll_journal_rollbacks"), Some(1.0));
    assert_eq!(gauge(&families, "tableroll_last_handoff_descriptors"), Some(1.0));
    let handoff_ms = of(&first_id, "handed_over")["handoff_ms"].as_f64().unwrap();
    assert_eq!(gauge(&families, "tableroll_last_handoff_seconds"), Some((handoff_ms * 1e3).round() / 1e6));
    assert_eq!(families["tableroll_last_handoff_seconds"].unit, "seconds");
    let ready_ms = of(&second_id, "committed")["ready_ms"].as_f64().unwrap();
    assert_eq!(gauge(&families, "tableroll_last_ready_seconds"), Some((ready_ms * 1e3).round() / 1e6));
    assert_eq!(gauge(&families, "tableroll_journal_entries"), Some(entries.len() as f64));
    assert_eq!(gauge(&families, "tableroll_journal_skipped_lines"), Some(0.0));
    assert_eq!(gauge(&families, "tableroll_journal_oldest_timestamp_seconds"), entries[0]["ts"].as_f64());
}

/// Builds a member of the group in `dir` on a thread of its own, as a separate process would
/// be; its outcome.
fn build(builder: tableroll::Builder) -> tableroll::Result<Upgrader> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(builder.build());
    });
    rx.recv_timeout(TIMEOUT).expect("built in time")
}

fn member(dir: &Path, id: &str, generation: u64) -> tableroll::Builder {
    Upgrader::builder(dir).id(id).generation(generation).connect_timeout(TIMEOUT)
}

#[test]
fn a_refused_handoff_counts_as_failed_and_reads_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let me = std::process::id();
    // An owner that admits only another user: the next process is refused, and it stays the
    // owner.
    let stranger = rustix::process::geteuid().as_raw().wrapping_add(1);
    let strict = build(member(dir, "strict-1", 1).peer_policy(PeerPolicy::Uids(vec![stranger]))).unwrap();
    strict.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    strict.ready().unwrap();
    let refused = build(member(dir, "refused-2", 2));
    assert!(refused.is_err(), "the newcomer was not refused");
    drop(refused);
    let families = metrics(dir);
    assert_eq!(handoffs(&families), (0.0, 1.0));
    assert_eq!(gauge(&families, "tableroll_owner_generation"), Some(1.0));
    assert_eq!(gauge(&families, "tableroll_last_handoff_seconds"), None, "no handoff happened");
    assert!(!families.contains_key("tableroll_last_handoff_descriptors"));

    let entries = history_json(dir, "20");
    let failed = entries.iter().find(|e| e["event"] == "handoff_failed").expect("a handoff_failed entry");
    assert_eq!(
        (failed["id"].as_str(), failed["newcomer_pid"].as_u64()),
        (Some("strict-1"), Some(u64::from(me)))
    );
    assert_eq!(failed["kind"], "PeerRefused");
    let text = status(dir, &["--history"]);
    let line = text.stdout().lines().find(|l| l.contains("handoff_failed")).map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("no handoff_failed line\n{}", text.describe()));
    assert!(
        line.contains(&format!("strict-1 (generation 1, pid {me})  handoff_failed: a handoff to pid {me} failed; still the owner: ")),
        "{line}"
    );
    assert!(line.ends_with("(PeerRefused)"), "{line}");

    // Then a handoff that works, from an owner that admits its own user.
    drop(strict);
    let open = build(member(dir, "open-3", 3)).unwrap();
    open.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    open.fds().listen_tcp("api", "127.0.0.1:0").unwrap();
    open.ready().unwrap();
    let next = build(member(dir, "next-4", 4)).unwrap();
    next.ready().unwrap();
    assert!(open.upgrade_complete().wait_timeout(TIMEOUT), "the old owner was not told");
    let families = metrics(dir);
    assert_eq!(handoffs(&families), (1.0, 1.0));
    assert_eq!(gauge(&families, "tableroll_owner_generation"), Some(4.0));
    assert_eq!(gauge(&families, "tableroll_owner_pid"), Some(f64::from(me)));
    assert_eq!(gauge(&families, "tableroll_last_handoff_descriptors"), Some(2.0));
    assert_eq!(gauge(&families, "tableroll_journal_rollbacks"), Some(0.0));
}

/// `tableroll status FLAGS --watch` running, its stdout lines to wait on.
struct Watch {
    process: Process,
    lines: Events<String>,
}

impl Watch {
    /// Starts it and waits until it follows the journal.
    fn start(dir: &Path, flags: &[&str]) -> Watch {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tableroll"));
        cmd.args(["status", "--watch", "--dir"]).arg(dir).args(flags);
        let mut process = Process::spawn(&mut cmd);
        let (tx, lines) = Events::channel();
        process.read_stdout(move |at, line| tx.send((at, line)).is_ok());
        if !process.wait_for_stderr("interrupt to stop", TIMEOUT) {
            process.fail("did not start following the journal");
        }
        Watch { process, lines }
    }

    /// The next line (in the order printed) for which `wanted` holds.
    fn line(&mut self, what: &str, wanted: impl Fn(&String) -> bool) -> String {
        match self.lines.wait(Instant::now() + TIMEOUT, wanted, |_| false) {
            Ok((_, line)) => line,
            Err(Missed::TimedOut | Missed::Ended | Missed::Stopped(..)) => {
                self.process.fail(&format!("no {what}"))
            }
        }
    }

    /// The next JSON line with `event` of member `id`.
    fn entry(&mut self, id: &str, event: &str) -> Value {
        let line = self.line(&format!("{event} of {id}"), |line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| v["id"] == id && v["event"] == event)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// Sends `signal`; the exit code.
    fn stop(mut self, signal: Signal) -> (Option<i32>, Vec<String>) {
        util::signal(self.process.pid(), signal);
        let code = self.process.wait().code();
        (code, self.process.stdout_lines())
    }
}

#[test]
fn watch_prints_each_event_of_an_upgrade_as_it_is_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = build(member(dir, "w-1", 1)).unwrap();
    first.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    first.ready().unwrap();

    // JSON lines, after the last one of the journal.
    let mut json = Watch::start(dir, &["--json", "--history", "1"]);
    let history = json.entry("w-1", "committed");
    assert_eq!(history["generation"], 1);
    let second = build(member(dir, "w-2", 2)).unwrap();
    assert_eq!(json.entry("w-2", "joined")["from"], "w-1");
    second.ready().unwrap();
    assert!(first.upgrade_complete().wait_timeout(TIMEOUT));
    assert_eq!(json.entry("w-1", "handed_over")["new_owner"], "w-2");
    assert_eq!(json.entry("w-2", "committed")["previous"], "w-1");
    json.entry("w-1", "stepped_down");

    // Words, from now on; interrupted as by Ctrl-C.
    let mut text = Watch::start(dir, &[]);
    drop(first);
    text.line("stopped of w-1", |line| {
        line.contains("w-1 (generation 1, pid ") && line.ends_with("stopped: the upgrader stopped")
    });
    let (json_code, json_lines) = json.stop(Signal::TERM);
    assert_eq!(json_code, Some(0), "{json_lines:?}");
    // The history's line was printed once, though the follower had started before it.
    let printed: Vec<Value> =
        json_lines.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(events(&printed).iter().filter(|(id, event)| id == "w-1" && event == "committed").count(), 1);
    let third = build(member(dir, "w-3", 3)).unwrap();
    third.ready().unwrap();
    text.line("committed of w-3", |line| {
        line.contains("w-3 (generation 3, pid ")
            && line.contains("committed: became the owner, taking over from w-2")
    });
    let (text_code, text_lines) = text.stop(Signal::INT);
    assert_eq!(text_code, Some(0), "{text_lines:?}");
    assert!(!text_lines.iter().any(|l| l.contains("w-1") && l.contains("committed")), "{text_lines:?}");
}

#[test]
fn watch_follows_the_journal_across_its_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A full journal (the cap is 256 KiB): the next member to write moves it to journal.1.
    let filler = "{\"ts\":0,\"event\":\"filler\",\"id\":\"test\",\"pid\":1}\n";
    std::fs::write(dir.join("journal"), filler.repeat(256 * 1024 / filler.len() + 1)).unwrap();
    let mut watch = Watch::start(dir, &["--json"]);
    let owner = build(member(dir, "r-1", 1)).unwrap();
    owner.ready().unwrap();
    watch.entry("r-1", "joined");
    watch.entry("r-1", "committed");
    let rotated = std::fs::read_to_string(dir.join("journal.1")).expect("the journal was rotated");
    assert!(rotated.lines().all(|line| line == filler.trim_end()), "journal.1 holds the filler only");
    let (code, lines) = watch.stop(Signal::TERM);
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(!lines.iter().any(|line| line.contains("filler")), "{lines:?}");
}

#[test]
fn watch_fails_when_the_directory_goes_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group");
    std::fs::create_dir(&dir).unwrap();
    let mut watch = Watch::start(&dir, &[]);
    std::fs::remove_dir(&dir).unwrap();
    if !watch.process.wait_for_stderr("was removed or moved", TIMEOUT) {
        watch.process.fail("did not notice the directory going");
    }
    assert_eq!(watch.process.wait().code(), Some(2), "{}", watch.process.diagnostics());
}

#[test]
fn watch_prints_what_was_written_just_before_the_directory_went() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("journal"), b"").unwrap();
    let mut watch = Watch::start(&dir, &["--json"]);
    // Paused, it sees the line and the removal in one read of its events.
    let pid = watch.process.pid();
    util::signal(pid, Signal::STOP);
    util::wait_stopped(pid);
    let line = "{\"ts\":1,\"event\":\"joined\",\"id\":\"last\",\"pid\":1}\n";
    std::fs::write(dir.join("journal"), line).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    util::signal(pid, Signal::CONT);
    watch.entry("last", "joined");
    if !watch.process.wait_for_stderr("was removed or moved", TIMEOUT) {
        watch.process.fail("did not notice the directory going");
    }
    assert_eq!(watch.process.wait().code(), Some(2), "{}", watch.process.diagnostics());
}

#[test]
fn a_damaged_or_missing_journal_and_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let none = status(dir, &["--history"]);
    assert_eq!(none.code(), Some(0), "{}", none.describe());
    assert!(none.stdout().starts_with("no events: there is no journal "), "{}", none.describe());
    assert_eq!(history_json(dir, "5"), Vec::<Value>::new());
    let families = metrics(dir);
    assert_eq!(gauge(&families, "tableroll_owner_alive"), Some(0.0));
    assert_eq!(gauge(&families, "tableroll_owner_pid"), None);
    assert_eq!(gauge(&families, "tableroll_owner_generation"), None);
    assert_eq!(handoffs(&families), (0.0, 0.0));
    assert_eq!(gauge(&families, "tableroll_journal_entries"), Some(0.0));
    assert_eq!(gauge(&families, "tableroll_journal_oldest_timestamp_seconds"), None);

    let line =
        r#"{"ts":1795795506.5,"event":"committed","id":"x\u001b[2J","pid":7,"previous":null,"ready_ms":2}"#;
    std::fs::write(dir.join("journal"), format!("\u{0}\u{1}garbage\n{line}\n{{\"event\":\"no id\"}}\n"))
        .unwrap();
    let damaged = status(dir, &["--history"]);
    assert_eq!(damaged.code(), Some(0), "{}", damaged.describe());
    assert_eq!(
        damaged.stdout(),
        "2026-11-27T16:05:06.500Z  x\\u{1b}[2J (pid 7)  committed: became the owner, with no previous owner \
         (ready in 2 ms)\n(2 lines of the journal are not events (damaged, or cut mid-write) and were skipped)\n",
        "{}",
        damaged.describe()
    );
    // No entry asked for: the damage is still said.
    let none_asked = status(dir, &["--history", "0"]);
    assert_eq!(none_asked.code(), Some(0), "{}", none_asked.describe());
    assert!(none_asked.stdout().starts_with("(2 lines of the journal"), "{}", none_asked.describe());
    assert_eq!(none_asked.stdout().lines().count(), 1, "{}", none_asked.describe());
    // A relative DIR is shown absolute, as the plain status shows it.
    let relative = util::run_in(
        dir.parent().unwrap(),
        &["status", "--history", "--json", "--dir", dir.file_name().unwrap().to_str().unwrap()],
    );
    assert_eq!(relative.json()["dir"], dir.to_str().unwrap(), "{}", relative.describe());
    assert_eq!(relative.json()["skipped"], 2, "{}", relative.describe());
    let families = metrics(dir);
    assert_eq!(gauge(&families, "tableroll_journal_skipped_lines"), Some(2.0));
    assert_eq!(gauge(&families, "tableroll_last_ready_seconds"), Some(0.002));

    let missing = dir.join("never-created");
    for flags in [&["--history"][..], &["--format", "openmetrics"], &["--watch"], &["--history", "--json"]] {
        let run = status(&missing, flags);
        assert_eq!(run.code(), Some(2), "{}", run.describe());
        assert!(run.stderr().contains("never-created"), "{}", run.describe());
        assert!(run.stdout().is_empty(), "{}", run.describe());
    }
    let both = status(dir, &["--format", "openmetrics", "--history"]);
    assert_eq!(both.code(), Some(2), "{}", both.describe());
    assert!(both.stderr().contains("goes with neither --history nor --watch"), "{}", both.describe());
}

#[test]
fn a_journal_that_is_no_regular_file_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let journal = dir.join("journal");
    for odd in ["a named pipe nobody writes", "a directory", "a symlink"] {
        match odd {
            "a named pipe nobody writes" => rustix::fs::mknodat(
                rustix::fs::CWD,
                &journal,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap(),
            "a directory" => std::fs::create_dir(&journal).unwrap(),
            _ => {
                std::fs::write(dir.join("elsewhere"), b"").unwrap();
                std::os::unix::fs::symlink(dir.join("elsewhere"), &journal).unwrap();
            }
        }
        // Each run is bounded: a reader blocked on the FIFO would fail the test, not hang it.
        for flags in [&["--history"][..], &["--format", "openmetrics"], &["--watch"]] {
            let run = status(dir, flags);
            assert_eq!(run.code(), Some(2), "{odd}: {}", run.describe());
            assert!(run.stderr().contains("reading the journal"), "{odd}: {}", run.describe());
        }
        match odd {
            "a directory" => std::fs::remove_dir(&journal).unwrap(),
            _ => std::fs::remove_file(&journal).unwrap(),
        }
    }
}

#[test]
fn help_names_every_metric_and_the_exit_statuses() {
    let help = run(&["status", "--help"]);
    assert_eq!(help.code(), Some(0), "{}", help.describe());
    let text = help.stdout();
    for needle in [
        "--history",
        "--watch",
        "--format",
        "openmetrics",
        "tableroll_owner_alive",
        "tableroll_owner_pid",
        "tableroll_owner_generation",
        "tableroll_upgrade_in_progress",
        "tableroll_journal_handoffs",
        "tableroll_journal_rollbacks",
        "tableroll_last_handoff_seconds",
        "tableroll_last_handoff_timestamp_seconds",
        "tableroll_last_handoff_descriptors",
        "tableroll_last_ready_seconds",
        "tableroll_journal_entries",
        "tableroll_journal_skipped_lines",
        "tableroll_journal_oldest_timestamp_seconds",
        "SIGINT",
    ] {
        assert!(text.contains(needle), "{needle:?} missing\n{}", help.describe());
    }
}
