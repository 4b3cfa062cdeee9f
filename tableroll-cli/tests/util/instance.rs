//! One `tableroll run` process under test, with its JSON lines (the supervisor's log on stderr,
//! the program's on stdout) to wait on. Every wait is for a line or for the process to exit,
//! bounded by [`TIMEOUT`] only to fail a hung test.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tableroll_testkit::events::{Events, Missed};
use tableroll_testkit::process::Process;
use tableroll_testkit::TIMEOUT;

/// The test server, built by cargo for these tests (a binary target of this package).
pub fn activated_server() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_activated_server"))
}

/// The arguments of `tableroll run --dir DIR --log-format json FLAGS -- PROGRAM...`.
pub fn run_args(dir: &Path, flags: &[&str], program: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into(), "--dir".into(), dir.into()];
    args.extend(["--log-format", "json"].into_iter().chain(flags.iter().copied()).map(OsString::from));
    args.push("--".into());
    args.extend(program.iter().map(OsString::from));
    args
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The supervisor's JSON log (stderr).
    Supervisor,
    /// The program's stdout (the supervisor passes its own stdout on).
    Program,
}

/// One `tableroll run` process: its JSON lines, from both streams, waited on. On drop every
/// program it reported is killed by pid, then the supervisor.
pub struct Instance {
    /// First, so that it is killed (and its output printed) while `lines` still has a
    /// receiver: the reading threads log the output until then.
    pub process: Process,
    pub label: String,
    /// The pids of the programs the supervisor reported starting, noted as the lines are read.
    program_pids: Arc<Mutex<BTreeSet<u32>>>,
    lines: Events<(Source, Value)>,
}

impl Instance {
    /// Starts `tableroll run --dir DIR --log-format json FLAGS -- activated_server SERVER_ARGS`.
    pub fn start(label: &str, dir: &Path, flags: &[&str], server_args: &[&str]) -> Instance {
        let server = activated_server().to_str().expect("a UTF-8 path");
        Instance::start_command(label, dir, flags, &[&[server], server_args].concat(), None)
    }

    /// Starts `tableroll run --dir DIR --log-format json FLAGS -- PROGRAM...`, with
    /// `NOTIFY_SOCKET` set to `notify_socket` (as systemd would) or unset.
    pub fn start_command(
        label: &str,
        dir: &Path,
        flags: &[&str],
        program: &[&str],
        notify_socket: Option<&Path>,
    ) -> Instance {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tableroll"));
        cmd.args(run_args(dir, flags, program));
        match notify_socket {
            Some(path) => cmd.env("NOTIFY_SOCKET", path),
            None => cmd.env_remove("NOTIFY_SOCKET"),
        };
        // Anything the supervisor would put in a temporary directory goes with the test's
        // directory, also when the test ends by killing the supervisor (and can be found there).
        cmd.env("TMPDIR", dir);
        Instance::spawn(label, cmd)
    }

    /// Starts `cmd`, a `tableroll run` (see [`run_args`]), possibly through a program that
    /// execs it in the same process (such as `systemd-socket-activate`): the pid is the
    /// supervisor's once it runs.
    pub fn spawn(label: &str, mut cmd: Command) -> Instance {
        let (tx, lines) = Events::channel();
        let program_pids = Arc::new(Mutex::new(BTreeSet::new()));
        let (log_tx, pids) = (tx.clone(), program_pids.clone());
        let mut process = Process::spawn_reading_stderr(&mut cmd, move |at, line| {
            let Ok(value) = serde_json::from_str::<Value>(&line) else { return true };
            if value["event"] == "started" {
                pids.lock().unwrap().insert(value["child_pid"].as_u64().unwrap() as u32);
            }
            log_tx.send((at, (Source::Supervisor, value))).is_ok()
        });
        process.read_stdout(move |at, line| match serde_json::from_str::<Value>(&line) {
            Ok(value) => tx.send((at, (Source::Program, value))).is_ok(),
            Err(_) => true,
        });
        process.set_heading(format!("{label} (pid {})", process.pid()));
        Instance { process, label: label.to_string(), program_pids, lines }
    }

    pub fn fail(&self, message: &str) -> ! {
        self.process.fail(&format!("{}: {message}", self.label))
    }

    /// The first line from `source` with `"event": event` not consumed yet.
    pub fn wait_for(&mut self, source: Source, event: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        match self.lines.wait(deadline, |(s, v)| *s == source && v["event"] == event, |_| false) {
            Ok((_, (_, value))) => value,
            Err(Missed::TimedOut) => self.fail(&format!("no {source:?} event {event:?}")),
            Err(Missed::Ended | Missed::Stopped(..)) => {
                self.fail(&format!("output ended before {source:?} event {event:?}"))
            }
        }
    }

    /// The lines received and not consumed yet.
    pub fn pending(&self) -> impl Iterator<Item = &(Source, Value)> {
        self.lines.pending()
    }

    pub fn log(&mut self, event: &str) -> Value {
        self.wait_for(Source::Supervisor, event)
    }

    pub fn program(&mut self, event: &str) -> Value {
        self.wait_for(Source::Program, event)
    }

    /// The address of listener `name`, from the supervisor's log.
    pub fn address(&mut self, name: &str) -> String {
        loop {
            let listener = self.log("listener");
            if listener["name"] == name {
                return listener["address"].as_str().unwrap().to_string();
            }
        }
    }

    /// Waits for the supervisor to exit; its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        // The exit is what is awaited; nothing to wait for it on but the lines, so this blocks
        // on them (the end of the output comes with the exit) and checks the pid as they come.
        let status = loop {
            if !self.process.is_running() {
                break self.process.wait();
            }
            match self.lines.receive_pending(deadline) {
                Ok(()) => {}
                Err(Missed::Ended) => break self.process.wait(),
                Err(_) if self.process.is_running() => self.fail("did not exit"),
                Err(_) => {}
            }
        };
        status.code().unwrap_or_else(|| self.fail(&format!("ended by {status}")))
    }

    /// Waits for the supervisor to end (it was killed); its status.
    pub fn wait_exit_by_signal(&mut self) -> ExitStatus {
        self.process.wait()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.process.is_running() {
            return;
        }
        // The programs first, while the supervisor (their parent) keeps their pids from being
        // reused; the supervisor is killed when `process` is dropped.
        for pid in self.program_pids.lock().unwrap().iter() {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}
