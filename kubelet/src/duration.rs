//! Durations as text: Go's (`time.ParseDuration` / `Duration.String`), the
//! format of every duration in a KubeletConfiguration file and of the
//! back-off messages, and kubectl's `HumanDuration` (the AGE and LAST SEEN
//! columns of pods and events). A leaf module: configuration, back-off,
//! status and events all use it.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const SEC: u128 = 1_000_000_000;
const MIN: u128 = 60 * SEC;
const HOUR: u128 = 60 * MIN;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => SEC,
        "m" => MIN,
        "h" => HOUR,
        _ => return None,
    })
}

/// Parses a Go duration such as `20s`, `1m0s`, `1h2m3.5s`, `500ms` or `0`.
/// Negative durations are refused: no setting of ours can be negative.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let mut s = input;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(err("missing unit"));
        }
        let scale = unit_nanos(unit).ok_or_else(|| err("unknown unit"))?;
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("overflow"))?
        };
        let mut value = int.checked_mul(scale).ok_or_else(|| err("overflow"))?;
        // The fraction as an integer over 10^digits (at most 24 digits are
        // significant), rounded to the nearest nanosecond.
        let (mut frac, mut div) = (0u128, 1u128);
        for d in frac_part.bytes().take(24) {
            frac = frac * 10 + u128::from(d - b'0');
            div *= 10;
        }
        // Checked: an integer part just below the overflow plus its fraction can still overflow.
        value = value
            .checked_add((frac * scale + div / 2) / div)
            .ok_or_else(|| err("overflow"))?;
        total = total.checked_add(value).ok_or_else(|| err("overflow"))?;
        s = rest;
    }
    if total > i64::MAX as u128 {
        return Err(err("overflow"));
    }
    Ok(Duration::from_nanos(total as u64))
}

fn fixed(value: u128, prec: u32) -> String {
    let div = 10u128.pow(prec);
    let (int, frac) = (value / div, value % div);
    if frac == 0 {
        return int.to_string();
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// Prints a duration as Go's `Duration.String` does: `0s`, `500ms`, `20s`,
/// `1m0s`, `1h2m3.5s`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < US {
        return format!("{ns}ns");
    }
    if ns < MS {
        return format!("{}\u{b5}s", fixed(ns, 3));
    }
    if ns < SEC {
        return format!("{}ms", fixed(ns, 6));
    }
    let (h, rest) = (ns / HOUR, ns % HOUR);
    let (m, rest) = (rest / MIN, rest % MIN);
    let secs = fixed(rest, 9);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// kubectl's `HumanDuration` of `secs` seconds: `45s`, `3m20s`, `15m`,
/// `5h3m`, `2d4h`, `3y10d`; `<invalid>` below -1 s.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        // From Go's time/time_test.go parseDurationTests.
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5 * SEC as u64),
            ("30s", 30 * SEC as u64),
            ("1478s", 1478 * SEC as u64),
            ("+5s", 5 * SEC as u64),
            ("5.0s", 5 * SEC as u64),
            ("5.6s", 5_600_000_000),
            ("5.s", 5 * SEC as u64),
            (".5s", 500_000_000),
            ("1.0s", SEC as u64),
            ("1.00s", SEC as u64),
            ("1.004s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * SEC as u64),
            ("15m", 15 * MIN as u64),
            ("16h", 16 * HOUR as u64),
            ("3h30m", (3 * HOUR + 30 * MIN) as u64),
            ("10.5s4m", (4 * MIN + 10 * SEC + 500 * MS) as u64),
            (
                "1h2m3s4ms5us6ns",
                (HOUR + 2 * MIN + 3 * SEC + 4 * MS + 5 * US + 6) as u64,
            ),
            (
                "39h9m14.425s",
                (39 * HOUR + 9 * MIN + 14 * SEC + 425 * MS) as u64,
            ),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * MIN as u64),
            ("1m0s", MIN as u64),
            ("1h2m3.5s", (HOUR + 2 * MIN + 3 * SEC + 500 * MS) as u64),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(*want)), "{s}");
        }
        for bad in [
            "", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "-1s", "1.2.3s", "10 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    /// Far beyond Go's range (refused as upstream does), including an integer part whose
    /// product with the unit fits a u128 only without its fraction (an unchecked add).
    #[test]
    fn overflows_are_errors() {
        let max_hours = u128::MAX / HOUR;
        for s in [
            format!("{max_hours}.9999h"),
            format!("{max_hours}h"),
            format!("{}h", max_hours + 1),
            format!("{}ns", u128::MAX),
            format!("{}0ns", u128::MAX),
            "9223372036854775808ns".to_string(),
            "2562048h".to_string(),
        ] {
            assert_eq!(
                parse_duration(&s).map_err(|e| e.reason),
                Err("overflow"),
                "{s}"
            );
        }
        assert_eq!(
            parse_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
    }

    #[test]
    fn format_table() {
        // From Go's time/time_test.go durationTests.
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            ((4 * MIN + 5 * SEC) as u64, "4m5s"),
            ((4 * MIN + 5001 * MS) as u64, "4m5.001s"),
            ((5 * HOUR + 6 * MIN + 7001 * MS) as u64, "5h6m7.001s"),
            ((8 * MIN + 1) as u64, "8m0.000000001s"),
            (20 * SEC as u64, "20s"),
            (MIN as u64, "1m0s"),
            (300 * SEC as u64, "5m0s"),
            (500 * MS as u64, "500ms"),
            (HOUR as u64, "1h0m0s"),
        ];
        for (ns, want) in cases {
            assert_eq!(format_duration(Duration::from_nanos(*ns)), *want);
        }
    }

    #[test]
    fn round_trip() {
        for s in ["20s", "1m0s", "1h2m3.5s", "500ms", "2h0m0s", "1.5\u{b5}s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    // From kubectl's duration_test.go.
    #[test]
    fn human_durations() {
        let cases = [
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (70, "70s"),
            (119, "119s"),
            (120, "2m"),
            (190, "3m10s"),
            (600, "10m"),
            (70 * 60, "70m"),
            (179 * 60, "179m"),
            (180 * 60, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (47 * 3600, "47h"),
            (49 * 3600, "2d1h"),
            (48 * 3600, "2d"),
            ((8 * 24 + 2) * 3600, "8d"),
            (367 * 24 * 3600, "367d"),
            ((365 * 2 * 24 + 25) * 3600, "2y1d"),
            ((365 * 8 * 24 + 2) * 3600, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
