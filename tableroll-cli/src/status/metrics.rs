//! `tableroll status --format openmetrics`: the group as OpenMetrics text (the exposition
//! format 1.0.0, Content-Type `application/openmetrics-text; version=1.0.0; charset=utf-8`),
//! for node_exporter's textfile collector or a scrape. The owner comes from the directory
//! ([`tableroll::inspect::inspect`]), everything else from the journal.
//!
//! Every sample carries the label `dir` (the absolute coordination directory), so that one
//! collector can take several groups. A metric with no value (no live owner, no handoff in the
//! journal) is left out, its `# TYPE` line too. Counts over the journal are gauges, not
//! counters: the journal keeps its last 256 to 512 KiB, so a count falls when old lines rotate
//! out.

use std::fmt::Write as _;

use tableroll::inspect::{DirectoryStatus, JournalEntry, JournalRead, LockHeld};

/// One metric family: its name, type, unit (when the name ends in it) and help.
struct Family {
    name: &'static str,
    unit: Option<&'static str>,
    help: &'static str,
}

const OWNER_ALIVE: Family = Family {
    name: "tableroll_owner_alive",
    unit: None,
    help: "1 if the owner named in DIR/pid is alive (its upgrade socket is live), else 0.",
};
const OWNER_PID: Family = Family {
    name: "tableroll_owner_pid",
    unit: None,
    help: "The pid of the live owner (absent without one, or when its pid is not visible).",
};
const OWNER_GENERATION: Family = Family {
    name: "tableroll_owner_generation",
    unit: None,
    help: "The generation of the live owner, from its journal entries (absent if it has none).",
};
const UPGRADE_IN_PROGRESS: Family = Family {
    name: "tableroll_upgrade_in_progress",
    unit: None,
    help: "1 while a newcomer holds the lock on DIR/pid (an upgrade is in progress), else 0.",
};
const HANDOFFS: Family = Family {
    name: "tableroll_journal_handoffs",
    unit: None,
    help: "Handoffs in the journal, by result: ok (handed_over) or failed (handoff_failed). Falls when \
           the journal rotates.",
};
const ROLLBACKS: Family = Family {
    name: "tableroll_journal_rollbacks",
    unit: None,
    help: "Rollbacks in the journal (rolled_back). Falls when the journal rotates.",
};
const LAST_HANDOFF: Family = Family {
    name: "tableroll_last_handoff_seconds",
    unit: Some("seconds"),
    help: "How long the last handoff in the journal took, from the owner's view (handoff_ms).",
};
const LAST_HANDOFF_TIME: Family = Family {
    name: "tableroll_last_handoff_timestamp_seconds",
    unit: Some("seconds"),
    help: "When the last handoff in the journal completed, in seconds since the Unix epoch.",
};
const LAST_HANDOFF_DESCRIPTORS: Family = Family {
    name: "tableroll_last_handoff_descriptors",
    unit: None,
    help: "How many descriptors the last handoff in the journal passed to the new owner.",
};
const LAST_READY: Family = Family {
    name: "tableroll_last_ready_seconds",
    unit: Some("seconds"),
    help: "How long the last process to become the owner spent in ready() (ready_ms).",
};
const JOURNAL_ENTRIES: Family =
    Family { name: "tableroll_journal_entries", unit: None, help: "Entries read from the journal." };
const JOURNAL_SKIPPED: Family = Family {
    name: "tableroll_journal_skipped_lines",
    unit: None,
    help: "Lines of the journal that are not entries (damaged, or cut mid-write).",
};
const JOURNAL_OLDEST: Family = Family {
    name: "tableroll_journal_oldest_timestamp_seconds",
    unit: Some("seconds"),
    help: "When the oldest entry read from the journal was written: the counts cover the time since.",
};

/// The exposition for the group whose directory reads as `status` and journal as `journal`,
/// ending with `# EOF`.
pub fn exposition(status: &DirectoryStatus, journal: &JournalRead) -> String {
    let dir = format!("dir=\"{}\"", label_value(&status.dir.to_string_lossy()));
    let mut out = Exposition { text: String::new(), dir };
    let owner = &status.owner;
    out.gauge(&OWNER_ALIVE, &[("", Some(flag(owner.alive)))]);
    out.gauge(&OWNER_PID, &[("", owner.pid.filter(|_| owner.alive).map(f64::from))]);
    let generation = owner.id.as_deref().filter(|_| owner.alive).and_then(|id| generation_of(journal, id));
    out.gauge(&OWNER_GENERATION, &[("", generation.map(|g| g as f64))]);
    let in_progress = match status.lock.held {
        LockHeld::Yes => Some(1.0),
        LockHeld::No => Some(0.0),
        _ => None,
    };
    out.gauge(&UPGRADE_IN_PROGRESS, &[("", in_progress)]);
    let count = |event: &str| Some(journal.entries.iter().filter(|e| e.event == event).count() as f64);
    out.gauge(
        &HANDOFFS,
        &[("result=\"ok\"", count("handed_over")), ("result=\"failed\"", count("handoff_failed"))],
    );
    out.gauge(&ROLLBACKS, &[("", count("rolled_back"))]);
    let handoff = last(journal, "handed_over");
    out.gauge(&LAST_HANDOFF, &[("", handoff.and_then(|e| e.number("handoff_ms")).map(seconds))]);
    out.gauge(&LAST_HANDOFF_TIME, &[("", handoff.map(|e| e.ts))]);
    out.gauge(&LAST_HANDOFF_DESCRIPTORS, &[("", handoff.and_then(|e| e.number("descriptors")))]);
    let ready = last(journal, "committed").and_then(|e| e.number("ready_ms")).map(seconds);
    out.gauge(&LAST_READY, &[("", ready)]);
    out.gauge(&JOURNAL_ENTRIES, &[("", Some(journal.entries.len() as f64))]);
    out.gauge(&JOURNAL_SKIPPED, &[("", Some(journal.skipped as f64))]);
    out.gauge(&JOURNAL_OLDEST, &[("", journal.entries.first().map(|e| e.ts))]);
    out.text.push_str("# EOF\n");
    out.text
}

/// The exposition being written, and the `dir` label every sample carries.
struct Exposition {
    text: String,
    dir: String,
}

impl Exposition {
    /// Writes gauge `family` with one sample per `(labels, value)` that has a value; nothing
    /// if none has.
    fn gauge(&mut self, family: &Family, samples: &[(&str, Option<f64>)]) {
        if samples.iter().all(|(_, value)| value.is_none()) {
            return;
        }
        let name = family.name;
        let _ = writeln!(self.text, "# TYPE {name} gauge");
        if let Some(unit) = family.unit {
            let _ = writeln!(self.text, "# UNIT {name} {unit}");
        }
        let _ = writeln!(self.text, "# HELP {name} {}", family.help);
        for (labels, value) in samples {
            let Some(value) = value else { continue };
            let labels = if labels.is_empty() { self.dir.clone() } else { format!("{},{labels}", self.dir) };
            let _ = writeln!(self.text, "{name}{{{labels}}} {}", number(*value));
        }
    }
}

/// The generation of the last entry of member `id` that has one.
fn generation_of(journal: &JournalRead, id: &str) -> Option<u64> {
    journal.entries.iter().rev().filter(|e| e.id == id).find_map(|e| e.generation)
}

/// The last entry of `event`.
fn last<'a>(journal: &'a JournalRead, event: &str) -> Option<&'a JournalEntry> {
    journal.entries.iter().rev().find(|e| e.event == event)
}

/// A duration of the journal (milliseconds, to the microsecond) in seconds, rounded to the
/// microsecond: 0.922 ms is 0.000922, not 0.0009220000000000001.
fn seconds(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e6
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// A number as OpenMetrics writes it: `NaN`, `+Inf`, `-Inf`, or the shortest decimal form.
fn number(value: f64) -> String {
    match value {
        v if v.is_nan() => "NaN".to_owned(),
        v if v == f64::INFINITY => "+Inf".to_owned(),
        v if v == f64::NEG_INFINITY => "-Inf".to_owned(),
        v => format!("{v}"),
    }
}

/// `text` escaped for a label value: backslash, double quote and line feed.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_label_values_are_written_as_openmetrics_wants() {
        assert_eq!(number(seconds(0.922)), "0.000922");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.0015), "0.0015");
        assert_eq!(number(1_795_795_506.123_456), "1795795506.123456");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(label_value("/a \"b\"\\c\nd"), "/a \\\"b\\\"\\\\c\\nd");
    }
}
