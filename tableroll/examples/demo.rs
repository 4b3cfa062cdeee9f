//! A handoff demo: a small HTTP server upgraded five times under load, with no request lost.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! The demo starts generation 0 of a server (this same program, re-executed with `--serve`),
//! drives closed-loop HTTP load at it from two client threads (a new connection per request),
//! and starts generations 1 to 5 one after another. Each generation is an independent process
//! that takes the listening socket over from the previous one through the library; the
//! previous one finishes its requests in flight and exits. The demo prints each handoff's
//! timings and the request totals, and exits non-zero if any request failed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GENERATIONS: u32 = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(&args[2], &args[3]);
    }
    let dir = tempfile::tempdir()?;
    let mut current = Generation::start(dir.path(), 0)?;
    let addr: SocketAddr = current.expect("listening")?.parse()?;
    current.expect("ready")?;
    println!("generation 0 serving on http://{addr}");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let counter = if request(addr).is_ok() { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for generation in 1..=GENERATIONS {
        std::thread::sleep(Duration::from_millis(300)); // let load run between upgrades
        let started = Instant::now();
        let mut next = Generation::start(dir.path(), generation)?;
        let new_us = next.expect("listening")?;
        next.expect("ready")?;
        let ready_at = started.elapsed();
        current.expect("exit")?;
        current.child.wait()?;
        println!(
            "generation {generation}: inherited the listener in {new_us} µs, ready {:.1} ms after spawn, \
             generation {} drained and exited",
            ready_at.as_secs_f64() * 1e3,
            generation - 1
        );
        current = next;
    }
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().unwrap_or(()));
    drop(current);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{GENERATIONS} upgrades under load: {ok} requests succeeded, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// One server process, its stdout read line by line.
struct Generation {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Generation {
    fn start(dir: &std::path::Path, generation: u32) -> std::io::Result<Generation> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve", &dir.to_string_lossy(), &generation.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        Ok(Generation { child, lines: BufReader::new(stdout).lines() })
    }

    /// Waits for the line `<word> <value>` and returns the value.
    fn expect(&mut self, word: &str) -> Result<String, Box<dyn std::error::Error>> {
        for line in self.lines.by_ref() {
            if let Some(value) = line?.strip_prefix(word) {
                return Ok(value.trim().to_owned());
            }
        }
        Err(format!("the server exited before saying {word:?}").into())
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(addr: SocketAddr) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("bad response"))
    }
}

/// One generation of the server.
fn serve(dir: &str, generation: &str) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let upgrader = tableroll::Upgrader::builder(dir).id(format!("gen-{generation}")).build()?;
    let listener = upgrader.fds().listen_tcp("web", "127.0.0.1:0")?;
    let new_us = started.elapsed().as_micros();
    listener.set_nonblocking(true)?; // shared with the other generation's copy: both poll
    if generation == "0" {
        println!("listening {}", listener.local_addr()?);
    } else {
        println!("listening {new_us}");
    }
    upgrader.ready()?;
    println!("ready");
    let done = upgrader.upgrade_complete();
    let body = format!("hello from generation {generation}\n");
    let mut handlers = Vec::new();
    while !done.is_complete() {
        match listener.accept() {
            Ok((conn, _)) => {
                let body = body.clone();
                handlers.push(std::thread::spawn(move || answer(conn, &body)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                done.wait_timeout(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(listener);
    for handler in handlers {
        let _ = handler.join();
    }
    println!("exit");
    Ok(())
}

fn answer(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut head = [0u8; 1024];
    let _ = conn.read(&mut head)?;
    write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}
