//! Running the `tableroll` binary as a real process, with a bound on how long it may take.

#![allow(dead_code)]

pub mod instance;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::{kill_process, waitid, Pid, Signal, WaitId, WaitIdOptions};
use serde_json::Value;

/// How long one drill in a test may take before the test fails (a bound, not a measure).
pub const LIMIT: Duration = Duration::from_secs(120);

/// The `tableroll` command.
pub fn tableroll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tableroll"))
}

/// A finished run: what it printed and how it ended.
pub struct Run {
    pub args: Vec<String>,
    pub output: Output,
}

impl Run {
    pub fn status(&self) -> ExitStatus {
        self.output.status
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: tableroll {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.status(),
            self.stdout(),
            self.stderr()
        )
    }

    /// Stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.describe()))
    }

    pub fn code(&self) -> Option<i32> {
        self.status().code()
    }
}

/// Runs `tableroll ARGS` to its end (killing it and failing past [`LIMIT`]).
pub fn run(args: &[&str]) -> Run {
    run_command(tableroll(), args, args.iter().map(|a| a.to_string()).collect())
}

/// Runs `cmd` with `args` to its end; `described` is how the run names its command line.
fn run_command(mut cmd: Command, args: &[&str], described: Vec<String>) -> Run {
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tableroll");
    Run { args: described, output: wait_bounded(child) }
}

/// Waits for `child` and collects its output; kills it and panics past [`LIMIT`].
pub fn wait_bounded(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(output) => output.expect("waiting for tableroll"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("tableroll (pid {pid}) did not finish within {LIMIT:?}");
        }
    }
}

/// Checks that the drill left nothing behind: its temporary directory is gone, and so is
/// every generation's process (a pid may have been reused since, by a process that is not a
/// generation of this drill: its command line would not name the drill's directory).
pub fn assert_cleaned_up(report: &Value, run: &Run) {
    let temp = report["temp_dir"].as_str().unwrap_or_else(|| panic!("no temp_dir\n{}", run.describe()));
    assert!(!temp.is_empty() && !Path::new(temp).exists(), "{temp} is still there\n{}", run.describe());
    let generations = report["generations"].as_array().expect("generations");
    assert!(!generations.is_empty(), "{}", run.describe());
    for generation in generations {
        let pid = generation["pid"].as_u64().expect("a pid");
        assert!(!is_generation_of(pid, temp), "generation pid {pid} is still alive\n{}", run.describe());
    }
}

/// `report[key]` as a number.
pub fn num(report: &Value, path: &[&str]) -> u64 {
    let mut value = report;
    for key in path {
        value = &value[*key];
    }
    value.as_u64().unwrap_or_else(|| panic!("{path:?} is not a number in {report:#}"))
}

/// Whether process `pid` runs with `dir` on its command line.
pub fn is_generation_of(pid: u64, dir: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    String::from_utf8_lossy(&cmdline).contains(dir)
}

/// Runs `tableroll ARGS` to its end in the working directory `cwd` (killing it and failing
/// past [`LIMIT`]).
pub fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = tableroll();
    cmd.current_dir(cwd);
    let mut described = vec![format!("(in {})", cwd.display())];
    described.extend(args.iter().map(|a| a.to_string()));
    run_command(cmd, args, described)
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("a pid");
    kill_process(pid, signal).expect("signalling");
}

/// Waits until this test's child `pid` is stopped, leaving that state to be seen again.
pub fn wait_stopped(pid: u32) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("a pid");
    waitid(WaitId::Pid(pid), WaitIdOptions::STOPPED | WaitIdOptions::NOWAIT).expect("waiting for the stop");
}

/// Kills the program a `tableroll run` instance started (its pid from the `owner` line).
pub fn kill_program(owner_line: &Value) {
    let pid = owner_line["child_pid"].as_u64().expect("the owner line names the program's pid");
    signal(u32::try_from(pid).expect("a pid"), Signal::KILL);
}
