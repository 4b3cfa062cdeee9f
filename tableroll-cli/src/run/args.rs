//! The command line of `tableroll run`: listeners, readiness, stopping and restarting.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use signal_hook::consts;

use crate::duration::parse_duration;

/// Flags of `tableroll run`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct RunArgs {
    /// The coordination directory every instance of this service uses (it must exist).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// This instance's id in the group, unique among live instances (default: the pid and
    /// random bits). It names the upgrade socket `DIR/ID.sock`.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// A listening socket to hold and pass to the program, inherited from the running instance
    /// or created: NAME=tcp:HOST:PORT, NAME=unix:PATH or NAME=udp:HOST:PORT. Repeat for more;
    /// the program gets them as descriptors 3, 4, ... in this order, and the names in
    /// LISTEN_FDNAMES.
    #[arg(long = "listen", value_name = "NAME=SPEC", required = true, value_parser = parse_listen)]
    pub listens: Vec<Listen>,

    /// How to know the program is ready to serve: `notify` (it sends READY=1 to the
    /// NOTIFY_SOCKET it is given, as under systemd's Type=notify), `delay:DURATION` (ready
    /// that long after it started), or `cmd:COMMAND` (a shell command run until it exits 0).
    /// Only then does this instance take over and the previous one drain.
    #[arg(long, value_name = "MODE", default_value = "notify", value_parser = parse_ready)]
    pub ready: Readiness,

    /// How long the program may take to become ready before it is stopped and this instance
    /// gives up, leaving the running one serving.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub ready_timeout: Duration,

    /// Once a newer instance took over (or this one was told to stop), how long the program
    /// may take to finish its requests and exit after the stop signal before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// The signal that tells the program to drain and exit: TERM, INT, QUIT, HUP, USR1,
    /// USR2, WINCH, or a number.
    #[arg(long, value_name = "SIG", default_value = "TERM", value_parser = parse_signal)]
    pub stop_signal: Signal,

    /// Restart the program with the same sockets when it fails after it was ready (exits
    /// non-zero or is killed by a signal). The sockets stay open in between.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<RestartPolicy>,

    /// How log lines on stderr are written.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// The program to run and its arguments.
    #[arg(required = true, last = true, value_name = "PROGRAM")]
    pub command: Vec<OsString>,
}

const AFTER_HELP: &str = "\
The program is started as systemd's socket activation starts it, so an unmodified program \
written for sd_listen_fds(3) works: descriptors 3, 4, ... are the listeners, LISTEN_FDS is \
their count, LISTEN_FDNAMES their names (colon-separated), LISTEN_PID the program's own pid. \
No other descriptor of this supervisor reaches it. The descriptors are the same open sockets \
the running instance holds: their file status flags (O_NONBLOCK) are shared with it, so \
tableroll leaves them as they are.

An upgrade: start a second `tableroll run` with the same --dir and --listen while the first \
runs. It takes the sockets over, starts the new program, waits for it to be ready, and only \
then tells the first instance, which sends its program the stop signal, waits up to the drain \
timeout and exits with the program's status. The sockets never close, so no connection is \
refused. If the new program fails to start, the new instance exits non-zero and the first one \
keeps serving.

The program also gets TABLEROLL_GENERATION: 1 for the first instance of a group, one more \
for each instance after (carried in the default id, g<N>-<pid>-<random>; unknown, and not set, \
when the owner's id was chosen with --id).

Readiness cannot be probed through the listening socket itself: until the handoff, the old \
program answers there too. Use notify (the default), a fixed delay, or a command that checks \
the new program some other way (its pid is in $TABLEROLL_CHILD_PID). Readiness is what the \
handoff trusts: a program that sends READY=1 before it can serve (gunicorn's master does, \
before its workers load the application) and then fails leaves nobody serving, since the old \
program was already told to drain; check such a program with cmd: instead, for example \
through a private --listen health=unix:PATH of its own.

SIGTERM, SIGINT and SIGHUP sent to this supervisor are passed on to the program; after SIGTERM \
or SIGINT it is given the drain timeout, then killed. If the supervisor itself dies (SIGKILL, a \
crash), the program gets SIGTERM. Under systemd (Type=notify) the \
supervisor reports READY=1 and MAINPID once it owns the sockets, and STOPPING=1 when it drains.

Exit status: the program's (128+N if killed by signal N, but 0 if the signal was the one sent \
to stop it, as systemd counts a clean stop); 1 when the program failed before it \
was ready, readiness timed out, the running instance refused the handoff, or the group could \
not be joined (a missing directory, say); 2 on bad usage.

Example:
  tableroll run --dir /run/myapp --listen http=tcp:0.0.0.0:8080 -- ./server --flag";

/// One `--listen NAME=SPEC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The name: the id in the coordination group and the entry in LISTEN_FDNAMES.
    pub name: String,
    pub socket: SocketSpec,
}

/// What kind of socket a listener is, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    Tcp(String),
    Unix(PathBuf),
    Udp(String),
}

/// How readiness is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// READY=1 on the NOTIFY_SOCKET the program is given.
    Notify,
    /// A fixed time after the program started.
    Delay(Duration),
    /// A shell command run until it exits 0.
    Command(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    /// Restart when the program exits non-zero or is killed by a signal.
    OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// A signal, by number, with the name it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

fn parse_listen(text: &str) -> Result<Listen, String> {
    let usage = "expected NAME=tcp:HOST:PORT, NAME=unix:PATH or NAME=udp:HOST:PORT";
    let (name, spec) = text.split_once('=').ok_or_else(|| format!("{text:?}: {usage}"))?;
    // The names travel colon-separated in LISTEN_FDNAMES; systemd allows up to 255
    // characters of printable ASCII other than ':'.
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("{text:?}: the name must be 1 to 255 printable characters without ':'"));
    }
    let (kind, address) = spec.split_once(':').ok_or_else(|| format!("{text:?}: {usage}"))?;
    let socket = match kind {
        "tcp" if !address.is_empty() => SocketSpec::Tcp(address.to_string()),
        "udp" if !address.is_empty() => SocketSpec::Udp(address.to_string()),
        "unix" if !address.is_empty() => SocketSpec::Unix(PathBuf::from(address)),
        _ => return Err(format!("{text:?}: {usage}")),
    };
    Ok(Listen { name: name.to_string(), socket })
}

fn parse_ready(text: &str) -> Result<Readiness, String> {
    if text == "notify" {
        return Ok(Readiness::Notify);
    }
    if let Some(delay) = text.strip_prefix("delay:") {
        return parse_duration(delay).map(Readiness::Delay);
    }
    match text.strip_prefix("cmd:") {
        Some(command) if !command.trim().is_empty() => Ok(Readiness::Command(command.to_string())),
        _ => Err(format!("{text:?}: expected notify, delay:DURATION or cmd:COMMAND")),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// Names of the signals a program is commonly stopped with, or dies of.
const SIGNAL_NAMES: [(&str, i32); 13] = [
    ("TERM", consts::SIGTERM),
    ("INT", consts::SIGINT),
    ("QUIT", consts::SIGQUIT),
    ("HUP", consts::SIGHUP),
    ("USR1", consts::SIGUSR1),
    ("USR2", consts::SIGUSR2),
    ("WINCH", consts::SIGWINCH),
    ("KILL", consts::SIGKILL),
    ("STOP", consts::SIGSTOP),
    ("ABRT", consts::SIGABRT),
    ("SEGV", consts::SIGSEGV),
    ("BUS", consts::SIGBUS),
    ("PIPE", consts::SIGPIPE),
];

fn parse_signal(text: &str) -> Result<Signal, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = SIGNAL_NAMES.iter().find(|(n, _)| *n == name).map(|(_, number)| *number);
    match number.or_else(|| name.parse().ok()) {
        Some(n)
            if rustix::process::Signal::from_named_raw(n).is_some()
                && n != consts::SIGKILL
                && n != consts::SIGSTOP =>
        {
            Ok(Signal(n))
        }
        _ => Err(format!(
            "{text:?}: expected a signal name such as TERM, INT, QUIT, HUP, USR1, USR2 or WINCH, or \
             its number (not KILL or STOP: a program must be able to drain)"
        )),
    }
}

impl Signal {
    /// The signal as rustix knows it (every parsed signal is a named one).
    pub fn to_rustix(self) -> rustix::process::Signal {
        rustix::process::Signal::from_named_raw(self.0).unwrap_or(rustix::process::Signal::TERM)
    }

    /// The signal's conventional name, as `SIGTERM`, or its number.
    pub fn name(self) -> String {
        match SIGNAL_NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => format!("SIG{name}"),
            None => format!("signal {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_by_kind() {
        assert_eq!(
            parse_listen("http=tcp:127.0.0.1:8080"),
            Ok(Listen { name: "http".into(), socket: SocketSpec::Tcp("127.0.0.1:8080".into()) })
        );
        assert_eq!(
            parse_listen("admin=unix:/run/app/admin.sock"),
            Ok(Listen { name: "admin".into(), socket: SocketSpec::Unix("/run/app/admin.sock".into()) })
        );
        assert_eq!(
            parse_listen("dns=udp:[::1]:53"),
            Ok(Listen { name: "dns".into(), socket: SocketSpec::Udp("[::1]:53".into()) })
        );
    }

    #[test]
    fn bad_listeners_are_refused() {
        for bad in
            ["http", "=tcp:1:2", "a:b=tcp:1:2", "http=sctp:1:2", "http=tcp:", "http=unix", "sp ace=tcp:1:2"]
        {
            assert!(parse_listen(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_listen(&format!("{}=tcp:1:2", "n".repeat(256))).is_err());
    }

    #[test]
    fn readiness_modes_parse() {
        assert_eq!(parse_ready("notify"), Ok(Readiness::Notify));
        assert_eq!(parse_ready("delay:250ms"), Ok(Readiness::Delay(Duration::from_millis(250))));
        assert_eq!(parse_ready("cmd:curl -f localhost"), Ok(Readiness::Command("curl -f localhost".into())));
        for bad in ["", "cmd:", "cmd:  ", "delay:", "delay:5", "probe"] {
            assert!(parse_ready(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(Signal(consts::SIGTERM)));
        assert_eq!(parse_signal("sigquit"), Ok(Signal(consts::SIGQUIT)));
        assert_eq!(parse_signal("10"), Ok(Signal(10)));
        assert_eq!(Signal(consts::SIGTERM).name(), "SIGTERM");
        assert_eq!(Signal(consts::SIGKILL).name(), "SIGKILL");
        for bad in ["KILL", "SIGSTOP", "9", "19", "0", "65", "nope"] {
            assert!(parse_signal(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
