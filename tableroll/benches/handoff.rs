//! Whole handoffs of 1 to 10 000 TCP listeners.
//!
//! ```text
//! cargo bench -p tableroll --bench handoff
//! ```
//!
//! Each iteration starts a newcomer that
//!
//! - `new`: joins the group (lock, connect, every descriptor received) and is dropped without
//!   calling `ready()`, so the owner stays the owner: the time inside the constructor, the
//!   figure the Go original reports;
//! - `handoff`: joins, claims every listener and calls `ready()`: the newcomer's whole part of
//!   a handoff (waiting for the old owner's `upgrade_complete()` is not timed).
//!
//! Group `in_process`: the owner and the newcomer are two upgraders of this process (they
//! behave like two processes: the lock is per open file description and each has its own
//! upgrade socket and serving thread); the newcomer of one iteration is the owner of the next.
//! That holds 2N descriptors in one process, so the soft descriptor limit is raised to the hard
//! one, and a size that still does not fit is skipped with a note.
//!
//! Group `two_processes`: the owner is a helper process (this benchmark re-executed); after
//! each timed handoff to this process, the helper takes the listeners back, untimed. Each
//! process holds N descriptors, so 10 000 fit under a hard limit of 20 000.

use std::io::{BufRead, BufReader, Lines, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use tableroll::Upgrader;

const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
/// Set in the helper process's environment.
const HELPER: &str = "TABLEROLL_BENCH_HANDOFF_HELPER";
/// A bound on waiting for an old owner to be told, to fail rather than hang.
const NOTICE_LIMIT: Duration = Duration::from_secs(30);

fn main() {
    // To the hard limit.
    if let Err(e) = tableroll_load::raise_nofile_limit(u64::MAX) {
        eprintln!("could not raise the descriptor limit: {e}");
    }
    if std::env::var_os(HELPER).is_some() {
        helper::run();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

criterion_group!(benches, in_process, two_processes);

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ln-{i}")).collect()
}

/// Joins the group in `dir` as `id`; with `claim`, claims every listener and calls `ready()`.
fn join(dir: &Path, id: String, ids: &[String], claim: bool) -> Upgrader {
    let newcomer = Upgrader::builder(dir).id(id).build().expect("a newcomer");
    assert_eq!(newcomer.inherited_ids().len(), ids.len(), "every listener inherited");
    if claim {
        for id in ids {
            newcomer.fds().get::<TcpListener>(id).expect("a stored listener").expect("inherited");
        }
        newcomer.ready().expect("ready");
    }
    newcomer
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    let time = if n >= 1_000 { Duration::from_secs(5) } else { Duration::from_secs(2) };
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(time)
        .throughput(Throughput::Elements(n as u64));
}

fn in_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_process");
    for n in SIZES {
        if fd_limit() < 2 * n as u64 + 256 {
            eprintln!(
                "in_process: skipping {n} listeners: 2 x {n} descriptors do not fit the limit {}",
                fd_limit()
            );
            continue;
        }
        configure(&mut group, n);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ids = ids(n);
        let mut owner = Upgrader::builder(dir.path()).id("gen-0").build().expect("the first owner");
        for id in &ids {
            owner.fds().listen_tcp(id, "127.0.0.1:0").expect("a listener");
        }
        owner.ready().expect("the first owner ready");
        let mut generation = 0u64;
        let mut next_id = || {
            generation += 1;
            format!("gen-{generation}")
        };
        group.bench_function(BenchmarkId::new("new", n), |b| {
            b.iter_custom(|iters| {
                (0..iters).map(|_| timed(|| join(dir.path(), next_id(), &ids, false)).0).sum()
            })
        });
        group.bench_function(BenchmarkId::new("handoff", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (elapsed, newcomer) = timed(|| join(dir.path(), next_id(), &ids, true));
                    total += elapsed;
                    assert!(
                        owner.upgrade_complete().wait_timeout(NOTICE_LIMIT),
                        "the old owner was not told"
                    );
                    owner = newcomer;
                }
                total
            })
        });
    }
    group.finish();
}

fn two_processes(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_processes");
    for n in SIZES {
        configure(&mut group, n);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ids = ids(n);
        let mut helper = Helper::start(dir.path(), n);
        let mut generation = 0u64;
        let mut next_id = || {
            generation += 1;
            format!("here-{generation}")
        };
        group.bench_function(BenchmarkId::new("new", n), |b| {
            b.iter_custom(|iters| {
                (0..iters).map(|_| timed(|| join(dir.path(), next_id(), &ids, false)).0).sum()
            })
        });
        group.bench_function(BenchmarkId::new("handoff", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (elapsed, here) = timed(|| join(dir.path(), next_id(), &ids, true));
                    total += elapsed;
                    helper.command("take");
                    assert!(
                        here.upgrade_complete().wait_timeout(NOTICE_LIMIT),
                        "not told of the helper's takeover"
                    );
                }
                total
            })
        });
    }
    group.finish();
}

/// The helper process and its command pipe.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Helper {
    /// Starts a helper that owns `n` new listeners in `dir`.
    fn start(dir: &Path, n: usize) -> Helper {
        let mut child = Command::new(std::env::current_exe().expect("this benchmark's path"))
            .env(HELPER, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the helper");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut helper = Helper { child, stdin, stdout };
        helper.command(&format!("init {n} {}", dir.display()));
        helper
    }

    /// Sends one command line and waits for its `ok`.
    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("writing to the helper");
        let answer = self.stdout.next().expect("the helper answers").expect("reading from the helper");
        assert_eq!(answer, "ok", "the helper failed {line:?}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper's side: `init N DIR` creates the first owner of N listeners; `take` takes them
/// back from the benchmark's newcomer. Each answered by `ok` once ready.
mod helper {
    use super::*;

    pub fn run() {
        let (mut dir, mut ids, mut current, mut generation) =
            (String::new(), Vec::new(), None::<Upgrader>, 0);
        for line in std::io::stdin().lock().lines() {
            let line = line.expect("reading a command");
            if let Some(rest) = line.strip_prefix("init ") {
                let (n, path) = rest.split_once(' ').expect("init N DIR");
                (dir, ids) = (path.to_string(), super::ids(n.parse().expect("a count")));
                let owner = Upgrader::builder(&dir).id("helper-0").build().expect("the first owner");
                for id in &ids {
                    owner.fds().listen_tcp(id, "127.0.0.1:0").expect("a listener");
                }
                owner.ready().expect("ready");
                current = Some(owner);
            } else {
                assert_eq!(line, "take", "unknown command");
                // The benchmark took over from the current one: let its copies go first.
                drop(current.take());
                generation += 1;
                current = Some(join(Path::new(&dir), format!("helper-{generation}"), &ids, true));
            }
            println!("ok");
        }
    }
}

fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}
