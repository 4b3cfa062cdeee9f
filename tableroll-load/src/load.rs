//! The closed-loop driver: client threads that each send one request after another to their
//! target, numbered in the order they start, and hand every finished request to a
//! [`Recorder`] of the caller's (one per client: the drill adds up statistics, the test kit
//! keeps a report that tests wait on). The load can be paused (until no request is under
//! way), resumed and stopped; dropped, it stops too.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{Client, Failure};
use crate::net::Target;
use crate::sys::now_ns;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where the requests go.
    pub targets: Vec<Target>,
    /// How many client threads for each target.
    pub clients_per_target: usize,
    /// Whether each client reuses its connection.
    pub keep_alive: bool,
    /// The limit on each connect, read and write.
    pub timeout: Duration,
    /// How long a client waits after a failed request before its next one (so that a
    /// listener nobody holds is not hammered in a tight loop): pacing, not synchronisation.
    pub pause_after_failure: Duration,
}

impl LoadConfig {
    /// `clients_per_target` clients on each of `targets`, a new connection per request, a
    /// `timeout` on each step, and no pause after a failure.
    pub fn new(targets: Vec<Target>, clients_per_target: usize, timeout: Duration) -> LoadConfig {
        LoadConfig {
            targets,
            clients_per_target,
            keep_alive: false,
            timeout,
            pause_after_failure: Duration::ZERO,
        }
    }
}

/// One finished request.
#[derive(Debug)]
pub struct Outcome<A> {
    /// Its number, from 1, in the order requests started (over all clients).
    pub seq: u64,
    /// The index of its target in [`LoadConfig::targets`].
    pub target: usize,
    /// Just before it started (before connecting, if it connected).
    pub started: Instant,
    /// Just after it ended.
    pub ended: Instant,
    /// [`started`](Outcome::started) on the clock of [`now_ns`].
    pub started_ns: u64,
    /// [`ended`](Outcome::ended) on the clock of [`now_ns`].
    pub ended_ns: u64,
    /// Whether its client found its kept connection closed and replaced it (not a failure).
    pub reconnected: bool,
    /// The answer the recorder's [`check`](Recorder::check) made of the body, or the failure.
    pub result: Result<A, Failure>,
}

/// What a client does with its answers: one per client thread, returned by [`Load::stop`].
pub trait Recorder: Send + 'static {
    /// What a good answer carries (such as the id of the server that gave it).
    type Answer;

    /// Checks the body of a `200 OK` response: what it carries, or why it is a bad response.
    ///
    /// # Errors
    ///
    /// Why the body is not the one expected, for people.
    fn check(&self, body: &[u8]) -> Result<Self::Answer, String>;

    /// Takes one finished request. Called before the request stops counting as under way, so
    /// that once [`Load::pause`] returned, every request that ended has been recorded.
    fn record(&mut self, outcome: Outcome<Self::Answer>);
}

/// Which requests may start.
struct Gate {
    stop: bool,
    paused: bool,
    /// Requests under way.
    busy: usize,
    /// Requests started.
    started: u64,
}

struct Control {
    gate: Mutex<Gate>,
    changed: Condvar,
    failed: AtomicU64,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits while the load is paused; the next request's number, or `None` once stopped.
    fn enter(&self) -> Option<u64> {
        let mut gate = self.lock();
        while gate.paused && !gate.stop {
            gate = self.changed.wait(gate).unwrap_or_else(PoisonError::into_inner);
        }
        if gate.stop {
            return None;
        }
        gate.busy += 1;
        gate.started += 1;
        Some(gate.started)
    }

    fn leave(&self, failed: bool) {
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut gate = self.lock();
        gate.busy -= 1;
        if gate.paused && gate.busy == 0 {
            self.changed.notify_all();
        }
    }

    fn set(&self, change: impl FnOnce(&mut Gate)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }
}

/// Running client threads.
pub struct Load<R: Recorder> {
    control: Arc<Control>,
    clients: Vec<JoinHandle<R>>,
}

impl<R: Recorder> Load<R> {
    /// Starts `config.clients_per_target` client threads on each target; `recorder(i)` makes
    /// the recorder of a client of target `i`.
    ///
    /// # Errors
    ///
    /// A thread could not be spawned (those started are stopped first).
    pub fn start(config: &LoadConfig, mut recorder: impl FnMut(usize) -> R) -> io::Result<Load<R>> {
        let gate = Gate { stop: false, paused: false, busy: 0, started: 0 };
        let control =
            Arc::new(Control { gate: Mutex::new(gate), changed: Condvar::new(), failed: AtomicU64::new(0) });
        let mut load = Load { control, clients: Vec::new() };
        for (index, target) in config.targets.iter().enumerate() {
            for i in 0..config.clients_per_target {
                let client = Client::new(target.clone(), config.keep_alive, config.timeout);
                let (control, recorder) = (Arc::clone(&load.control), recorder(index));
                let pause = config.pause_after_failure;
                // On failure, dropping `load` stops the clients started.
                let thread = thread::Builder::new()
                    .name(format!("client-{index}-{i}"))
                    .spawn(move || run(client, index, recorder, &control, pause))?;
                load.clients.push(thread);
            }
        }
        Ok(load)
    }

    /// Requests started so far.
    pub fn started(&self) -> u64 {
        self.control.lock().started
    }

    /// Requests failed so far.
    pub fn failed(&self) -> u64 {
        self.control.failed.load(Ordering::Relaxed)
    }

    /// Stops starting requests and waits until none is under way, at most `limit`; returns
    /// whether none is.
    pub fn pause(&self, limit: Duration) -> bool {
        let mut gate = self.control.lock();
        gate.paused = true;
        let deadline = Instant::now() + limit;
        while gate.busy > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            gate = self.control.changed.wait_timeout(gate, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Starts requests again after [`Load::pause`].
    pub fn resume(&self) {
        self.control.set(|gate| gate.paused = false);
    }

    /// Stops the clients (each finishes its request under way) and returns their recorders,
    /// but for those of clients that panicked.
    pub fn stop(mut self) -> Vec<R> {
        self.halt()
    }

    fn halt(&mut self) -> Vec<R> {
        self.control.set(|gate| gate.stop = true);
        self.clients.drain(..).filter_map(|client| client.join().ok()).collect()
    }
}

impl<R: Recorder> Drop for Load<R> {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One client thread: requests until the load stops.
fn run<R: Recorder>(
    mut client: Client,
    target: usize,
    mut recorder: R,
    control: &Control,
    pause: Duration,
) -> R {
    while let Some(seq) = control.enter() {
        let (started, started_ns) = (Instant::now(), now_ns());
        let reconnects = client.reconnects();
        let result = client.request(|body| recorder.check(body));
        let (ended, ended_ns) = (Instant::now(), now_ns());
        let reconnected = client.reconnects() > reconnects;
        let failed = result.is_err();
        recorder.record(Outcome { seq, target, started, ended, started_ns, ended_ns, reconnected, result });
        control.leave(failed);
        if failed && !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    recorder
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;
    use crate::http::{read_head, write_response};

    /// Counts what it records, and sends each request's number.
    struct Count {
        seqs: mpsc::Sender<u64>,
        answered: u64,
        failed: u64,
    }

    impl Recorder for Count {
        type Answer = ();

        fn check(&self, body: &[u8]) -> Result<(), String> {
            (body == b"ok\n").then_some(()).ok_or_else(|| "not ok".into())
        }

        fn record(&mut self, outcome: Outcome<()>) {
            assert!(outcome.started <= outcome.ended && outcome.started_ns <= outcome.ended_ns);
            match outcome.result {
                Ok(()) => self.answered += 1,
                Err(_) => self.failed += 1,
            }
            let _ = self.seqs.send(outcome.seq);
        }
    }

    /// A server that answers `ok` on every connection, one after another.
    fn server() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::Tcp(listener.local_addr().unwrap().to_string());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                if read_head(&mut conn, &mut Vec::new()).is_ok() {
                    let _ = write_response(&mut conn, "200 OK", "ok\n", true);
                }
            }
        });
        target
    }

    fn start(targets: Vec<Target>, clients: usize) -> (Load<Count>, mpsc::Receiver<u64>) {
        let (tx, seqs) = mpsc::channel();
        let config = LoadConfig::new(targets, clients, Duration::from_secs(5));
        let load = Load::start(&config, |_| Count { seqs: tx.clone(), answered: 0, failed: 0 }).unwrap();
        (load, seqs)
    }

    #[test]
    fn every_request_is_numbered_and_recorded_once() {
        let (load, seqs) = start(vec![server(), server()], 2);
        // Let it run for 20 requests (the bound only fails a hung test).
        let mut numbers: Vec<u64> = (0..20)
            .map(|_| seqs.recv_timeout(Duration::from_secs(30)).expect("the load sends requests"))
            .collect();
        let counts = load.stop();
        assert_eq!(counts.len(), 4);
        assert_eq!(counts.iter().map(|c| c.failed).sum::<u64>(), 0);
        let answered: u64 = counts.iter().map(|c| c.answered).sum();
        drop(counts);
        numbers.extend(seqs.iter());
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=answered).collect::<Vec<u64>>());
    }

    #[test]
    fn a_paused_load_starts_nothing_until_resumed() {
        let (load, seqs) = start(vec![server()], 3);
        seqs.recv_timeout(Duration::from_secs(30)).expect("the load sends requests");
        assert!(load.pause(Duration::from_secs(30)));
        let started = load.started();
        assert_eq!(seqs.try_iter().count() as u64 + 1, started, "every request started was recorded");
        assert_eq!(load.started(), started);
        load.resume();
        seqs.recv_timeout(Duration::from_secs(30)).expect("the load runs again");
        assert!(load.started() > started);
        assert_eq!(load.failed(), 0);
    }
}
