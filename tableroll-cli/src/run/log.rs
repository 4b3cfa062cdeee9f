//! The supervisor's log lines on stderr: one line per event, as text for people or JSON for
//! log pipelines. Every line names this instance (id and pid) and the program's run number.

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::args::LogFormat;

#[derive(Clone)]
pub struct Log {
    format: LogFormat,
    id: String,
    generation: Option<u64>,
    started: Instant,
}

impl Log {
    pub fn new(format: LogFormat) -> Log {
        Log { format, id: String::new(), generation: None, started: Instant::now() }
    }

    /// Names this instance in later lines, once the library gave it its id.
    pub fn set_identity(&mut self, id: &str, generation: Option<u64>) {
        self.id = id.to_string();
        self.generation = generation;
    }

    /// Writes one event: `event` names it for machines, `message` says it for people, and
    /// `fields` carry the figures (included in both forms).
    pub fn event(&self, event: &str, message: &str, fields: Value) {
        let line = match self.format {
            LogFormat::Text => self.text_line(message, &fields),
            LogFormat::Json => self.json_line(event, message, fields),
        };
        // stderr is unbuffered; one write per line keeps lines whole when several instances
        // share a terminal or a journal.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn text_line(&self, message: &str, fields: &Value) -> String {
        let mut line = format!("tableroll run[{}", std::process::id());
        if !self.id.is_empty() {
            line.push_str(&format!(" {}", self.id));
        }
        line.push_str(&format!(" +{:.3}s]: {message}", self.started.elapsed().as_secs_f64()));
        if let Value::Object(fields) = fields {
            for (key, value) in fields {
                match value {
                    Value::String(s) => line.push_str(&format!(" {key}={s}")),
                    other => line.push_str(&format!(" {key}={other}")),
                }
            }
        }
        line.push('\n');
        line
    }

    fn json_line(&self, event: &str, message: &str, fields: Value) -> String {
        let mut object = Map::new();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        object.insert("ts".into(), json!(now.as_secs_f64()));
        object.insert("event".into(), json!(event));
        object.insert("id".into(), json!(self.id));
        object.insert("pid".into(), json!(std::process::id()));
        object.insert("generation".into(), json!(self.generation));
        object.insert("message".into(), json!(message));
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        line
    }
}

/// Milliseconds, rounded to microseconds, for log fields.
pub fn ms(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_carry_the_fields() {
        let mut log = Log::new(LogFormat::Text);
        log.set_identity("web-2", Some(2));
        let line = log.text_line("program ready", &json!({"child_pid": 42, "ready_ms": 1.5}));
        assert!(line.starts_with(&format!("tableroll run[{} web-2 +", std::process::id())), "{line}");
        assert!(line.ends_with("]: program ready child_pid=42 ready_ms=1.5\n"), "{line}");
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let log = Log::new(LogFormat::Json);
        let line = log.json_line("ready", "program ready", json!({"child_pid": 42}));
        assert_eq!(line.matches('\n').count(), 1);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "ready");
        assert_eq!(value["child_pid"], 42);
        assert_eq!(value["pid"], std::process::id());
    }
}
