//! Durations written as strings with units: `"100ms"`, `"5s"`, `"1m"`, `"1h"`, or a sum
//! such as `"1m30s"`. A bare number is rejected on purpose: `timeout = 5` would
//! otherwise be ambiguous between seconds and milliseconds.

use std::time::Duration;

/// How a valid duration looks, for error messages.
pub(crate) const DURATION_FORM: &str =
    "a string with a unit such as \"500ms\", \"5s\" or \"1m\" (units: ms, s, m, h)";

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
