//! Interop with real Go tableroll processes (`../shared/interop/`): for each Go version and each
//! direction, a TCP handoff under HTTP load, a chain over a Unix listener, a thousand listeners,
//! and rounds of five newcomers started at once, Go and ours alternating; and a Go new owner
//! killed while ours is on probation.
//!
//! Ignored by default (a clone of the repository alone has no Go peers). Run with
//!
//! ```text
//! TABLEROLL_GO_PEERS=/abs/path/to/shared/interop \
//!     cargo test -p tableroll-testkit --test interop -- --ignored
//! ```
//!
//! Without the variable, or without the binaries, every test fails. `TABLEROLL_INTEROP_ROUNDS`
//! sets the rounds of the mixed chains (20 by default).

mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use util::gopeer::{Group, Side};
use util::load::{Load, Target};
use util::{
    assert_hello, hand_over_many, http_get, http_get_unix, inherited_ids, listen_addr, raise_nofile_limit,
    Peer, TestDir,
};

/// How long a mixed-chain round may take for its newcomers to be ready, and then again for the
/// replaced processes to step down and exit, before it counts as failed. It only detects a hang.
const ROUND_BOUND: Duration = Duration::from_secs(10);

/// Waits for a started owner's `inherited` (nothing), `listening` and `ready`; returns the
/// address of listener `id`.
fn first_owner(owner: &mut Peer, id: &str) -> String {
    assert_eq!(inherited_ids(&owner.wait_for("inherited")), Vec::<String>::new(), "{}", owner.label);
    let addr = listen_addr(&owner.wait_for("listening"), id);
    owner.wait_for("ready");
    addr
}

/// Checks that the load got answers only from `ids` and that none of its requests failed.
#[track_caller]
fn check_load(load: Load, ids: &[&str]) {
    let report = load.stop();
    assert!(report.failures.is_empty(), "requests failed during the handoffs: {}", report.summary());
    let expected: BTreeSet<&str> = ids.iter().copied().collect();
    let answered: BTreeSet<&str> = report.served_by.keys().map(String::as_str).collect();
    assert!(answered.is_subset(&expected), "answers from {answered:?}, expected only {expected:?}");
}

// ---------------------------------------------------------------------------------------------
// One TCP handoff, HTTP served throughout

fn tcp_handoff(version: &str, owner_side: Side) {
    let dir = TestDir::new();
    let mut group = Group::new(dir.path(), version);
    let mut old = group.start(owner_side, &["--listen", "web=tcp:127.0.0.1:0", "--serve"]);
    let addr = first_owner(&mut old, "web");
    assert_hello(http_get(&addr, "/"), &old.label);
    let load = Load::start(vec![Target::Tcp(addr.clone())], 1);
    load.wait_served_by(&old.label, 1);

    let listen = format!("web=tcp:{addr}");
    let mut new = group.start(owner_side.other(), &["--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&new.wait_for("inherited")), ["web"], "{}", new.diagnostics());
    assert_eq!(listen_addr(&new.wait_for("listening"), "web"), addr);
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    assert_eq!(dir.owner(), new.label, "the owner file names the newcomer");
    load.wait_served_by(&new.label, 1);
    // A Go peer closes its listeners just after printing upgrade_complete: once it exited, only
    // the newcomer accepts.
    old.expect_clean_exit();
    assert_hello(http_get(&addr, "/"), &new.label);
    check_load(load, &[&old.label, &new.label]);
    if !new.is_running() || new.has_pending("upgrade_complete") {
        new.fail("the newcomer should be the owner");
    }
    assert_eq!(dir.owner(), new.label);
}

// ---------------------------------------------------------------------------------------------
// A chain over a Unix listener, alternating Go and ours

/// Generations of the chain, the first owner included.
const UNIX_GENERATIONS: usize = 5;

fn unix_chain(version: &str, first_side: Side) {
    let dir = TestDir::new();
    let socket = dir.join("app.sock");
    let listen = format!("sock=unix:{}", socket.display());
    let mut group = Group::new(dir.path(), version);
    let mut side = first_side;
    let mut current = group.start(side, &["--listen", &listen, "--serve"]);
    assert_eq!(first_owner(&mut current, "sock"), socket.to_str().unwrap());
    assert_hello(http_get_unix(&socket, "/"), &current.label);
    let load = Load::start(vec![Target::Unix(socket.clone())], 1);
    let mut ids = vec![current.label.clone()];

    for _ in 1..UNIX_GENERATIONS {
        side = side.other();
        let mut next = group.start(side, &["--listen", &listen, "--serve"]);
        ids.push(next.label.clone());
        assert_eq!(inherited_ids(&next.wait_for("inherited")), ["sock"], "{}", next.diagnostics());
        assert_eq!(listen_addr(&next.wait_for("listening"), "sock"), socket.to_str().unwrap());
        next.wait_for("ready");
        current.wait_for("upgrade_complete");
        current.expect_clean_exit();
        assert_eq!(dir.owner(), next.label, "the owner file names the newcomer");
        assert!(socket.exists(), "the Unix listener's path was unlinked when {} exited", current.label);
        assert_hello(http_get_unix(&socket, "/"), &next.label);
        current = next;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    check_load(load, &ids);
    if !current.is_running() || current.has_pending("upgrade_complete") {
        current.fail("the last newcomer should be the owner");
    }
}

// ---------------------------------------------------------------------------------------------
// A thousand listeners in one handoff

fn thousand_listeners(version: &str, owner_side: Side) {
    const N: usize = 1000;
    raise_nofile_limit(4 * N as u64 + 256);
    let dir = TestDir::new();
    let many = N.to_string();
    let mut group = Group::new(dir.path(), version);
    let old = group.start(owner_side, &["--many", &many]);
    hand_over_many(&dir, N, old, || group.start(owner_side.other(), &["--many", &many]));
}

// ---------------------------------------------------------------------------------------------
// The mixed chain: five newcomers at once, Go and ours alternating

fn mixed_chain(version: &str, owner_side: Side) {
    let rounds: usize = match std::env::var("TABLEROLL_INTEROP_ROUNDS") {
        Ok(n) => n.parse().expect("TABLEROLL_INTEROP_ROUNDS: a number of rounds"),
        Err(_) => 20,
    };
    let mut failures = Vec::new();
    for round in 1..=rounds {
        if let Err(failure) = mixed_round(version, owner_side) {
            eprintln!("mixed chain, Go {version}, {owner_side} owner: round {round} of {rounds} failed");
            failures.push(format!("round {round}: {failure}"));
        }
    }
    assert!(
        failures.is_empty(),
        "mixed chain, Go {version}, {owner_side} owner: {} of {rounds} rounds failed\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One round on a fresh directory: an owner of `owner_side`, then five newcomers started at
/// once, alternating sides. Afterwards exactly one process serves: the one the owner file
/// names, which reported `ready` and not `upgrade_complete`; every other one stepped down and
/// exited. A failure is returned (with the events each process printed), not raised, so that
/// the test counts the failed rounds.
fn mixed_round(version: &str, owner_side: Side) -> Result<(), String> {
    let dir = TestDir::new();
    let mut group = Group::new(dir.path(), version);
    let mut peers = vec![group.start(owner_side, &["--listen", "web=tcp:127.0.0.1:0", "--serve"])];
    let addr = {
        let deadline = Instant::now() + ROUND_BOUND;
        let owner = &mut peers[0];
        let (listening, _) = owner.wait_for_until("listening", deadline)?;
        owner.wait_for_until("ready", deadline)?;
        listen_addr(&listening, "web")
    };
    let listen = format!("web=tcp:{addr}");
    let mut sides = vec![owner_side];
    for _ in 0..5 {
        let side = sides[sides.len() - 1].other();
        sides.push(side);
        peers.push(group.start(side, &["--listen", &listen, "--serve"]));
    }
    let checked = check_round(&dir, &mut peers, &addr);
    checked.map_err(|failure| {
        let events =
            peers.iter().zip(&sides).map(|(p, side)| format!("  {} ({side}): {:?}", p.label, event_names(p)));
        format!(
            "{failure}\nevents printed, in the order of starting:\n{}",
            events.collect::<Vec<_>>().join("\n")
        )
    })
}

fn check_round(dir: &TestDir, peers: &mut [Peer], addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + ROUND_BOUND;
    for peer in &mut peers[1..] {
        let (inherited, _) = peer.wait_for_until("inherited", deadline)?;
        if inherited_ids(&inherited) != ["web"] {
            return Err(format!("{} inherited {inherited}", peer.label));
        }
        peer.wait_for_until("ready", deadline)?;
    }
    let owner = dir.owner();
    let survivor = peers
        .iter()
        .position(|p| p.label == owner)
        .ok_or_else(|| format!("the owner file names {owner:?}, none of the group"))?;

    // Every other process must step down: each is checked, against one deadline.
    let deadline = Instant::now() + ROUND_BOUND;
    let mut stayed = Vec::new();
    for (i, peer) in peers.iter_mut().enumerate() {
        if i != survivor {
            let stepped_down = peer
                .wait_for_until("upgrade_complete", deadline)
                .and_then(|_| peer.clean_exit_until(deadline));
            stayed.extend(stepped_down.err());
        }
    }
    if !stayed.is_empty() {
        return Err(format!("the owner file names {owner}, but {}", stayed.join("; ")));
    }
    let survivor = &mut peers[survivor];
    if !survivor.is_running() || survivor.has_pending("upgrade_complete") {
        return Err(format!("{owner}, named by the owner file, stepped down or exited"));
    }
    match http_get(addr, "/") {
        Ok(r) if r.status == 200 && r.body == format!("hello from {owner}\n") => {}
        other => return Err(format!("GET / (expected hello from {owner}): {other:?}")),
    }
    match dir.owner() {
        now if now == owner => Ok(()),
        now => Err(format!("the owner file changed from {owner:?} to {now:?}")),
    }
}

/// The names of the events `peer` printed, in order.
fn event_names(peer: &Peer) -> Vec<String> {
    peer.printed().iter().map(|e| e["event"].as_str().unwrap_or("?").to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The tests, for each Go version

// ---------------------------------------------------------------------------------------------
// Probation with a Go process as the new owner: probation is ours alone, the Go side sees only
// the owner file and the sockets the protocol describes.

fn go_newcomer_killed_during_probation(version: &str) {
    let dir = TestDir::new();
    let mut group = Group::new(dir.path(), version);
    let mut ours =
        group.start(Side::Rust, &["--listen", "web=tcp:127.0.0.1:0", "--serve", "--probation-ms", "600000"]);
    let addr = first_owner(&mut ours, "web");
    let listen = format!("web=tcp:{addr}");
    let mut go = group.start(Side::Go, &["--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&go.wait_for("inherited")), ["web"], "{}", go.diagnostics());
    go.wait_for("ready");
    assert_eq!(dir.owner(), go.label);

    go.kill();
    assert_eq!(ours.wait_for("rolled_back")["failed_owner"], go.label.as_str());
    assert_eq!(dir.owner(), ours.label);
    assert_hello(http_get(&addr, "/"), &ours.label);

    // A Go newcomer takes over from the process that rolled back, as from any owner.
    let mut next = group.start(Side::Go, &["--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"], "{}", next.diagnostics());
    next.wait_for("ready");
    assert_eq!(dir.owner(), next.label);
    assert!(!ours.has_pending("upgrade_complete"), "a new window began for the new owner");
}

macro_rules! interop_tests {
    ($($module:ident => $version:literal),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn tcp_rust_owner_go_newcomer() {
                tcp_handoff($version, Side::Rust);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn tcp_go_owner_rust_newcomer() {
                tcp_handoff($version, Side::Go);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn unix_chain_from_rust() {
                unix_chain($version, Side::Rust);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn unix_chain_from_go() {
                unix_chain($version, Side::Go);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn thousand_listeners_rust_owner_go_newcomer() {
                thousand_listeners($version, Side::Rust);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn thousand_listeners_go_owner_rust_newcomer() {
                thousand_listeners($version, Side::Go);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn mixed_chain_rust_owner_go_newcomers_first() {
                mixed_chain($version, Side::Rust);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn mixed_chain_go_owner_rust_newcomers_first() {
                mixed_chain($version, Side::Go);
            }

            #[test]
            #[ignore = "needs the Go peers: TABLEROLL_GO_PEERS=DIR"]
            fn go_newcomer_killed_during_probation_of_ours() {
                go_newcomer_killed_during_probation($version);
            }
        }
    )*};
}

interop_tests! {
    go_v1_1_0 => "v1.1.0",
    go_v2_0_0 => "v2.0.0",
    go_v2_1_0 => "v2.1.0",
    go_v4_0_0 => "v4.0.0",
}
