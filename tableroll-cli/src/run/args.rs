//! The command line of `tableroll run`: listeners, readiness, stopping and restarting.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
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

    /// A listening socket to hold and pass to the program, inherited from the running instance,
    /// adopted from the supervisor's own socket activation, or created: NAME=tcp:HOST:PORT,
    /// NAME=unix:PATH or NAME=udp:HOST:PORT. Repeat for more; the program gets them as
    /// descriptors 3, 4, ... in this order, and the names in LISTEN_FDNAMES.
    #[arg(long = "listen", value_name = "NAME=SPEC", required = true, value_parser = parse_listen)]
    pub listens: Vec<Listen>,

    /// How to know the program is ready to serve: `notify` (it sends READY=1 to the
    /// NOTIFY_SOCKET it is given, as under systemd's Type=notify: an abstract address,
    /// @tableroll-notify-..., as sd_notify(3) accepts), `delay:DURATION` (ready
    /// that long after it started), or `cmd:COMMAND` (a shell command run until it exits 0).
    /// Only then does this instance take over and the previous one drain.
    #[arg(long, value_name = "MODE", default_value = "notify", value_parser = parse_ready)]
    pub ready: Readiness,

    /// How long the program may take to become ready before it is stopped and this instance
    /// gives up, leaving the running one serving.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_timeout)]
    pub ready_timeout: Duration,

    /// Once a newer instance took over (or this one was told to stop), how long the program
    /// may take to finish its requests and exit after the stop signal before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub drain_timeout: Duration,

    /// After a newer instance took over, keep this one's program running (no stop signal) for
    /// this long, as a live backup: if the newer instance dies meanwhile (its program crashed,
    /// say), this instance records itself as the owner again and its program never noticed.
    /// The stop signal comes when the probation passes. Default: none.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_timeout)]
    pub probation: Duration,

    /// The signal that tells the program to drain and exit: TERM, INT, QUIT, HUP, USR1,
    /// USR2, WINCH, or a number.
    #[arg(long, value_name = "SIG", default_value = "TERM", value_parser = parse_signal)]
    pub stop_signal: Signal,

    /// Restart the program with the same sockets when it fails after it was ready (exits
    /// non-zero or is killed by a signal). The sockets stay open in between.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<RestartPolicy>,

    /// Under a systemd unit with FileDescriptorStoreMax=, keep the listeners in the unit's file
    /// descriptor store once this instance is the owner (FDSTORE=1, named after --listen), and
    /// remove names no longer listened on (FDSTOREREMOVE=1). When the unit is started again
    /// after every process of it died, systemd passes them back and they are adopted: no
    /// connection is refused meanwhile. Needs NOTIFY_SOCKET (Type=notify).
    #[arg(long)]
    pub fd_store: bool,

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
or SIGINT it is given the drain timeout, then killed. SIGTERM or SIGINT before this instance \
took over (while it waits for the lock, or for the program to be ready) cancel the upgrade: it \
never takes over, whatever readiness comes later, and the running instance keeps serving. When \
the program exits, whatever it left \
running gets the stop signal, and SIGKILL after the drain timeout, and the supervisor exits \
only once none is left: its workers, in its process group or out of it. The supervisor is the \
subreaper of the program's tree, so even a process that daemonized out of the group (setsid \
and a double fork) is reparented to it and ended, as long as the supervisor lives.

If the supervisor itself dies (SIGKILL, a crash), the program gets the stop signal (its \
parent-death signal), and a watchdog the supervisor started in the program's process group \
gives it the drain timeout: once the program exited the rest of its group gets the stop signal, \
and when the timeout is up the whole group is killed. What remains possible then: a process \
that left the program's process group (setsid, a double fork) runs on under init; so does \
what the program left running if the supervisor dies after the program exited, while ending \
it (the watchdog ends with the program); and nothing is bounded if the watchdog is killed \
too. Under systemd, KillMode=mixed still ends every process of the unit when it stops.

With --probation, a newer instance that took over is on trial: this instance keeps its \
program running and the sockets open until the probation passes, and only then sends the stop \
signal. If the newer instance exits meanwhile (its program crashed and its supervisor exited, \
or it was killed), this instance becomes the owner again within moments and logs \
`rolled_back`; a newcomer that arrives in between receives the sockets from this instance. \
When the program of an owner exits for good, its supervisor lets go of the group at once \
(before waiting for what the program left running), so that the instance on probation can take \
over. A newer instance started with --restart on-failure restarts its crashed program instead \
and stays the owner: no rollback then.

Under systemd (Type=notify) the \
supervisor reports READY=1 and MAINPID once it owns the sockets (again after a rollback), and \
STOPPING=1 when it drains.

Socket activation of the supervisor itself: if systemd passes it sockets (a socket unit named \
in Sockets=, with FileDescriptorName= set to the --listen name, or the unit's file descriptor \
store), each one whose name a --listen has is adopted instead of binding a new one, unless the \
running instance hands that name over (its socket is kept, the activated one closed). An \
adopted socket must be what its --listen says (a TCP or Unix stream listener, or a UDP socket, \
on that address or path), or the supervisor exits 1 naming both; activated sockets no --listen \
names are closed. LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from the supervisor's \
environment: the program gets only its own activation. A socket unit keeps the socket open \
while no instance runs, so connections wait instead of being refused.

With --fd-store, under a unit with FileDescriptorStoreMax=, the owner sends each listener to \
systemd's file descriptor store (FDSTORE=1, FDNAME=<name>) and removes names it no longer \
listens on (FDSTOREREMOVE=1). The store belongs to the unit and is dropped when the unit is \
fully stopped (kept with FileDescriptorStorePreserve=yes, systemd 254 and later): it brings the \
listeners back when Restart= starts the same unit again, not to another instance of a template.

Exit status: the program's (128+N if killed by signal N, but 0 if the signal was the one sent \
to stop it, as systemd counts a clean stop); 1 when the program failed before it \
was ready, readiness timed out, the running instance refused the handoff, the group could \
not be joined (a missing directory, say), a socket passed by activation is not what its \
--listen says (or LISTEN_FDS is malformed), or SIGTERM or SIGINT cancelled the upgrade; 2 on \
bad usage.

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

/// The longest duration any flag accepts: far beyond any sensible timeout or delay, and far
/// below what would overflow the monotonic clock when added to now.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_UNIX_PATH: usize = 107;

// The value parsers' messages do not repeat the value: clap's line already names the flag and
// the value ("invalid value 'X' for '--listen <NAME=SPEC>': ...").

fn parse_listen(text: &str) -> Result<Listen, String> {
    let usage = "expected NAME=tcp:HOST:PORT, NAME=unix:PATH or NAME=udp:HOST:PORT";
    let (name, spec) = text.split_once('=').ok_or_else(|| usage.to_string())?;
    // The names travel colon-separated in LISTEN_FDNAMES; systemd allows up to 255
    // characters of printable ASCII other than ':'.
    if !tableroll::systemd::valid_fd_name(name) {
        return Err("the name must be 1 to 255 printable characters without ':'".into());
    }
    let (kind, address) = spec.split_once(':').ok_or_else(|| usage.to_string())?;
    let socket = match kind {
        "tcp" => SocketSpec::Tcp(check_inet_address(address)?.to_string()),
        "udp" => SocketSpec::Udp(check_inet_address(address)?.to_string()),
        "unix" if address.is_empty() => return Err("the unix socket path is empty".into()),
        "unix" if address.len() > MAX_UNIX_PATH => {
            return Err(format!(
                "the unix socket path is {} bytes long; a socket address holds at most {MAX_UNIX_PATH}",
                address.len()
            ))
        }
        "unix" => SocketSpec::Unix(PathBuf::from(address)),
        other => return Err(format!("unknown socket kind {other:?}: {usage}")),
    };
    Ok(Listen { name: name.to_string(), socket })
}

/// Checks the form of a `tcp:` or `udp:` address, HOST:PORT, without resolving it: an IPv4
/// address, an IPv6 address in brackets or a host name, and a port from 0 to 65535.
fn check_inet_address(address: &str) -> Result<&str, String> {
    let forms = "as in 127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080 or localhost:8080";
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(address);
    }
    let Some((host, port)) = address.rsplit_once(':').filter(|(_, port)| !port.is_empty()) else {
        return Err(format!("the address {address:?} has no port: expected HOST:PORT, {forms}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(if port.bytes().all(|b| b.is_ascii_digit()) {
            format!("port {port} is out of range: a port is 0 to 65535")
        } else {
            format!("port {port:?} is not a number (0 to 65535)")
        });
    }
    if host.is_empty() {
        return Err(format!(
            "the address {address:?} has no host: use 0.0.0.0 (every IPv4 address), [::] (every \
             address) or a name, {forms}"
        ));
    }
    if host.starts_with('[') || host.ends_with(']') {
        return Err(format!("{host} is not an IPv6 address in brackets, as in [::1]:8080"));
    }
    if host.contains(':') {
        return Err(format!("the IPv6 address {host} needs brackets, as in [{host}]:{port}"));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
        return Err(format!("{host} is not an IPv4 address"));
    }
    let labels = host.strip_suffix('.').unwrap_or(host);
    let valid_name = host.len() <= 253
        && labels.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid_name {
        return Err(format!("{host:?} is not an IP address or a host name, {forms}"));
    }
    Ok(address)
}

fn parse_ready(text: &str) -> Result<Readiness, String> {
    if text == "notify" {
        return Ok(Readiness::Notify);
    }
    if let Some(delay) = text.strip_prefix("delay:") {
        return parse_timeout(delay).map(Readiness::Delay);
    }
    match text.strip_prefix("cmd:") {
        Some(command) if !command.trim().is_empty() => Ok(Readiness::Command(command.to_string())),
        _ => Err("expected notify, delay:DURATION or cmd:COMMAND".into()),
    }
}

/// A duration of at most [`MAX_DURATION`].
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d > MAX_DURATION => {
            Err(format!("too long: at most 365 days ({}m)", MAX_DURATION.as_secs() / 60))
        }
        d => Ok(d),
    }
}

/// A duration of more than zero and at most [`MAX_DURATION`].
fn parse_positive_timeout(text: &str) -> Result<Duration, String> {
    match parse_timeout(text)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

impl RunArgs {
    /// What each flag's parser cannot see alone: listeners that collide with each other.
    /// Checked before anything joins the group.
    pub fn validate(&self) -> Result<(), String> {
        for (i, listen) in self.listens.iter().enumerate() {
            for earlier in &self.listens[..i] {
                if earlier.name == listen.name {
                    return Err(format!(
                        "--listen name {:?} is given twice ({} and {}): each listener needs its own name",
                        listen.name,
                        earlier.describe(),
                        listen.describe()
                    ));
                }
                if earlier.socket == listen.socket && !listen.socket.is_any_port() {
                    return Err(format!(
                        "--listen {} and --listen {} are the same socket: a socket can be bound only once",
                        earlier.describe(),
                        listen.describe()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Listen {
    /// As it was written: `NAME=KIND:ADDRESS`.
    pub fn describe(&self) -> String {
        let (kind, address) = match &self.socket {
            SocketSpec::Tcp(address) => ("tcp", address.clone()),
            SocketSpec::Udp(address) => ("udp", address.clone()),
            SocketSpec::Unix(path) => ("unix", path.display().to_string()),
        };
        format!("{}={kind}:{address}", self.name)
    }
}

impl SocketSpec {
    /// Whether the port is 0: each such socket gets a port of its own.
    fn is_any_port(&self) -> bool {
        match self {
            SocketSpec::Tcp(address) | SocketSpec::Udp(address) => address.ends_with(":0"),
            SocketSpec::Unix(_) => false,
        }
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
        _ => Err("expected a signal name such as TERM, INT, QUIT, HUP, USR1, USR2 or WINCH, or its \
                  number (not KILL or STOP: a program must be able to drain)"
            .into()),
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
    fn inet_addresses_are_checked_for_form() {
        for good in [
            "127.0.0.1:0",
            "0.0.0.0:8080",
            "[::1]:8080",
            "[::]:65535",
            "localhost:8080",
            "my-host.example.com.:80",
            "db_1:5432",
        ] {
            assert_eq!(check_inet_address(good), Ok(good));
            assert!(parse_listen(&format!("x=udp:{good}")).is_ok(), "{good}");
        }
        let refused = |address: &str| check_inet_address(address).unwrap_err();
        assert!(refused("localhost").contains("has no port"), "{}", refused("localhost"));
        assert!(refused("localhost:").contains("has no port"));
        assert!(refused("127.0.0.1:99999").contains("port 99999 is out of range"));
        assert!(refused("127.0.0.1:http").contains("not a number"));
        assert!(refused(":8080").contains("has no host"));
        assert!(refused("::1:8080").contains("needs brackets"));
        assert!(refused("[::g]:8080").contains("not an IPv6 address"));
        assert!(refused("[::1:8080").contains("not an IPv6 address"));
        assert!(refused("300.1.1.1:80").contains("not an IPv4 address"));
        assert!(refused("a b:80").contains("not an IP address or a host name"));
        assert!(refused("a..b:80").contains("not an IP address or a host name"));
        assert!(parse_listen("x=unix:").unwrap_err().contains("empty"));
        assert!(parse_listen(&format!("x=unix:/{}", "p".repeat(107))).unwrap_err().contains("at most 107"));
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_timeout("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_timeout("525600m"), Ok(MAX_DURATION));
        assert!(parse_timeout("525601m").unwrap_err().contains("too long"));
        assert!(parse_positive_timeout("10000000000000000000s").unwrap_err().contains("too long"));
        assert!(parse_positive_timeout("0s").is_err());
        assert!(parse_ready("delay:525601m").is_err());
        // The bound keeps every deadline inside the clock's range.
        assert!(std::time::Instant::now().checked_add(MAX_DURATION * 2).is_some());
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
