//! Measures the stale-socket sweep a newcomer runs under the lock, and prints the figures.
//!
//! ```text
//! cargo build --release --example sweep_bench
//! target/release/examples/sweep_bench [HOST_SOCKETS] [STALE]... [--rounds N]
//! ```
//!
//! The host gets HOST_SOCKETS (default 15 000) unrelated Unix sockets, bound and listening in a
//! directory of their own, all of them rows of the kernel's table `/proc/net/unix` that the sweep
//! reads. Then, for each STALE count (default 100 and 2 000), a coordination directory gets that
//! many stale upgrade sockets (bound, then closed, as a crashed process leaves them) and one live
//! one, and the sweep is timed; each round checks that the stale ones are gone and the live one
//! is still there. The soft descriptor limit is raised to the hard one, since the host sockets
//! are held by this process.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut numbers = Vec::new();
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args.next().ok_or("--rounds N")?.parse()?;
        } else {
            numbers.push(arg.parse::<usize>()?);
        }
    }
    let host = numbers.first().copied().unwrap_or(15_000);
    let stale_counts = if numbers.len() > 1 { numbers[1..].to_vec() } else { vec![100, 2_000] };
    // To the hard limit.
    if let Err(e) = tableroll_load::raise_nofile_limit(u64::MAX) {
        eprintln!("could not raise the descriptor limit: {e}");
    }
    let host_dir = tempfile::tempdir()?;
    let _host: Vec<UnixListener> = (0..host)
        .map(|i| UnixListener::bind(host_dir.path().join(format!("host-{i}.sock"))))
        .collect::<Result<_, _>>()?;
    println!("stale-socket sweep, {host} unrelated Unix sockets on the host, {rounds} rounds");
    println!("{:>8} {:>12} {:>12} {:>12}", "stale", "min", "median", "max");
    for stale in stale_counts {
        let mut times: Vec<Duration> = (0..rounds).map(|_| sweep_once(stale)).collect::<Result<_, _>>()?;
        times.sort();
        println!(
            "{stale:>8} {:>12} {:>12} {:>12}",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    Ok(())
}

/// One sweep of a directory with `stale` stale sockets and one live one.
fn sweep_once(stale: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for i in 0..stale {
        drop(UnixListener::bind(dir.path().join(format!("dead-{i}.sock")))?);
    }
    let live = UnixListener::bind(dir.path().join("live.sock"))?;
    let start = Instant::now();
    tableroll::fuzzing::remove_stale_sockets(dir.path())?;
    let elapsed = start.elapsed();
    let left: Vec<_> = std::fs::read_dir(dir.path())?.flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["live.sock"], "the sweep must remove every stale socket and keep the live one");
    assert!(Path::new(&dir.path().join("live.sock")).exists());
    drop(live);
    Ok(elapsed)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
