//! What this process writes to the group's journal: one JSON object a line per event of its
//! life in the group (see [`inspect::read_journal`](crate::inspect::read_journal) for the reader, and
//! `coordination::journal_file` for how lines are appended and capped).
//!
//! Every line has `ts` (seconds since the Unix epoch, with microseconds), `event`, `id`, `pid`
//! and, when the process has one ([`Builder::generation`](crate::Builder::generation)),
//! `generation`; then the event's own fields, in milliseconds where they are durations. The
//! events, when each is written and its fields are listed once, for readers, on
//! [`JournalEntry`](crate::inspect::JournalEntry).
//!
//! Writing never affects a handoff: a journal that cannot be written is left alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::coordination::{Directory, JournalFile};
use crate::error::Error;

/// This process's voice in the journal.
#[derive(Debug)]
pub(crate) struct Journal {
    file: JournalFile,
    id: String,
    generation: Option<u64>,
}

impl Journal {
    pub(crate) fn new(dir: &Directory, id: &str, generation: Option<u64>) -> Arc<Journal> {
        Arc::new(Journal { file: JournalFile::new(dir.path()), id: id.to_string(), generation })
    }

    /// Appends `event` with `fields` (an object) and the common fields.
    pub(crate) fn record(&self, event: &str, fields: Value) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut line = Map::new();
        line.insert("ts".into(), json!((ts.as_micros() as f64) / 1e6));
        line.insert("event".into(), json!(event));
        line.insert("id".into(), json!(self.id));
        line.insert("pid".into(), json!(std::process::id()));
        if let Some(generation) = self.generation {
            line.insert("generation".into(), json!(generation));
        }
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let mut bytes = Value::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        self.file.append(&bytes);
    }

    /// Records a failure `event` with the error's kind and message, and `fields`.
    pub(crate) fn record_error(&self, event: &str, error: &Error, fields: Value) {
        let mut fields = match fields {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        fields.insert("kind".into(), json!(format!("{:?}", error.kind())));
        fields.insert("reason".into(), json!(error.to_string()));
        self.record(event, Value::Object(fields));
    }
}

/// Milliseconds, rounded to microseconds, for the journal's duration fields and for logs (a
/// plain `as_secs_f64() * 1e3` logged `took_ms=0.21255300000000002`).
pub(crate) fn ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}
