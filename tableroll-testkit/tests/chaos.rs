//! Chaos: rounds of random actions against a serving group under closed-loop HTTP load. A
//! round starts a newcomer (plain, with `--ready-delay-ms`, or `--no-ready`), SIGKILLs a random
//! live member (owner or newcomer) at a random moment, lets the load run, or takes a checkpoint.
//!
//! The RNG is seeded (printed at the start; `CHAOS_SEED` replays a sequence of actions, though
//! the timing of processes differs from run to run; `CHAOS_ROUNDS` sets the number of rounds).
//! `scripts/chaos.sh [ROUNDS] [SEED]` runs the long, ignored variant. `CHAOS_VERBOSE=1` prints
//! the log of actions and events at the end.
//!
//! What is checked:
//!
//! - **Never two owners.** A process is owner from its `ready` until its `upgrade_complete` or
//!   its death. The events of different processes come through different pipes, so their
//!   order as read is not quite their real order; but a handoff always ends with the old owner
//!   telling its application that it stepped down. So whenever two live processes have printed
//!   `ready` and not `upgrade_complete`, one of them must print `upgrade_complete` (without any
//!   other action of the test in between). Exactly, at checkpoints: the test takes the
//!   coordination lock itself, which freezes ownership (every change of owner happens under
//!   the lock), and then the process named in the owner file is the only one that may be owner:
//!   every other live process that printed `ready` must print `upgrade_complete`, and the named
//!   one, if alive and not stepped down, must have printed `ready` and must answer requests.
//! - **Stepping down is clean.** Every `upgrade_complete` comes from an owner and is followed by
//!   `exit` and status 0. No process prints `error` (see [`Chaos::check_errors`]).
//! - **No refusal while the listening socket has a holder.** See [`Chaos::check_load`].

mod util;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use util::load::{FailureKind, Load, Report, Target};
use util::wire::wait_lock;
use util::{inherited_ids, listen_addr, Peer, Tap, Tapped, TestDir, TIMEOUT};

/// Live members at most (killed and exited ones do not count).
const MAX_LIVE: usize = 4;
const CLIENTS: usize = 3;

/// xorshift64*: small, seeded, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Delayed(u64),
    NoReady,
}

/// A window of time: a kill, from just before the signal to the reaping.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

struct Member {
    peer: Peer,
    kind: Kind,
    /// When `inherited` was read, and whether it listed the listener.
    inherited: Option<(Instant, bool)>,
    listening_at: Option<Instant>,
    ready_at: Option<Instant>,
    completed_at: Option<Instant>,
    killed: Option<Window>,
    exited: bool,
    /// When `exit` was read.
    exit_at: Option<Instant>,
    /// The message of its `error` event.
    error: Option<String>,
}

impl Member {
    fn alive(&self) -> bool {
        self.killed.is_none() && !self.exited
    }

    /// Whether it was alive and had not stepped down at `t`, as far as the test knows.
    fn holding_at(&self, t: Instant) -> bool {
        self.killed.is_none_or(|k| k.from > t) && self.completed_at.is_none_or(|c| c > t)
    }

    fn label(&self) -> &str {
        &self.peer.label
    }
}

/// Where the listener had no certain holder: from the kill of `killed` until some live member
/// was seen listening again.
struct Outage {
    from: Instant,
    killed: String,
}

struct Chaos {
    dir: TestDir,
    rng: Rng,
    tap: Tap,
    events: Receiver<Tapped>,
    members: Vec<Member>,
    /// Members that printed `ready` and not `upgrade_complete` (dead ones included).
    owners: BTreeSet<usize>,
    /// The listener's address, fixed by the first member: every later one asks for the same
    /// port, so that one that must bind fresh gets it.
    addr: String,
    load: Option<Load>,
    epoch: Instant,
    /// Kills of members that were serving (had printed `listening`): requests under way then
    /// may be lost.
    serving_kills: Vec<(Window, String)>,
    outages: Vec<Outage>,
    /// What happened, for failure messages and the summary.
    log: Vec<String>,
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    starts: [u32; 3],
    kills_of_owners: u32,
    kills_of_newcomers: u32,
    readies: u32,
    step_downs: u32,
    checkpoints: u32,
    outages: u32,
    zero_owner_checkpoints: u32,
    /// Kills of a newcomer that may have been in its handshake, after which the owners were
    /// asked whether they stayed: [stayed, stepped down, could not be asked].
    probes: [u32; 3],
    /// Members that printed `error` (any is a failure: see `check_errors`).
    errors: u32,
}

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let (tap, events) = mpsc::channel();
        Chaos {
            dir: TestDir::new(),
            rng: Rng::new(seed),
            tap,
            events,
            members: Vec::new(),
            owners: BTreeSet::new(),
            addr: String::new(),
            load: None,
            epoch: Instant::now(),
            serving_kills: Vec::new(),
            outages: Vec::new(),
            log: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn note(&mut self, what: String) {
        let ms = self.epoch.elapsed().as_secs_f64() * 1e3;
        self.log.push(format!("{ms:10.3} ms  {what}"));
    }

    /// Fails the test with `message`, the log of actions and every member's output.
    #[track_caller]
    fn fail(&self, message: &str) -> ! {
        let mut text = format!("{message}\n--- actions:\n{}\n", self.log.join("\n"));
        for member in &self.members {
            text.push_str(&format!("--- {}", member.peer.take_diagnostics()));
        }
        panic!("{text}")
    }

    fn live(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].alive()).collect()
    }

    fn live_owners(&self) -> Vec<usize> {
        self.owners.iter().copied().filter(|&i| self.members[i].alive()).collect()
    }

    // -----------------------------------------------------------------------------------------
    // Events

    /// Processes every event read so far.
    fn pump(&mut self) {
        while let Ok(tapped) = self.events.try_recv() {
            self.process(tapped);
        }
    }

    /// Waits for the next event and processes it; fails with `waiting_for` after [`TIMEOUT`].
    fn pump_one(&mut self, deadline: Instant, waiting_for: &str) {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(tapped) => self.process(tapped),
            Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {waiting_for}")),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the test holds a sender"),
        }
    }

    fn process(&mut self, tapped: Tapped) {
        let Some(i) = self.members.iter().position(|m| m.label() == tapped.label) else {
            self.fail(&format!("an event from an unknown peer: {tapped:?}"))
        };
        let name = tapped.event["event"].as_str().unwrap_or_default().to_string();
        let label = tapped.label.clone();
        let at = tapped.at;
        match name.as_str() {
            "inherited" => {
                let ids = inherited_ids(&tapped.event);
                self.members[i].inherited = Some((at, ids.iter().any(|id| id == "web")));
                self.note(format!("{label}: inherited {ids:?}"));
            }
            "listening" => {
                let addr = listen_addr(&tapped.event, "web");
                if addr != self.addr {
                    self.fail(&format!("{label} listens on {addr}, not on {}", self.addr));
                }
                self.members[i].listening_at = Some(at);
                self.note(format!("{label}: listening"));
            }
            "ready" => {
                self.members[i].ready_at = Some(at);
                self.owners.insert(i);
                self.stats.readies += 1;
                self.note(format!("{label}: ready"));
            }
            "upgrade_complete" => {
                if !self.owners.remove(&i) {
                    self.fail(&format!("{label} printed upgrade_complete but was not owner"));
                }
                self.members[i].completed_at = Some(at);
                self.stats.step_downs += 1;
                self.note(format!("{label}: upgrade_complete"));
            }
            "exit" => {
                self.members[i].exit_at = Some(at);
                self.note(format!("{label}: exit {}", tapped.event));
            }
            "error" => {
                // Judged at the end (see `check_errors`), when everything is known.
                let message = tapped.event["message"].as_str().unwrap_or_default().to_string();
                self.note(format!("{label}: error {message:?}"));
                self.members[i].error = Some(message);
                self.members[i].peer.expect_error_exit();
                self.members[i].exited = true;
                self.stats.errors += 1;
            }
            _ => self.fail(&format!("unexpected event from {label}: {}", tapped.event)),
        }
    }

    /// Processes what was read, then makes sure of what must follow: while two live members
    /// are owners, one of them must step down; every member that stepped down exits cleanly.
    fn settle_owners(&mut self) {
        self.pump();
        let deadline = Instant::now() + TIMEOUT;
        while self.live_owners().len() > 1 {
            let owners: Vec<String> =
                self.live_owners().iter().map(|&i| self.members[i].label().to_string()).collect();
            self.pump_one(deadline, &format!("one of the live owners {owners:?} to step down (two owners)"));
        }
        for i in 0..self.members.len() {
            let member = &mut self.members[i];
            if member.completed_at.is_some() && member.alive() {
                member.peer.expect_clean_exit();
                member.exited = true;
                let label = member.label().to_string();
                self.note(format!("{label}: exited cleanly"));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Actions

    fn start(&mut self, kind: Kind) -> usize {
        let id = format!("m{}", self.members.len());
        let listen = format!("web=tcp:{}", if self.addr.is_empty() { "127.0.0.1:0" } else { &self.addr });
        let delay;
        let mut args = vec!["--id", id.as_str(), "--listen", listen.as_str(), "--serve"];
        match kind {
            Kind::Plain => {}
            Kind::Delayed(ms) => {
                delay = ms.to_string();
                args.extend(["--ready-delay-ms", delay.as_str()]);
            }
            Kind::NoReady => args.push("--no-ready"),
        }
        let peer = Peer::start_tapped(self.dir.path(), &args, self.tap.clone());
        self.stats.starts[match kind {
            Kind::Plain => 0,
            Kind::Delayed(_) => 1,
            Kind::NoReady => 2,
        }] += 1;
        self.members.push(Member {
            peer,
            kind,
            inherited: None,
            listening_at: None,
            ready_at: None,
            completed_at: None,
            killed: None,
            exited: false,
            exit_at: None,
            error: None,
        });
        self.note(format!("start {id} {kind:?}"));
        self.members.len() - 1
    }

    fn random_kind(&mut self) -> Kind {
        match self.rng.below(10) {
            0..=4 => Kind::Plain,
            5..=7 => Kind::Delayed(1 + self.rng.below(100)),
            _ => Kind::NoReady,
        }
    }

    /// SIGKILLs member `k`, then works out from its complete output what its death may cost.
    fn kill(&mut self, k: usize) {
        self.pump();
        let from = Instant::now();
        self.members[k].peer.kill();
        let died = Window { from, to: Instant::now() };
        self.members[k].killed = Some(died);
        // Every line it printed reaches the tap before its own queue ends.
        self.members[k].peer.drain_to_eof();
        self.pump();
        let member = &self.members[k];
        let label = member.label().to_string();
        let printed = member.peer.printed();
        let printed_event = |name: &str| printed.iter().any(|e| e["event"] == name);
        let listened = printed_event("listening");
        let held = listened || member.inherited.is_some_and(|(_, web)| web);
        let was_owner = printed_event("ready") && !printed_event("upgrade_complete");
        if was_owner {
            self.stats.kills_of_owners += 1;
        } else {
            self.stats.kills_of_newcomers += 1;
        }
        // A member serves from its `listening` on: the connections it accepted die with it.
        if listened {
            self.serving_kills.push((died, label.clone()));
        }
        // Did another member certainly hold the listener when this one died? One that was seen
        // listening (or inheriting it) before the kill, is alive, and has not stepped down.
        // An owner may have stepped down for the dead member if that one had got as far as
        // `listening` and calls ready (it may have been in its ready handshake): then ask the
        // owner. If the dead member was an owner, the other owners stepped down for it.
        let may_have_been_in_handshake = listened && !was_owner && member.kind != Kind::NoReady;
        let owners_stayed = match (listened, may_have_been_in_handshake) {
            (false, _) => true,
            (true, true) if self.live_owners().is_empty() => true,
            (true, true) => {
                let stepped_down = self.owners_that_stepped_down(k);
                match &stepped_down {
                    Some(owners) if owners.is_empty() => self.stats.probes[0] += 1,
                    Some(_) => self.stats.probes[1] += 1,
                    None => self.stats.probes[2] += 1,
                }
                stepped_down.is_some_and(|owners| owners.is_empty())
            }
            (true, false) => !was_owner,
        };
        let other_holder = held
            && self.members.iter().enumerate().any(|(i, m)| {
                let seen_holding = m.listening_at.is_some_and(|t| t <= from)
                    || m.inherited.is_some_and(|(t, web)| web && t <= from);
                i != k
                    && m.alive()
                    && m.completed_at.is_none()
                    && seen_holding
                    && (owners_stayed || !self.owners.contains(&i))
            });
        let outage = held && !other_holder;
        self.note(format!(
            "kill {label} (held the listener: {held}, serving: {listened}, owner: {was_owner}, \
             owners stayed: {owners_stayed}, last holder: {outage})"
        ));
        if outage {
            self.stats.outages += 1;
            self.outages.push(Outage { from, killed: label });
        }
    }

    /// Which live owners stepped down with the death of newcomer `k`, which may have died in
    /// its ready handshake. With the coordination lock held by the test
    /// (so that no other newcomer can be in a session), each owner is asked for a session on
    /// its upgrade socket: it accepts once its session with the dead newcomer ended, and sends
    /// the descriptor list only if it is still owner; one that stepped down closes its socket.
    /// The probe leaves before receiving the descriptors, which ends the session.
    ///
    /// Each one that closed its upgrade socket must then print `upgrade_complete`.
    ///
    /// `None` when the question cannot be asked safely: a live `--no-ready` member may hold
    /// the lock forever (then the owners count as possibly stepped down).
    fn owners_that_stepped_down(&mut self, k: usize) -> Option<Vec<usize>> {
        let owners = self.live_owners();
        if self.live().iter().any(|&i| i != k && self.members[i].kind == Kind::NoReady) {
            return None;
        }
        let lock = wait_lock(self.dir.path(), TIMEOUT);
        let stepped_down: Vec<usize> = owners
            .into_iter()
            .filter(|&i| {
                let socket = self.dir.join(&format!("{}.sock", self.members[i].label()));
                let Ok(mut stream) = UnixStream::connect(socket) else { return true };
                stream.set_read_timeout(Some(TIMEOUT)).expect("set_read_timeout");
                let mut length = [0u8; 4];
                stream.read_exact(&mut length).is_err()
            })
            .collect();
        drop(lock);
        let deadline = Instant::now() + TIMEOUT;
        for &i in &stepped_down {
            while self.members[i].completed_at.is_none() && self.members[i].alive() {
                let what = format!(
                    "{} to print upgrade_complete: it closed its upgrade socket",
                    self.members[i].label()
                );
                self.pump_one(deadline, &what);
            }
        }
        Some(stepped_down)
    }

    /// The exact check: with the coordination lock held by the test, nobody can become owner,
    /// so the member named in the owner file is the only one that may be (or, after the death
    /// of a newcomer that the owner had stepped down for, nobody is).
    fn checkpoint(&mut self) {
        let lock = wait_lock(self.dir.path(), TIMEOUT);
        self.stats.checkpoints += 1;
        let named = self.dir.owner();
        let x = self.members.iter().position(|m| m.label() == named);
        self.note(format!("checkpoint: the owner file names {named:?}"));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.pump();
            let others: Vec<usize> = self.live_owners().into_iter().filter(|&i| Some(i) != x).collect();
            let named_pending = x.is_some_and(|x| {
                let m = &self.members[x];
                m.alive() && m.completed_at.is_none() && m.ready_at.is_none()
            });
            if others.is_empty() && !named_pending {
                break;
            }
            let others: Vec<&str> = others.iter().map(|&i| self.members[i].label()).collect();
            self.pump_one(
                deadline,
                &format!(
                    "the owners {others:?} to step down and {named:?} to be ready (the owner file names {named:?})"
                ),
            );
        }
        self.settle_owners();
        match x.filter(|&x| self.members[x].alive() && self.owners.contains(&x)) {
            Some(x) => {
                let label = self.members[x].label().to_string();
                self.load().wait_more_served_by(&label, 3);
            }
            None => self.stats.zero_owner_checkpoints += 1,
        }
        drop(lock);
    }

    fn load(&self) -> &Load {
        self.load.as_ref().expect("the load runs")
    }

    // -----------------------------------------------------------------------------------------
    // The run

    fn run(&mut self, rounds: u64) {
        // The first member: binds the listener, becomes owner; the load starts.
        let first = self.start(Kind::Plain);
        let (listening, _) = self.members[first].peer.wait_for_timed("listening");
        self.addr = listen_addr(&listening, "web");
        self.members[first].peer.wait_for("ready");
        let target = Target::Tcp(self.addr.clone());
        self.load = Some(Load::start(vec![target], CLIENTS));
        let deadline = Instant::now() + TIMEOUT;
        while !self.owners.contains(&first) {
            self.pump_one(deadline, "the first member's ready");
        }
        self.load().wait_served_by("m0", 1);

        for round in 0..rounds {
            self.note(format!("round {round}"));
            let live = self.live();
            let no_ready_alive = live.iter().any(|&i| self.members[i].kind == Kind::NoReady);
            let roll = self.rng.below(100);
            if live.is_empty() || (roll < 45 && live.len() < MAX_LIVE) {
                let kind = self.random_kind();
                let started = self.start(kind);
                // Sometimes let it get somewhere first, unless a `--no-ready` member may hold
                // the lock for good.
                if self.rng.chance(50) && !no_ready_alive {
                    let stages: &[&str] = if kind == Kind::NoReady {
                        &["inherited", "listening"]
                    } else {
                        &["inherited", "listening", "ready"]
                    };
                    let stage = stages[self.rng.below(stages.len() as u64) as usize];
                    self.wait_stage(started, stage);
                }
                // Sometimes kill someone right after, at a random moment of the handoff.
                if self.rng.chance(30) {
                    self.perturb();
                    let victims = self.live();
                    let victim = if self.rng.chance(50) {
                        Some(started)
                    } else {
                        victims.get(self.rng.below(victims.len() as u64) as usize).copied()
                    };
                    if let Some(victim) = victim.filter(|&v| self.members[v].alive()) {
                        self.kill(victim);
                    }
                }
            } else if roll < 75 && !live.is_empty() {
                let victim = live[self.rng.below(live.len() as u64) as usize];
                self.perturb();
                self.kill(victim);
            } else if roll < 90 && !no_ready_alive {
                self.checkpoint();
            } else {
                let n = 5 + self.rng.below(40);
                self.note(format!("let {n} requests go"));
                self.load().wait_more_sent(n);
            }
            self.settle_owners();
        }

        // The end: the stuck newcomers go, the others finish; a last member takes over and
        // serves.
        for i in self.live() {
            if self.members[i].kind == Kind::NoReady {
                self.kill(i);
            }
        }
        self.settle_owners();
        let deadline = Instant::now() + TIMEOUT;
        while let Some(i) = self.live().into_iter().find(|&i| self.members[i].ready_at.is_none()) {
            let label = self.members[i].label().to_string();
            self.pump_one(deadline, &format!("{label} to be ready"));
            self.settle_owners();
        }
        let last = self.start(Kind::Plain);
        let label = self.members[last].label().to_string();
        while self.members[last].ready_at.is_none() {
            if let Some(error) = &self.members[last].error {
                self.fail(&format!("the last member {label} failed: {error:?}"));
            }
            self.pump_one(deadline, &format!("the last member {label} to be ready"));
        }
        self.settle_owners();
        self.checkpoint();
        if self.dir.owner() != label || self.live_owners() != [last] {
            self.fail(&format!("the last member {label} must be the only owner"));
        }
    }

    /// Waits until member `i` printed `stage` (`inherited`, `listening` or `ready`).
    fn wait_stage(&mut self, i: usize, stage: &str) {
        self.note(format!("wait for {} to be {stage}", self.members[i].label()));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = &self.members[i];
            let reached = match stage {
                "inherited" => m.inherited.is_some(),
                "listening" => m.listening_at.is_some(),
                _ => m.ready_at.is_some(),
            };
            if reached || m.error.is_some() {
                return;
            }
            let what = format!("{} to be {stage}", m.label());
            self.pump_one(deadline, &what);
        }
    }

    /// A random pause before a kill, so that kills land at random moments of what the members
    /// are doing. Perturbation, not synchronisation: nothing waits for anything here.
    fn perturb(&mut self) {
        match self.rng.below(4) {
            0 => {}
            1 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(self.rng.below(20_000))),
        }
    }

    /// No member may fail. (An owner that answered "stepping down" to a newcomer that then
    /// died before writing the owner file sees it die and stays the owner, so a later newcomer
    /// never finds the group without an owner while the old one still holds the listener.)
    fn check_errors(&self) {
        if let Some(r) = self.members.iter().find(|m| m.error.is_some()) {
            self.fail(&format!("{} failed: {:?}", r.label(), r.error.as_deref().unwrap_or_default()));
        }
    }

    /// Every failed request must be explained by a kill:
    ///
    /// - reset or closed without an answer, while a member that was serving died (its accepted
    ///   connections die with it, and so does the backlog of a listener it alone held);
    /// - refused (or reset, or closed) from the kill of the last member that certainly held
    ///   the listener until some live member was seen listening again.
    ///
    /// No timeouts, no bad answers, no refusal while a member that had been seen listening (or
    /// inheriting the listener) was alive and had not stepped down.
    fn check_load(&mut self, report: &Report) -> (usize, usize) {
        let outages: Vec<Window> = self
            .outages
            .iter()
            .map(|outage| {
                // Until the first member seen listening after the kill, alive then.
                let to = self
                    .members
                    .iter()
                    .filter_map(|m| m.listening_at.filter(|&t| t >= outage.from && m.holding_at(t)))
                    .min()
                    .unwrap_or_else(|| {
                        self.fail(&format!("nobody listened again after the kill of {}", outage.killed))
                    });
                Window { from: outage.from, to }
            })
            .collect();
        let (mut lost, mut refused, mut unexpected) = (0, 0, Vec::new());
        for failure in &report.failures {
            let lossy = matches!(failure.kind, FailureKind::Reset | FailureKind::Closed);
            let in_kill = lossy && self.serving_kills.iter().any(|(w, _)| failure.overlaps(w.from, w.to));
            let in_outage =
                matches!(failure.kind, FailureKind::Refused | FailureKind::Reset | FailureKind::Closed)
                    && outages.iter().any(|w| failure.overlaps(w.from, w.to));
            if in_kill {
                lost += 1;
            } else if in_outage {
                refused += 1;
            } else {
                unexpected.push(failure.describe(self.epoch));
            }
        }
        if !unexpected.is_empty() {
            let ms = |t: Instant| t.saturating_duration_since(self.epoch).as_secs_f64() * 1e3;
            let windows: Vec<String> =
                outages.iter().map(|w| format!("{:.3}..{:.3} ms", ms(w.from), ms(w.to))).collect();
            self.fail(&format!(
                "{} failed requests are not explained by a kill ({}; outages {windows:?}):\n{}",
                unexpected.len(),
                report.summary(),
                unexpected.join("\n")
            ));
        }
        (lost, refused)
    }
}

fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(seed) => seed.trim().parse().unwrap_or_else(|_| panic!("CHAOS_SEED={seed:?} is not a number")),
        Err(_) => {
            let nanos =
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
            (nanos as u64) ^ (u64::from(std::process::id()) << 32)
        }
    }
}

fn rounds(default: u64) -> u64 {
    match std::env::var("CHAOS_ROUNDS") {
        Ok(rounds) => {
            rounds.trim().parse().unwrap_or_else(|_| panic!("CHAOS_ROUNDS={rounds:?} is not a number"))
        }
        Err(_) => default,
    }
}

fn chaos(test: &str, default_rounds: u64) {
    let (seed, rounds) = (seed(), rounds(default_rounds));
    println!("chaos: {rounds} rounds, seed {seed} (replay: CHAOS_SEED={seed} CHAOS_ROUNDS={rounds} {test})");
    let started = Instant::now();
    let mut chaos = Chaos::new(seed);
    chaos.run(rounds);
    let report = chaos.load.take().expect("the load runs").stop();
    chaos.check_errors();
    let (lost, refused) = chaos.check_load(&report);
    if std::env::var_os("CHAOS_VERBOSE").is_some() {
        println!("{}", chaos.log.join("\n"));
    }
    let s = &chaos.stats;
    println!(
        "chaos: seed {seed}, {rounds} rounds in {:.2} s: {} members started ({} plain, {} delayed, {} no-ready), \
         {} kills ({} of owners), {} ready, {} stepped down, {} outages, {} checkpoints ({} without owner); \
         after kills of newcomers that may have been in their handshake the owners stayed {} times, \
         stepped down {} times, could not be asked {} times; \
         {} newcomers could not bind afresh while an owner that stepped down still held the listener",
        started.elapsed().as_secs_f64(),
        chaos.members.len(),
        s.starts[0],
        s.starts[1],
        s.starts[2],
        s.kills_of_owners + s.kills_of_newcomers,
        s.kills_of_owners,
        s.readies,
        s.step_downs,
        s.outages,
        s.checkpoints,
        s.zero_owner_checkpoints,
        s.probes[0],
        s.probes[1],
        s.probes[2],
        s.errors,
    );
    println!(
        "chaos: {}; allowed: {lost} lost with a killed member, {refused} while nobody held the listener",
        report.summary()
    );
}

#[test]
fn chaos_rounds() {
    chaos("cargo test -p tableroll-testkit --test chaos chaos_rounds", 15);
}

#[test]
#[ignore = "long: run by scripts/chaos.sh and scripts/long-tests.sh"]
fn chaos_long() {
    chaos("cargo test -p tableroll-testkit --release --test chaos chaos_long -- --ignored", 100);
}
