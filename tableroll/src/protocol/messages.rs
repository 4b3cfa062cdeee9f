//! The messages of the protocol: the descriptor list entries and the ready handshake.

use serde::{Deserialize, Serialize};

/// The version we speak.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// A version 0 newcomer's whole ready handshake: one byte.
pub(crate) const READY_V0: u8 = 0x2A;
/// A version 1 newcomer starts its handshake with this byte, then a [`ReadyRequest`] frame.
pub(crate) const READY_V1: u8 = 0x42;
/// The largest payload of a descriptor message.
pub(crate) const MAX_PAYLOAD: usize = 4096;

/// One descriptor in the owner's list.
///
/// Unknown keys are ignored and missing `network`/`addr` read as empty (older Go writers emit
/// them empty, newer ones omit them); empty ones are omitted when we write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireEntry {
    pub(crate) kind: String,
    pub(crate) id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) network: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) addr: String,
}

impl WireEntry {
    /// The human-readable payload of this entry's descriptor message, as the Go writer names
    /// it: never empty, always shorter than [`MAX_PAYLOAD`].
    pub(crate) fn payload(&self) -> Vec<u8> {
        let text = match self.kind.as_str() {
            "listener" | "conn" => format!("{}({}): {}:{}", self.kind, self.id, self.network, self.addr),
            _ if self.addr.is_empty() => format!("{}({})", self.kind, self.id),
            _ => format!("{}({}): {}", self.kind, self.id, self.addr),
        };
        let mut bytes = text.into_bytes();
        bytes.truncate(MAX_PAYLOAD - 1);
        bytes
    }
}

/// `{"version":N}`, sent by a version 1 newcomer after [`READY_V1`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReadyRequest {
    pub(crate) version: u32,
}

/// `{"msg":"stepping down"}`, the owner's answer to a ready request it accepts.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReadyReply {
    pub(crate) msg: String,
}

impl ReadyReply {
    pub(crate) const STEPPING_DOWN: &'static str = "stepping down";

    pub(crate) fn stepping_down() -> Self {
        ReadyReply { msg: Self::STEPPING_DOWN.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_old_and_new_go_entries() {
        let old = r#"[{"kind":"file","id":"log","name":"/var/log/x","network":"","addr":""},
                      {"kind":"listener","id":"web","network":"tcp","addr":"127.0.0.1:8080"},
                      {"kind":"future-kind","id":"z","extra":{"a":[1]}}]"#;
        let entries: Vec<WireEntry> = serde_json::from_str(old).unwrap();
        assert_eq!(entries[0].kind, "file");
        assert_eq!(entries[0].network, "");
        assert_eq!(entries[1].addr, "127.0.0.1:8080");
        assert_eq!(entries[2].kind, "future-kind");
    }

    #[test]
    fn omits_empty_fields() {
        let e =
            WireEntry { kind: "file".into(), id: "log".into(), network: String::new(), addr: String::new() };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"kind":"file","id":"log"}"#);
    }

    #[test]
    fn payloads_match_the_go_writer() {
        let l = WireEntry {
            kind: "listener".into(),
            id: "web".into(),
            network: "tcp".into(),
            addr: "127.0.0.1:18090".into(),
        };
        assert_eq!(l.payload(), b"listener(web): tcp:127.0.0.1:18090");
        let f =
            WireEntry { kind: "file".into(), id: "log".into(), network: String::new(), addr: String::new() };
        assert_eq!(f.payload(), b"file(log)");
        let huge = WireEntry {
            kind: "fd".into(),
            id: "x".repeat(10_000),
            network: String::new(),
            addr: String::new(),
        };
        assert_eq!(huge.payload().len(), MAX_PAYLOAD - 1);
    }
}
