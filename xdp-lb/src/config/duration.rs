//! Durations written as strings with units: `"100ms"`, `"5s"`, `"1m"`, `"1h"`, or a sum
//! such as `"1m30s"`. A bare number is rejected on purpose: `timeout = 5` would
//! otherwise be ambiguous between seconds and milliseconds.

use std::time::Duration;

/// How a valid duration looks, for error messages.
pub(crate) const DURATION_FORM: &str =
    "a string with a unit such as \"500ms\", \"5s\" or \"1m\" (units: ms, s, m, h)";

/// The longest any duration may be: timers stay far from overflowing a clock, and a
/// value this big is a typo.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The longest `key` may be: keepalived's own limits where it has them, a start-up
/// wait an operator would notice, and [`MAX_DURATION`] for everything else.
pub(crate) fn max_duration(key: &str) -> Duration {
    match key {
        // keepalived refuses a preempt_delay over 1,000 s.
        "preempt_delay" => Duration::from_secs(1000),
        // The start (and a reload) waits this long for real servers' MACs.
        "neighbour_timeout" => Duration::from_secs(600),
        _ => MAX_DURATION,
    }
}

/// `d` written the way the config takes it: `"16m40s"`, `"24h"`, `"250ms"`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let mut out = String::new();
    for (n, unit) in [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")] {
        if n > 0 {
            out += &format!("{n}{unit}");
        }
    }
    let ms = d.subsec_millis();
    if ms > 0 || out.is_empty() {
        out += &format!("{ms}ms");
    }
    out
}

/// Parses `text` as one or more `<integer><unit>` parts; `None` if it is not that shape
/// or does not fit in a `Duration`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let part = match &rest[..letters] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60)?),
            "h" => Duration::from_secs(number.checked_mul(3600)?),
            _ => return None,
        };
        rest = &rest[letters..];
        total = total.checked_add(part)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_are_written() {
        for text in ["16m40s", "24h", "10m", "250ms", "1h1s", "0ms", "2s500ms"] {
            assert_eq!(fmt_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn units_and_sums() {
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "5",
            "s",
            "1.5s",
            "5 s",
            "-1s",
            "5sec",
            "1d",
            "ms5",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
