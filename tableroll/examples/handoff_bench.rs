//! Measures handoffs and prints the figures.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/handoff_bench [ROUNDS]
//! ```
//!
//! - `new`: a newcomer's time inside `Builder::build()` (lock, connect, receive everything),
//!   with one listener and with 1001 listeners, over ROUNDS handoffs (default 200 and 50);
//! - `ready`: its time inside `ready()` (handshake, owner file, unlock);
//! - contention: five newcomers started at once (threads of this process, then real peer
//!   processes if `target/release/examples/peer` is built), time from start until the last one
//!   is ready. Each takes over from the one before, so they pass the lock along.
//!
//! Two upgraders in one process behave like two processes: the lock is per open file
//! description and each has its own upgrade socket and serving thread.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tableroll::Upgrader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map(|r| r.parse()).transpose()?.unwrap_or(200);
    tableroll_load::raise_nofile_limit(u64::MAX)?; // to the hard limit
    println!("tableroll handoff benchmark ({} cores)", std::thread::available_parallelism()?.get());
    println!("{:<34} {:>10} {:>10} {:>10} {:>10}", "measure", "p50", "p90", "max", "n");
    handoffs("new+ready, 1 listener", 1, rounds)?;
    handoffs("new+ready, 1001 listeners", 1001, (rounds / 4).max(5))?;
    let mut threads = Vec::new();
    for _ in 0..(rounds / 10).max(5) {
        threads.push(contention_threads(5)?);
    }
    report("5 newcomers at once (threads)", &mut threads);
    if let Some(peer) = peer_binary() {
        let mut procs = Vec::new();
        for _ in 0..(rounds / 20).max(5) {
            procs.push(contention_processes(&peer, 5)?);
        }
        report("5 newcomers at once (processes)", &mut procs);
    } else {
        println!("(build the peer with `cargo build --release --example peer` to time real processes)");
    }
    Ok(())
}

fn handoffs(label: &str, listeners: usize, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let ids: Vec<String> = (0..listeners).map(|i| format!("ln-{i}")).collect();
    let mut owner = Upgrader::builder(dir.path()).id("gen-0").build()?;
    for id in &ids {
        owner.fds().listen_tcp(id, "127.0.0.1:0")?;
    }
    owner.ready()?;
    let (mut new_us, mut ready_us) = (Vec::new(), Vec::new());
    for generation in 1..=rounds {
        let start = Instant::now();
        let next = Upgrader::builder(dir.path()).id(format!("gen-{generation}")).build()?;
        new_us.push(start.elapsed());
        for id in &ids {
            next.fds().get::<TcpListener>(id)?.ok_or("listener not inherited")?;
        }
        let start = Instant::now();
        next.ready()?;
        ready_us.push(start.elapsed());
        if !owner.upgrade_complete().wait_timeout(Duration::from_secs(30)) {
            return Err("the old owner was not told".into());
        }
        owner = next;
    }
    report(&format!("{label}: new"), &mut new_us);
    report(&format!("{label}: ready"), &mut ready_us);
    Ok(())
}

/// Starts `n` newcomers at once on threads; returns the time until the last is ready.
fn contention_threads(n: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let owner = Upgrader::builder(dir.path()).id("owner").build()?;
    owner.fds().listen_tcp("web", "127.0.0.1:0")?;
    owner.ready()?;
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for i in 0..n {
        let (tx, path) = (tx.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let result = (|| -> tableroll::Result<Upgrader> {
                let up = Upgrader::builder(path).id(format!("n{i}")).build()?;
                up.fds().listen_tcp("web", "127.0.0.1:0")?;
                up.ready()?;
                Ok(up)
            })();
            // Keep each upgrader alive (in the channel) so it can hand over to the next.
            let _ = tx.send(result.map(|up| (start.elapsed(), up)));
        });
    }
    drop(tx);
    let mut last = Duration::ZERO;
    let mut alive = Vec::new();
    for result in rx {
        let (elapsed, up) = result?;
        last = last.max(elapsed);
        alive.push(up);
    }
    if alive.len() != n {
        return Err("not every newcomer became ready".into());
    }
    Ok(last)
}

fn peer_binary() -> Option<std::path::PathBuf> {
    let peer = std::env::current_exe().ok()?.with_file_name("peer");
    peer.exists().then_some(peer)
}

/// Kills and reaps the peers it holds when dropped.
struct Peers(Vec<Child>);

impl Drop for Peers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `n` peer processes at once; returns the time until the last printed `ready`.
fn contention_processes(peer: &std::path::Path, n: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let spawn = |id: &str| {
        Command::new(peer)
            .args(["--dir", &dir.path().to_string_lossy(), "--id", id, "--listen", "web=tcp:127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    };
    let mut peers = Peers(vec![spawn("owner")?]);
    wait_for_ready(&mut peers.0[0])?;
    let start = Instant::now();
    for i in 0..n {
        peers.0.push(spawn(&format!("n{i}"))?);
    }
    let (tx, rx) = mpsc::channel();
    for child in &mut peers.0[1..] {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let ready = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains("\"event\":\"ready\""));
            let _ = tx.send(ready.then(|| start.elapsed()));
        });
    }
    drop(tx);
    let mut last = Duration::ZERO;
    for _ in 0..n {
        let elapsed = rx.recv_timeout(Duration::from_secs(30))?.ok_or("a peer exited before ready")?;
        last = last.max(elapsed);
    }
    Ok(last)
}

fn wait_for_ready(child: &mut Child) -> Result<(), Box<dyn std::error::Error>> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next().transpose()? {
        if line.contains("\"event\":\"ready\"") {
            // Keep draining in the background so the peer never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(());
        }
    }
    Err("the owner exited before ready".into())
}

fn report(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    println!(
        "{label:<34} {:>10} {:>10} {:>10} {:>10}",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(1.0)),
        samples.len()
    );
}
