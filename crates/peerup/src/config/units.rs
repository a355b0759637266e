//! Duration and data-size values as written in config files (`2m`, `1h30m`, `64MB`).

use std::time::Duration;

/// Parses a duration as Go's `time.ParseDuration` does (`2m`, `1h30m`, `2m0s`, `1.5h`, `300ms`,
/// `0`), so that every Go peer-up file loads; forms Go does not know but earlier peerup releases
/// took (`30d`, `2 minutes`) are still accepted. Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    go_duration(s)
        .or_else(|| humantime::parse_duration(s).ok())
        .ok_or_else(|| "not a duration; use e.g. 30s, 2m, 1h30m or 1.5h".to_string())
}

/// Go's duration syntax: one or more `<decimal number><unit>`, units `ns`, `us`/`µs`/`μs`, `ms`,
/// `s`, `m`, `h`; a bare `0` is allowed. `None` when `s` is not in that syntax or overflows.
fn go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = whole.checked_mul(unit_ns)?;
        // The fraction, to the nanosecond (Go truncates the same way).
        let mut scale = unit_ns;
        for d in frac.bytes().map(|b| u128::from(b - b'0')) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part += d * scale;
        }
        total_ns = total_ns.checked_add(part)?;
        rest = next;
    }
    // Go's limit: about 292 years.
    let ns = u64::try_from(total_ns).ok().filter(|&n| n <= i64::MAX as u64)?;
    Some(Duration::from_nanos(ns))
}

/// Parses a data size: a whole number with an optional `B`, `KB`, `MB` or `GB` suffix (powers of
/// 1024, as in Go peer-up), case-insensitive.
pub fn parse_data_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let (digits, mult) = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)]
        .iter()
        .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|d| (d.trim_end(), *m)))
        .unwrap_or((t.as_str(), 1));
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| "not a data size; use e.g. 128KB, 64MB or 1GB".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2m0s").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
    }

    /// Every form Go's `time.ParseDuration` takes, with the value Go gives it.
    #[test]
    fn go_durations() {
        for (s, d) in [
            ("1.5h", Duration::from_secs(5400)),
            ("0.5m", Duration::from_secs(30)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("300ms", Duration::from_millis(300)),
            ("1h1.5m", Duration::from_secs(3690)),
            ("2h45m30.25s", Duration::from_millis(9_930_250)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("+2m", Duration::from_secs(120)),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in
            ["1.5", "h", ".h", "1..5h", "1.5.2h", "1x", "-1h", "99999999999999999999h", "1h 30m x"]
        {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_sizes() {
        for (s, n) in
            [("64MB", 64 << 20), ("128kb", 128 << 10), ("1GB", 1 << 30), ("512", 512), ("7 B", 7)]
        {
            assert_eq!(parse_data_size(s).unwrap(), n, "{s}");
        }
        for s in ["", "MB", "-1MB", "1.5GB", "12TB", "99999999999GB"] {
            assert!(parse_data_size(s).is_err(), "{s}");
        }
    }
}
