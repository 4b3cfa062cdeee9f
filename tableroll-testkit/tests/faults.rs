//! The fault matrix: at every fault point of a handoff, on the side it belongs to, the process
//! is paused there (and killed with SIGKILL once it reports the point) or aborts there, while
//! closed-loop HTTP load runs on the group's two TCP listeners (`api` and `web`, two so that the
//! `*-between-fds` points are reached). After each fault:
//!
//! - the group has the owner it must have: the old owner when the newcomer died, also after the
//!   ready handshake (the owner answered "stepping down" but waits for the newcomer to record
//!   itself in the owner file, and resumes when it sees the newcomer die first); the newcomer
//!   when the owner died (with the listeners it received and fresh ones, on the same ports, for
//!   the rest);
//! - no request fails unless the fault made its failure unavoidable (see [`check_failures`]);
//! - the survivor's descriptor count, when idle, is back to its baseline;
//! - the next upgrade succeeds: a newcomer inherits both listeners, becomes ready, and the
//!   survivor steps down and exits cleanly.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use tableroll::fault::Point;
use util::load::{FailureKind, Load, Report, Target};
use util::wire::{try_lock, RawNewcomer};
use util::{fd_count, inherited_ids, listen_addr, Peer, TestDir};

/// The listeners of the group, in the order the load targets them.
const LISTENERS: [&str; 2] = ["api", "web"];
/// Load clients per listener.
const CLIENTS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Pause at the point; the test kills the process with SIGKILL once it reported the point.
    Pause,
    /// `abort()` at the point.
    Abort,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Abort => "abort",
        }
    }
}

/// Who owns the group once the faulty process is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A newcomer died before the owner was asked to step down: the owner stays.
    OwnerStays,
    /// The owner died: the newcomer carries on with what it received (and creates the rest).
    NewcomerTakesOver,
    /// The newcomer died after the owner answered its ready request but before it wrote the
    /// owner file: the owner, waiting for that, sees it die and stays the owner.
    OwnerResumes,
}

fn outcome(point: &str) -> Outcome {
    match point {
        p if p.starts_with("owner-") => Outcome::NewcomerTakesOver,
        "newcomer-in-handshake" | "newcomer-before-owner-file" => Outcome::OwnerResumes,
        _ => Outcome::OwnerStays,
    }
}

/// A window of time in which some failures are unavoidable.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

/// What the fault made unavoidable.
#[derive(Debug, Default)]
struct Allowed {
    /// The dead process had accepted connections (it served HTTP): requests under way while it
    /// died may be reset or closed without an answer. Nothing else may.
    lost_in_flight: Option<Window>,
    /// Per listener: from the death of the last process holding it until the test saw a
    /// process listening on its port again (bound fresh). Connections may be refused then.
    nobody_listening: BTreeMap<&'static str, Window>,
}

macro_rules! cases {
    ($($name:ident: $point:literal = $action:ident,)*) => {
        $(
            #[test]
            fn $name() {
                run_case($point, Action::$action);
            }
        )*
        const CASES: &[(&str, Action)] = &[$(($point, Action::$action)),*];
    };
}

cases! {
    pause_owner_after_list: "owner-after-list" = Pause,
    pause_owner_between_fds: "owner-between-fds" = Pause,
    pause_owner_before_ready_byte: "owner-before-ready-byte" = Pause,
    pause_owner_before_stepping_down: "owner-before-stepping-down" = Pause,
    pause_newcomer_after_lock: "newcomer-after-lock" = Pause,
    pause_newcomer_after_list: "newcomer-after-list" = Pause,
    pause_newcomer_between_fds: "newcomer-between-fds" = Pause,
    pause_newcomer_after_receive: "newcomer-after-receive" = Pause,
    pause_newcomer_in_handshake: "newcomer-in-handshake" = Pause,
    pause_newcomer_before_owner_file: "newcomer-before-owner-file" = Pause,
    abort_owner_between_fds: "owner-between-fds" = Abort,
    abort_owner_before_stepping_down: "owner-before-stepping-down" = Abort,
    abort_newcomer_after_list: "newcomer-after-list" = Abort,
    abort_newcomer_before_owner_file: "newcomer-before-owner-file" = Abort,
}

#[test]
fn every_point_has_a_pause_case() {
    let paused: BTreeSet<&str> = CASES.iter().filter(|(_, a)| *a == Action::Pause).map(|(p, _)| *p).collect();
    let all: BTreeSet<&str> = Point::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(paused, all, "every fault point needs a case here");
}

/// `abort()` must not leave core files behind (children inherit the limit).
fn no_core_dumps() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Core);
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: limit.maximum })
        .expect("setting RLIMIT_CORE to 0");
}

/// Newcomer arguments: `--id ID`, both listeners on the owner's actual ports (so that a
/// newcomer that must bind fresh gets the same ports), `--serve`, and `extra`.
fn newcomer_args<'a>(id: &'a str, listens: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--id", id, "--serve"];
    for listen in listens {
        args.extend(["--listen", listen.as_str()]);
    }
    args.extend_from_slice(extra);
    args
}

/// Waits for `peer`'s `inherited`, `listening` (on `addrs`) and `ready`; returns the inherited
/// ids and when the `listening` and `ready` lines were read.
fn joins(peer: &mut Peer, addrs: &BTreeMap<&str, String>) -> (Vec<String>, Instant, Instant) {
    let inherited = inherited_ids(&peer.wait_for("inherited"));
    let (listening, listening_at) = peer.wait_for_timed("listening");
    for (id, addr) in addrs {
        if listen_addr(&listening, id) != *addr {
            peer.fail(&format!("{id} must listen on {addr}: {listening}"));
        }
    }
    let (_, ready_at) = peer.wait_for_timed("ready");
    (inherited, listening_at, ready_at)
}

/// Ends with the owner in a session of our own: it accepts one only after the previous
/// session ended (it runs one at a time). The session receives every descriptor, sends an
/// invalid ready byte and reads until the owner closes the connection, which is the last thing
/// the owner does in a failed session.
fn probe_session(dir: &TestDir, owner: &Peer) {
    let raw = RawNewcomer::join(dir.path());
    if raw.fds.len() != LISTENERS.len() {
        owner.fail(&format!(
            "the probe session received {} descriptors, not {}",
            raw.fds.len(),
            LISTENERS.len()
        ));
    }
    std::io::Write::write_all(&mut &raw.stream, b"\x07").expect("writing to the owner");
    if !raw.read_to_eof().is_empty() {
        owner.fail("the owner answered an invalid ready byte");
    }
}

fn run_case(point: &str, action: Action) {
    if action == Action::Abort {
        no_core_dumps();
    }
    let epoch = Instant::now();
    let outcome = outcome(point);
    let owner_side = point.starts_with("owner-");
    let fault = format!("{point}={}", action.name());
    let dir = TestDir::new();

    // The owner, first of its group: two fresh listeners.
    let mut owner_args = vec!["--id", "o", "--serve"];
    owner_args.extend(["--listen", "api=tcp:127.0.0.1:0", "--listen", "web=tcp:127.0.0.1:0"]);
    if owner_side {
        owner_args.extend(["--fault", &fault]);
    }
    let mut owner = Peer::start(dir.path(), &owner_args);
    assert_eq!(inherited_ids(&owner.wait_for("inherited")), Vec::<String>::new());
    let listening = owner.wait_for("listening");
    let addrs: BTreeMap<&str, String> =
        LISTENERS.iter().map(|id| (*id, listen_addr(&listening, id))).collect();
    owner.wait_for("ready");
    // Idle: ready returned, no session yet, no connection yet. Every process of this test
    // that ends up owner (the old owner, a newcomer that took over, or a fresh one) serves the
    // same two listeners, so this is the baseline for all of them.
    let baseline = fd_count(owner.pid());
    let listens: Vec<String> = addrs.iter().map(|(id, addr)| format!("{id}=tcp:{addr}")).collect();

    let load = Load::start(LISTENERS.iter().map(|id| Target::Tcp(addrs[id].clone())).collect(), CLIENTS);
    load.wait_answered_on_each(1);

    // The faulty handoff.
    let newcomer_fault: Vec<&str> = if owner_side { vec![] } else { vec!["--fault", &fault] };
    let n1_spawned = Instant::now();
    let mut n1 = Peer::start(dir.path(), &newcomer_args("n1", &listens, &newcomer_fault));
    let (victim, victim_id) = if owner_side { (&mut owner, "o") } else { (&mut n1, "n1") };
    let event = victim.wait_for("fault");
    if event["point"] != point || event["action"] != action.name() || event["id"] != victim_id {
        victim.fail(&format!("expected a fault event for {fault} from {victim_id}, got {event}"));
    }
    if owner_side && action == Action::Pause && point.contains("before") {
        // The newcomer received everything and goes on to its handshake, which the paused
        // owner never answers: it must not become owner, so it keeps holding the lock (taken
        // before it connected; released only once it is owner, or dead) and the owner file
        // keeps naming the owner. Checked once the newcomer is at its handshake or close
        // before it (`listening` comes just before ready): a newcomer that does not wait
        // for the answer is caught here most of the time, never a correct one.
        n1.peek_for("listening");
        if try_lock(dir.path()).is_some() || dir.owner() != "o" || n1.has_pending("ready") {
            n1.fail(&format!("the newcomer took over while the owner, paused at {point}, was alive"));
        }
    }
    let victim = if owner_side { &mut owner } else { &mut n1 };
    let died = match action {
        Action::Pause => {
            let from = Instant::now();
            victim.kill();
            Window { from, to: Instant::now() }
        }
        Action::Abort => {
            let status = victim.wait_exit();
            if status.signal() != Some(rustix::process::Signal::ABORT.as_raw()) {
                victim.fail(&format!("expected death by SIGABRT at {point}, got {status}"));
            }
            // It died at some moment after the handoff began, which is after n1 started.
            Window { from: n1_spawned, to: Instant::now() }
        }
    };
    // Everything the dead process printed.
    victim.drain_to_eof();
    let victim_events: Vec<String> = victim.printed().iter().map(|e| e["event"].to_string()).collect();

    let mut allowed = Allowed::default();
    let mut survivor = match outcome {
        Outcome::OwnerStays => {
            // The newcomer died inside construction: it never served (it printed nothing but
            // the fault), so it accepted no connection, and the owner never stopped holding
            // the listeners: not a single request may fail.
            if victim_events != ["\"fault\""] {
                n1.fail(&format!("the newcomer should have printed only the fault, got {victim_events:?}"));
            }
            // Still the owner: named in the owner file, serving, in sessions again (the probe
            // proves the session with the dead newcomer ended), not told to step down.
            assert_eq!(dir.owner(), "o", "the owner file must still name the owner");
            load.wait_more_served_by("o", 20);
            load.pause();
            probe_session(&dir, &owner);
            if owner.has_pending("upgrade_complete") || !owner.is_running() {
                owner.fail(&format!("the owner must stay owner after {fault} in the newcomer"));
            }
            owner
        }
        Outcome::NewcomerTakesOver => {
            // The dead owner had accepted connections: those under way are lost.
            allowed.lost_in_flight = Some(died);
            let (inherited, listening_at, ready_at) = joins(&mut n1, &addrs);
            // The paused owner never answered: the newcomer can have become owner only once the
            // owner was dead.
            if action == Action::Pause && ready_at < died.from {
                n1.fail(&format!("the newcomer was ready while the owner, paused at {point}, was alive"));
            }
            let expected_count = match point {
                "owner-after-list" => 0,
                "owner-between-fds" => 1,
                _ => LISTENERS.len(),
            };
            if inherited.len() != expected_count {
                n1.fail(&format!("after {fault} the newcomer should inherit {expected_count} listeners"));
            }
            // A listener the newcomer did not receive had no holder from the owner's death
            // until the newcomer bound it fresh. One it received never stopped listening.
            for id in LISTENERS {
                if !inherited.iter().any(|i| i == id) {
                    allowed.nobody_listening.insert(id, Window { from: died.from, to: listening_at });
                }
            }
            assert_eq!(dir.owner(), "n1", "the newcomer must be the owner");
            load.wait_more_served_by("n1", 20);
            load.pause();
            n1
        }
        Outcome::OwnerResumes => {
            // The newcomer served (it got past `listening`): the connections it had accepted
            // are lost. The owner never stopped holding and serving the listeners.
            if !victim_events.iter().any(|e| e == "\"listening\"") {
                n1.fail("the newcomer should have been serving before it died");
            }
            allowed.lost_in_flight = Some(died);
            assert_eq!(dir.owner(), "o", "the newcomer died before it wrote the owner file");
            load.wait_more_served_by("o", 20);
            load.pause();
            probe_session(&dir, &owner);
            if owner.has_pending("upgrade_complete") || !owner.is_running() {
                owner.fail(&format!("the owner must resume after {fault} in the newcomer"));
            }
            owner
        }
    };

    // Idle again (no request under way, every connection closed): back to the baseline.
    let idle = fd_count(survivor.pid());
    if idle != baseline {
        survivor.fail(&format!(
            "{} holds {idle} descriptors when idle, the baseline is {baseline}",
            survivor.label
        ));
    }
    load.resume();

    // The next upgrade goes through.
    let mut next = Peer::start(dir.path(), &newcomer_args("next", &listens, &[]));
    let (inherited, _, _) = joins(&mut next, &addrs);
    assert_eq!(inherited, LISTENERS, "{}", next.diagnostics());
    survivor.wait_for("upgrade_complete");
    survivor.expect_clean_exit();
    assert_eq!(dir.owner(), "next");
    load.wait_more_served_by("next", 20);
    let expected: BTreeSet<String> = ["next.sock", "pid"].map(String::from).into();
    assert_eq!(dir.entries(), expected, "only the owner's upgrade socket may remain");

    let report = load.stop();
    let (lost, refused) = check_failures(&report, &allowed, epoch, &fault);
    println!(
        "{fault}: {outcome:?}; {}; allowed: {lost} lost in flight, {refused} refused while nobody listened",
        report.summary()
    );
}

/// Every failure must be one the fault made unavoidable:
///
/// - a request under way while a process that accepted connections died may be reset or
///   closed without an answer: its connection was accepted by the dead process (the known limit
///   of any handoff), or it waited in the backlog of a listener that the dead process alone
///   held (which the kernel resets when the last descriptor of the listener closes);
/// - a request under way while the listeners were held only by an owner that had stepped down
///   (it no longer accepts) may be reset when that owner closes them: only when a newcomer
///   aborted after the owner stepped down for it (when it was paused instead, the test lets
///   the owner exit before it kills the newcomer);
/// - while nobody holds a listener (from the death of its last holder until the test saw a
///   new process listening on its port), a connection to it may be refused.
///
/// Nothing else: no refusal on a listener that some live process held throughout, no refusal
/// once the replacement listens, no timeout, no bad answer, and no failure at all when the
/// dead process never accepted a connection and was not the last holder of anything.
///
/// Returns the numbers of failures allowed by each rule.
fn check_failures(report: &Report, allowed: &Allowed, epoch: Instant, fault: &str) -> (usize, usize) {
    let (mut lost, mut refused, mut unexpected) = (0, 0, Vec::new());
    for failure in &report.failures {
        let listener = LISTENERS[failure.target];
        let lost_kind = matches!(failure.kind, FailureKind::Reset | FailureKind::Closed);
        let in_flight = lost_kind && allowed.lost_in_flight.is_some_and(|w| failure.overlaps(w.from, w.to));
        let unheld = failure.kind == FailureKind::Refused
            && allowed.nobody_listening.get(listener).is_some_and(|w| failure.overlaps(w.from, w.to));
        if in_flight {
            lost += 1;
        } else if unheld {
            refused += 1;
        } else {
            unexpected.push(format!("{listener}: {}", failure.describe(epoch)));
        }
    }
    let window = |w: &Window| {
        let ms = |t: Instant| t.saturating_duration_since(epoch).as_secs_f64() * 1e3;
        format!("{:.3}..{:.3} ms", ms(w.from), ms(w.to))
    };
    assert!(
        unexpected.is_empty(),
        "{fault}: {} failures that the fault does not explain ({}; lost in flight allowed in {:?}, \
         refusals allowed in {:?}):\n{}",
        unexpected.len(),
        report.summary(),
        allowed.lost_in_flight.as_ref().map(window),
        allowed.nobody_listening.iter().map(|(id, w)| format!("{id} {}", window(w))).collect::<Vec<_>>(),
        unexpected.join("\n")
    );
    (lost, refused)
}
