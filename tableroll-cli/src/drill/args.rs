//! The drill's command line: its flags and their defaults.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::duration::parse_duration;

/// Flags of `tableroll drill`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct DrillArgs {
    /// How many upgrades to run (generation 0, then generations 1 to N); at least 1.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = parse_upgrades)]
    pub upgrades: u32,

    /// How many client threads drive closed-loop load (each sends its next request as soon as
    /// the previous one was answered).
    #[arg(long, default_value_t = 4, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,

    /// The kind of listener the demo server serves HTTP on.
    #[arg(long, value_enum, default_value_t = ListenerKind::Tcp, value_name = "KIND")]
    pub listener: ListenerKind,

    /// Extra TCP listeners (on 127.0.0.1, unused) handed over with every upgrade, to see how
    /// a handoff scales with the number of descriptors.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fds: u32,

    /// Time between the starts of two generations, e.g. `500ms`, `2s`, `1.5s`.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    pub interval: Duration,

    /// Reuse each client's connection for many requests (HTTP keep-alive) instead of opening a
    /// new connection per request.
    #[arg(long)]
    pub keep_alive: bool,

    /// Print the whole result as JSON on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,

    /// Write a chart of the run to FILE (SVG): throughput over time, each upgrade marked,
    /// failures in red. FILE is created (or truncated) before the drill starts: one that cannot be
    /// is a usage error.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,

    /// Make these generations crash: each kills itself with SIGKILL (no drain) a quarter of
    /// the interval after its `ready()` returned, under load. Generations 1 to --upgrades;
    /// a generation named twice crashes once.
    #[arg(long, value_name = "GEN[,GEN...]", value_delimiter = ',', value_parser = parse_crash_generation)]
    pub crash: Vec<u32>,

    /// Run every generation with this probation (`Builder::probation`): after a newer generation
    /// took over, the older one stays a live backup for DURATION and becomes the owner again
    /// if the newer one dies (a rollback), e.g. `2s`. A crash (--crash) comes a quarter of the
    /// interval after `ready()`: a shorter probation has ended by then, and nobody rolls back.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    pub probation: Option<Duration>,

    /// Print nothing on stderr while running (no progress bar, no per-upgrade lines).
    #[arg(long, short)]
    pub quiet: bool,

    /// How long a client waits for each read or write of a request before counting a timeout.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration_arg, allow_hyphen_values = true, hide = true)]
    pub request_timeout: Duration,

    /// For testing the drill itself: make the demo server misbehave on some connections, so
    /// that the drill must count failures.
    #[arg(long, value_enum, value_name = "MODE", hide = true)]
    pub break_server: Option<BreakMode>,
}

const AFTER_HELP: &str = "\
What counts as a failed request: a connection refused, a connection reset, a connection closed \
before a whole response arrived, a read or write timeout, or a response other than \
`200 OK` with its body. With --keep-alive, a kept connection that the server closed between \
two requests is replaced by a new one before the request is sent, and that is not a failure; \
once any byte of a request was sent, whatever goes wrong is a failure (the client cannot know \
whether the server acted on it).

With --crash, the requests a crashed generation took down with it are counted apart, as \
lost inside a crashed generation: just before it kills itself, the generation reports how many \
connections it holds open (it accepts none after counting; a closed-loop client has at most one \
request on a connection). A failed request is put down to that crash if it was a reset or a \
connection closed early (a dead peer shows as nothing else), it ended after the crash was \
reported and it started before the drill saw the generation gone; at most that many requests \
are. Refused connections and timeouts are never put down to a crash. Every other failed request \
is lost outside the crashed generations. With --probation, the generation that handed over to \
a crashed one becomes the owner again (a rollback): the summary, the JSON and the chart show \
each rollback and the time from the crash to it.

Exit status: 0 if every upgrade completed and no request failed; with --crash, 0 if every \
generation named crashed (with --probation, each followed by a rollback), every other upgrade \
that found an owner to take over from completed, and no request was lost outside the crashed \
generations (without --probation nobody serves from a crash until the next generation \
starts, and the connections refused meanwhile fail the drill). 1 if the drill failed or could not run; 2 for a usage \
error (such as --crash 0, or a generation beyond --upgrades); 130 if interrupted (everything is \
cleaned up first).";

/// The kind of listener the demo server serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// TCP on 127.0.0.1, on a port the kernel picks.
    Tcp,
    /// A Unix stream socket in the drill's temporary directory.
    Unix,
}

/// Ways the demo server can misbehave (on every fourth connection it accepts), for testing
/// the drill's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakMode {
    /// Read the request, then close the connection without answering.
    DropConnections,
    /// Read the request, then reset the connection.
    ResetConnections,
    /// Answer `500 Internal Server Error`.
    BadResponse,
    /// Read the request and never answer.
    Stall,
}

impl BreakMode {
    /// The flag value, as the demo server's command line takes it.
    pub fn as_arg(self) -> &'static str {
        match self {
            BreakMode::DropConnections => "drop-connections",
            BreakMode::ResetConnections => "reset-connections",
            BreakMode::BadResponse => "bad-response",
            BreakMode::Stall => "stall",
        }
    }
}

fn parse_upgrades(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1: a drill without an upgrade tests nothing".into()),
        Ok(n) => Ok(n),
        Err(_) if text.trim().starts_with('-') => Err("must be at least 1".into()),
        Err(e) => Err(format!("{text:?} is not a whole number of upgrades ({e})")),
    }
}

/// A generation to crash: not 0, which has nobody to roll back to. (That it is not beyond
/// `--upgrades` is checked once every flag is known: [`DrillArgs::check_crash`].)
fn parse_crash_generation(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("generation 0 cannot crash: it has no older generation to roll back to".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a generation number ({e})")),
    }
}

impl DrillArgs {
    /// The generations to crash, each once, in order.
    pub fn crashes(&self) -> Vec<u32> {
        let mut crashes = self.crash.clone();
        crashes.sort_unstable();
        crashes.dedup();
        crashes
    }

    /// Whether generation `number` is to crash.
    pub fn crashes_generation(&self, number: u32) -> bool {
        self.crash.contains(&number)
    }

    /// How long after its `ready()` a crashing generation kills itself: a quarter of the
    /// interval, so that it crashes under load and well before the next generation starts.
    pub fn crash_after(&self) -> Duration {
        self.interval / 4
    }

    /// Why `--crash` names a generation the drill does not start, if it does.
    pub fn check_crash(&self) -> Result<(), String> {
        match self.crash.iter().find(|&&n| n > self.upgrades) {
            Some(n) => Err(format!(
                "--crash {n}: there is no generation {n} (--upgrades {} starts generations 0 to {})",
                self.upgrades, self.upgrades
            )),
            None => Ok(()),
        }
    }
}

/// A duration more than zero. Values may start with `-` (`allow_hyphen_values`), so that
/// `--interval -1s` reaches this parser instead of being taken for a flag.
fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    if let Some(rest) = text.trim().strip_prefix('-') {
        return Err(if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            "negative durations are not accepted (write one such as 500ms or 1.5s)".to_string()
        } else {
            "looks like a flag, not a duration such as 500ms or 1.5s".to_string()
        });
    }
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_are_refused() {
        assert!(parse_duration_arg("0ms").is_err());
        assert_eq!(parse_duration_arg("5ms"), Ok(Duration::from_millis(5)));
    }

    #[test]
    fn negative_durations_and_flags_are_refused_with_a_reason() {
        assert!(parse_duration_arg("-1s").unwrap_err().contains("negative durations are not accepted"));
        assert!(parse_duration_arg("-.5s").unwrap_err().contains("negative durations are not accepted"));
        assert!(parse_duration_arg("--json").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn generation_0_cannot_crash() {
        assert!(parse_crash_generation("0").unwrap_err().contains("generation 0 cannot crash"));
        assert!(parse_crash_generation("x").is_err());
        assert_eq!(parse_crash_generation("3"), Ok(3));
    }

    /// The drill's flags as a command of their own.
    #[derive(clap::Parser)]
    struct Drill {
        #[command(flatten)]
        args: DrillArgs,
    }

    fn parse(flags: &[&str]) -> DrillArgs {
        <Drill as clap::Parser>::try_parse_from(std::iter::once("drill").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn crashes_are_listed_once_and_within_the_upgrades() {
        let args = parse(&["--upgrades", "6", "--crash", "6,3", "--crash", "3", "--interval", "2s"]);
        assert_eq!(args.crashes(), [3, 6]);
        assert!(args.crashes_generation(6) && !args.crashes_generation(5));
        assert_eq!(args.crash_after(), Duration::from_millis(500));
        assert_eq!(args.check_crash(), Ok(()));
        let beyond = parse(&["--upgrades", "2", "--crash", "1,3"]).check_crash().unwrap_err();
        assert!(beyond.contains("--crash 3: there is no generation 3"), "{beyond}");
        assert!(parse(&["--upgrades", "2"]).crashes().is_empty());
    }

    #[test]
    fn at_least_one_upgrade() {
        assert!(parse_upgrades("0").unwrap_err().contains("at least 1"));
        assert!(parse_upgrades("-3").unwrap_err().contains("at least 1"));
        assert!(parse_upgrades("many").is_err());
        assert_eq!(parse_upgrades("1"), Ok(1));
    }
}
