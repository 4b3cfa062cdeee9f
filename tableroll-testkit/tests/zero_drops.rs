//! The promise of the product, measured: fifty upgrades in a row under closed-loop load (a new
//! connection per request), over a TCP listener and over a Unix one, and not one request fails.
//!
//! Every old process must exit cleanly, and the number of requests it says it served must be
//! the number of answers the load got from it: nothing answered twice, nothing lost in a drain.

mod util;

use std::collections::BTreeMap;
use std::time::Instant;

use util::load::{Load, Target};
use util::{inherited_ids, listen_addr, Peer, TestDir};

const UPGRADES: usize = 50;
const CLIENTS: usize = 3;

fn fifty_upgrades(dir: &TestDir, listen: &str, target: impl Fn(&str) -> Target, kind: &str) {
    let started = Instant::now();
    let start = |id: &str| Peer::start(dir.path(), &["--id", id, "--listen", listen, "--serve"]);
    let mut current = start("p0");
    assert_eq!(inherited_ids(&current.wait_for("inherited")), Vec::<String>::new());
    let addr = listen_addr(&current.wait_for("listening"), "app");
    current.wait_for("ready");
    let load = Load::start(vec![target(&addr)], CLIENTS);
    load.wait_served_by("p0", 1);

    // What each process that exited says it served.
    let mut served_by_exit = BTreeMap::new();
    for i in 1..=UPGRADES {
        let id = format!("p{i}");
        let mut next = start(&id);
        assert_eq!(inherited_ids(&next.wait_for("inherited")), ["app"], "{}", next.diagnostics());
        assert_eq!(listen_addr(&next.wait_for("listening"), "app"), addr);
        next.wait_for("ready");
        current.wait_for("upgrade_complete");
        // The load goes on through each handoff: the new process answers before the next one.
        load.wait_served_by(&id, 1);
        let served = current.expect_clean_exit();
        served_by_exit.insert(current.label.clone(), served);
        assert_eq!(dir.owner(), id);
        current = next;
    }

    let report = load.stop();
    let epoch = started;
    let failures: Vec<String> = report.failures.iter().map(|f| f.describe(epoch)).collect();
    assert!(
        report.failures.is_empty(),
        "{kind}: {} of {} requests failed during {UPGRADES} upgrades:\n{}",
        report.failures.len(),
        report.sent,
        failures.join("\n")
    );
    for (id, served) in &served_by_exit {
        let answered = report.served_by.get(id).copied().unwrap_or(0);
        assert_eq!(
            *served, answered,
            "{kind}: {id} says it served {served} requests, the load got {answered}"
        );
    }
    let answered_by: u64 = report.served_by.values().sum();
    assert_eq!(answered_by, report.ok);
    assert!(
        report.served_by.keys().all(|id| id == &current.label || served_by_exit.contains_key(id)),
        "{kind}: answers from unknown processes: {:?}",
        report.served_by
    );
    println!(
        "{kind}: {UPGRADES} upgrades, {} requests sent, {} failed, in {:.2} s",
        report.sent,
        report.failures.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn fifty_upgrades_over_tcp_drop_nothing() {
    let dir = TestDir::new();
    fifty_upgrades(&dir, "app=tcp:127.0.0.1:0", |addr| Target::Tcp(addr.to_string()), "tcp");
}

#[test]
fn fifty_upgrades_over_a_unix_listener_drop_nothing() {
    let dir = TestDir::new();
    let socket = dir.join("app.sock");
    let listen = format!("app=unix:{}", socket.display());
    fifty_upgrades(&dir, &listen, |path| Target::Unix(path.into()), "unix");
}
