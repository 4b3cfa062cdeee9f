//! Durations on the command line: a number and a unit, as in `500ms`, `1.5s` or `2m`.

use std::time::Duration;

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
    }
}
