//! One journal entry in words, on one line: when (UTC), who (id, generation, pid), what
//! happened and its fields as a sentence. `--history` and `--watch` print these.

use serde_json::Value;
use tableroll::inspect::JournalEntry;

use super::printable;

/// `entry` as one line: `2026-11-27T16:15:06.123Z  g2-… (generation 2, pid 41)  committed: …`.
pub fn line(entry: &JournalEntry) -> String {
    let who = match entry.generation {
        Some(generation) => format!("generation {generation}, pid {}", entry.pid),
        None => format!("pid {}", entry.pid),
    };
    format!(
        "{}  {} ({who})  {}: {}",
        utc_time(entry.ts),
        printable(&entry.id),
        printable(&entry.event),
        sentence(entry)
    )
}

/// What the event says, in words; the fields of an event this version does not know as
/// `name=value` pairs.
fn sentence(entry: &JournalEntry) -> String {
    let text = |name| text(entry, name);
    let ms = |name| ms(entry, name);
    match entry.event.as_str() {
        "joined" => match entry.fields.get("from") {
            Some(Value::String(from)) => {
                format!("received {} from {} in {}", descriptors(entry), printable(from), ms("join_ms"))
            }
            _ => format!("found no owner to take over from (joined in {})", ms("join_ms")),
        },
        "committed" => match entry.fields.get("previous") {
            Some(Value::String(previous)) => {
                format!(
                    "became the owner, taking over from {} (ready in {})",
                    printable(previous),
                    ms("ready_ms")
                )
            }
            _ => format!("became the owner, with no previous owner (ready in {})", ms("ready_ms")),
        },
        "ready_failed" => format!("did not become the owner: {} ({})", text("reason"), text("kind")),
        "handed_over" => format!(
            "handed {} over to {} (pid {}) in {}",
            descriptors(entry),
            text("new_owner"),
            count(entry, "newcomer_pid"),
            ms("handoff_ms")
        ),
        "handoff_failed" => format!(
            "a handoff to pid {} failed; still the owner: {} ({})",
            count(entry, "newcomer_pid"),
            text("reason"),
            text("kind")
        ),
        "on_probation" => {
            format!("{} is the owner; standing by on probation for {}", text("new_owner"), ms("window_ms"))
        }
        "rolled_back" => {
            format!("{} died on probation; the owner again after {}", text("failed_owner"), ms("took_ms"))
        }
        "stepped_down" => {
            let why = if entry.fields.get("after_probation") == Some(&Value::Bool(true)) {
                "the probation passed; "
            } else {
                ""
            };
            format!("{why}told to drain ({} is the owner)", text("new_owner"))
        }
        "stopped" => "the upgrader stopped".to_owned(),
        _ => pairs(entry),
    }
}

/// A field as text: a string as it is (control characters escaped), anything else as JSON, a
/// missing one as `?`.
fn text(entry: &JournalEntry, name: &str) -> String {
    match entry.fields.get(name) {
        Some(Value::String(text)) => printable(text),
        Some(Value::Null) | None => "?".to_owned(),
        Some(other) => printable(&other.to_string()),
    }
}

/// A count or pid field; `?` if it is missing or not a number.
fn count(entry: &JournalEntry, name: &str) -> String {
    entry.number(name).map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// The `descriptors` field with its noun: `1 descriptor`, `2 descriptors`, `? descriptors`.
fn descriptors(entry: &JournalEntry) -> String {
    match entry.number("descriptors") {
        Some(1.0) => "1 descriptor".to_owned(),
        _ => format!("{} descriptors", count(entry, "descriptors")),
    }
}

/// A duration field in milliseconds, with its unit; `? ms` if it is missing.
fn ms(entry: &JournalEntry, name: &str) -> String {
    format!("{} ms", count(entry, name))
}

/// Every field as `name=value`, in the order the reader keeps them.
fn pairs(entry: &JournalEntry) -> String {
    let pairs: Vec<String> =
        entry.fields.iter().map(|(name, value)| printable(&format!("{name}={value}"))).collect();
    pairs.join(" ")
}

/// `ts` (seconds since the Unix epoch) as an ISO 8601 UTC time with milliseconds; as the bare
/// number if it is not a time this can show (negative, or past the year 9999).
pub fn utc_time(ts: f64) -> String {
    if !(0.0..253_402_300_800.0).contains(&ts) {
        return format!("{ts}");
    }
    let millis = (ts * 1000.0).floor() as u64;
    let (secs, millis) = (millis / 1000, millis % 1000);
    let (days, secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days not before the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> JournalEntry {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(utc_time(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(utc_time(1_795_795_506.123_456), "2026-11-27T16:05:06.123Z");
        assert_eq!(utc_time(-1.5), "-1.5");
        assert_eq!(utc_time(f64::NAN), "NaN");
    }

    #[test]
    fn known_events_read_as_sentences() {
        let committed = entry(
            r#"{"ts":0,"event":"committed","id":"g2-1","pid":7,"generation":2,"previous":"g1-1","ready_ms":1.5}"#,
        );
        assert_eq!(
            line(&committed),
            "1970-01-01T00:00:00.000Z  g2-1 (generation 2, pid 7)  committed: became the owner, taking over \
             from g1-1 (ready in 1.5 ms)"
        );
        let handed = entry(
            r#"{"ts":0,"event":"handed_over","id":"a","pid":7,"new_owner":"b","newcomer_pid":8,"descriptors":2,"handoff_ms":3}"#,
        );
        assert!(
            line(&handed).ends_with("(pid 7)  handed_over: handed 2 descriptors over to b (pid 8) in 3 ms")
        );
    }

    #[test]
    fn odd_entries_are_shown_without_panicking() {
        let missing = entry(r#"{"ts":0,"event":"handed_over","id":"a","pid":1,"new_owner":{"x":1}}"#);
        assert!(line(&missing).ends_with("handed ? descriptors over to {\"x\":1} (pid ?) in ? ms"));
        let foreign = entry(
            "{\"ts\":0,\"event\":\"custom\\u001b\",\"id\":\"a\\n\",\"pid\":1,\"n\":2,\"s\":\"\\u001b\"}",
        );
        assert_eq!(
            line(&foreign),
            "1970-01-01T00:00:00.000Z  a\\n (pid 1)  custom\\u{1b}: n=2 s=\"\\u001b\""
        );
    }
}
