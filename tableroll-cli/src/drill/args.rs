//! The drill's command line: its flags, their defaults, and the duration syntax.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// Flags of `tableroll drill`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct DrillArgs {
    /// How many upgrades to run (generation 0, then generations 1 to N).
    #[arg(long, default_value_t = 10, value_name = "N")]
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
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub interval: Duration,

    /// Reuse each client's connection for many requests (HTTP keep-alive) instead of opening a
    /// new connection per request.
    #[arg(long)]
    pub keep_alive: bool,

    /// Print the whole result as JSON on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,

    /// Write a chart of the run to FILE (SVG): throughput over time, each upgrade marked,
    /// failures in red.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,

    /// Print nothing on stderr while running (no progress bar, no per-upgrade lines).
    #[arg(long, short)]
    pub quiet: bool,

    /// How long a client waits for each read or write of a request before counting a timeout.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration_arg, hide = true)]
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

Exit status: 0 if every upgrade completed and no request failed; 1 if the drill failed or \
could not run; 2 for a usage error; 130 if interrupted (everything is cleaned up first).";

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

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// Parses a duration written as a number and a unit: `250ms`, `2s`, `1.5s`, `100us`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "" => return Err(format!("{text:?} needs a unit: ns, us, ms, s or m (as in 500ms)")),
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ns, us, ms, s or m")),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|_| !number.starts_with('.') && !number.ends_with('.'))
        .ok_or_else(|| format!("{text:?} does not start with a number (as in 500ms or 1.5s)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2s"), Ok(ms(2000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("100µs"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration(" 3 s "), Ok(ms(3000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused_with_a_reason() {
        for bad in ["", "500", "ms", "1.s", ".5s", "1.2.3s", "5 parsecs", "-1s", "1e3s", "9e99s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_duration("500").unwrap_err().contains("needs a unit"));
        assert!(parse_duration_arg("0ms").is_err());
    }
}
