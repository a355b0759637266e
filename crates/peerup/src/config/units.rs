//! Duration and data-size values as written in config files (`2m`, `1h30m`, `64MB`).

use std::time::Duration;

/// Parses a duration such as `2m`, `1h30m`, `2m0s` (Go's format) or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); use e.g. 30s, 2m, 1h30m"))
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
