//! `tableroll run --probation`: a newer instance whose program crashes inside the window hands
//! the group back to the instance before it, whose program never got the stop signal; and,
//! without probation, an instance whose program drains slowly hands its sockets to the next
//! instance when the one between them died.

mod util;

use std::path::Path;
use std::time::Instant;

use tableroll_testkit::http::http_get;
use tableroll_testkit::load::{Load, Target};
use util::instance::Instance;
use util::kill_program;

fn body_of(addr: &str) -> String {
    let response = http_get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
    assert_eq!(response.status, 200);
    response.body
}

/// Generation `n` of the test server under `tableroll run FLAGS --listen LISTEN`.
fn generation(dir: &Path, n: u32, listen: &str, flags: &[&str], server_args: &[&str]) -> Instance {
    let args = [&["--listen", listen], flags].concat();
    let n = n.to_string();
    let server_args = [&["--generation", n.as_str()], server_args].concat();
    Instance::start(&format!("gen-{n}"), dir, &args, &server_args)
}

/// The owner file names `id` and its upgrade socket is live.
#[track_caller]
fn assert_owner(dir: &Path, id: &str) {
    let status = tableroll::inspect::inspect(dir).expect("inspecting the directory");
    assert_eq!(status.owner.id.as_deref(), Some(id), "{status:?}");
    assert!(status.owner.alive, "{status:?}");
}

#[test]
fn a_newer_instance_whose_program_crashes_during_probation_hands_the_group_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = generation(dir.path(), 0, "web=tcp:127.0.0.1:0", &["--probation", "600s"], &[]);
    let addr = old.address("web");
    let old_id = old.log("owner")["id"].as_str().unwrap().to_string();
    let listen = format!("web=tcp:{addr}");
    let load = Load::start(vec![Target::Tcp(addr.clone())], 4);
    load.wait_served_by("gen-0", 20);

    let mut new = generation(dir.path(), 1, &listen, &[], &[]);
    let owner_line = new.log("owner");
    let new_id = owner_line["id"].as_str().unwrap().to_string();
    load.wait_served_by("gen-1", 20);

    let killed = Instant::now();
    kill_program(&owner_line);
    // The newer supervisor reports its program's death and exits with its status.
    assert_eq!(new.log("child_exited")["code"], 128 + 9);
    assert_eq!(new.wait_exit(), 128 + 9);
    let gone = Instant::now();

    let rolled_back = old.log("rolled_back");
    assert_eq!(rolled_back["failed_owner"], new_id.as_str(), "{rolled_back}");
    assert_owner(dir.path(), &old_id);
    load.wait_more_served_by("gen-0", 100);
    let report = load.stop();
    report.assert_only_losses_inside(killed, gone);
    // The old program never got the stop signal: it serves on, and the supervisor still owns.
    assert_eq!(body_of(&addr), "hello from gen-0\n");
    assert!(
        old.pending().all(|(_, line)| line["event"] != "taken_over" && line["event"] != "stopping"),
        "the old program was told to stop"
    );

    // A good newer instance then takes over from it as from any owner (the old one on
    // probation again, both programs answer meanwhile).
    let mut next = generation(dir.path(), 2, &listen, &[], &[]);
    assert_eq!(next.log("joined")["inherited"], serde_json::json!(["web"]));
    let next_id = next.log("owner")["id"].as_str().unwrap().to_string();
    assert_owner(dir.path(), &next_id);
    let body = body_of(&addr);
    assert!(body == "hello from gen-0\n" || body == "hello from gen-2\n", "{body:?}");
}

#[test]
fn the_probation_passing_with_the_newer_instance_alive_drains_the_old_program() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = generation(dir.path(), 0, "web=tcp:127.0.0.1:0", &["--probation", "200ms"], &[]);
    let addr = old.address("web");
    old.log("owner");
    let mut new = generation(dir.path(), 1, &format!("web=tcp:{addr}"), &[], &[]);
    let new_id = new.log("owner")["id"].as_str().unwrap().to_string();
    let taken_over = old.log("taken_over");
    assert!(taken_over["message"].as_str().unwrap().contains("probation passed"), "{taken_over}");
    assert_eq!(old.log("drained")["code"], 0);
    assert_eq!(old.wait_exit(), 0);
    assert_owner(dir.path(), &new_id);
    assert_eq!(body_of(&addr), "hello from gen-1\n");
}

/// The measured case: generation 0's program drains slowly, generation 1 is killed
/// after taking over, generation 2 starts. It used to find a dead owner and fail to bind with
/// "Address already in use", the draining generation holding the sockets; now it receives them
/// from that generation.
#[test]
fn without_probation_a_slowly_draining_instance_hands_its_sockets_on_when_the_newer_one_died() {
    let dir = tempfile::tempdir().unwrap();
    let slow_drain = ["--drain-timeout", "600s"];
    let mut old = generation(dir.path(), 0, "web=tcp:127.0.0.1:0", &slow_drain, &["--ignore-sigterm"]);
    let addr = old.address("web");
    old.log("owner");
    let listen = format!("web=tcp:{addr}");
    let mut new = generation(dir.path(), 1, &listen, &[], &[]);
    let owner_line = new.log("owner");
    old.log("taken_over");
    kill_program(&owner_line);
    assert_eq!(new.wait_exit(), 128 + 9);

    let mut next = generation(dir.path(), 2, &listen, &[], &[]);
    assert_eq!(next.log("joined")["inherited"], serde_json::json!(["web"]), "{}", next.process.diagnostics());
    let next_id = next.log("owner")["id"].as_str().unwrap().to_string();
    assert_owner(dir.path(), &next_id);
}
