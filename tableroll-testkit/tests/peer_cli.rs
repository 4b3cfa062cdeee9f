//! The conformance peer's own interface: flags in both spellings, and errors reported as an
//! `error` event with exit status 1, never a panic.

mod util;

use util::{inherited_ids, listen_addr, Peer, TestDir};

#[test]
fn flags_with_equals_and_the_default_id() {
    let dir = TestDir::new();
    let socket = dir.join("app.sock");
    let (dir_flag, app) =
        (format!("--dir={}", dir.path().display()), format!("--listen=app=unix:{}", socket.display()));
    let mut peer =
        Peer::start_with_args(&[&dir_flag, "--listen=web=tcp:127.0.0.1:0", &app, "--ready-delay-ms=0"]);
    let inherited = peer.wait_for("inherited");
    assert_eq!(inherited_ids(&inherited), Vec::<String>::new());
    assert!(inherited["new_us"].is_u64(), "{inherited}");
    let id = inherited["id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "{inherited}");
    let listening = peer.wait_for("listening");
    assert_eq!(listening["id"], id.as_str());
    assert!(listen_addr(&listening, "web").starts_with("127.0.0.1:"));
    assert_eq!(listen_addr(&listening, "app"), socket.to_str().unwrap());
    let ready = peer.wait_for("ready");
    assert!(ready["ready_us"].is_u64(), "{ready}");
    assert_eq!(dir.owner(), id);
}

#[test]
fn bad_flags_are_error_events() {
    let dir = TestDir::new();
    let path = dir.path().to_str().unwrap();
    let missing = dir.join("missing");
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], ""),
        (&["--id", "x"], "x"),
        (&["--dir", path, "--id", "x", "--many", "lots"], "x"),
        (&["--dir", path, "--id", "x", "--listen", "web=udp:127.0.0.1:0"], "x"),
        (&["--dir", path, "--id", "x", "--serve=yes"], "x"),
        (&["--dir", path, "--id"], ""),
        (&["--dir", path, "--id="], ""),
        (&["--dir", path, "--id", "a/b"], "a/b"),
        (&["--dir", missing.to_str().unwrap(), "--id", "x"], "x"),
    ];
    for (args, id) in cases {
        let mut peer = Peer::start_with_args(args);
        let event = peer.wait_for("error");
        let status = peer.wait_exit();
        if status.code() != Some(1) || event["id"] != *id || !event["message"].is_string() {
            peer.fail(&format!("expected an error event with id {id:?} and exit status 1, got {event}"));
        }
    }
    assert_eq!(dir.owner(), "", "no failed start may become owner");
}
