//! DNS-label names: service names and network namespaces share one rule,
//! `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`, because both end up inside protocol IDs.

/// A name broke the DNS-label rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid name {0:?}: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
)]
pub struct InvalidLabel(pub String);

/// Checks `name` against the DNS-label rule.
pub fn validate(name: &str) -> Result<(), InvalidLabel> {
    let bytes = name.as_bytes();
    let ok_inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ok_edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = (1..=63).contains(&bytes.len())
        && bytes.iter().all(ok_inner)
        && bytes.first().is_some_and(ok_edge)
        && bytes.last().is_some_and(ok_edge);
    if valid { Ok(()) } else { Err(InvalidLabel(name.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let long_ok = "a".repeat(63);
        let too_long = "a".repeat(64);
        for (name, ok) in [
            ("ssh", true),
            ("a", true),
            ("web-1", true),
            ("0", true),
            (long_ok.as_str(), true),
            ("", false),
            ("-ssh", false),
            ("ssh-", false),
            ("SSH", false),
            ("my_svc", false),
            ("a.b", false),
            ("ssh\n", false),
            (too_long.as_str(), false),
        ] {
            assert_eq!(validate(name).is_ok(), ok, "{name:?}");
        }
    }
}
