//! One line of an `authorized_keys` file: `<peer-id> [key=value …] [# comment]`.
//!
//! Known attributes are checked when the line is parsed, so a typo in `expires=` is an error rather
//! than a silently permanent authorization. Unknown attributes are kept as they are.

use std::fmt;

use jiff::Timestamp;
use libp2p::PeerId;

/// Attribute: when the authorization ends (RFC 3339).
pub const ATTR_EXPIRES: &str = "expires";
/// Attribute: the SAS verification marker, `sha256:<8 hex>`.
pub const ATTR_VERIFIED: &str = "verified";
/// Attribute: the pairing group, 8 lowercase hex characters.
pub const ATTR_GROUP: &str = "group";
/// Attribute: proof of pairing, 64 lowercase hex characters (HMAC-SHA256).
pub const ATTR_HMAC_PROOF: &str = "hmac_proof";

/// Why a line is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineErrorKind {
    /// The first field is not a peer ID.
    #[error("invalid peer ID {token:?}: {reason}")]
    InvalidPeerId {
        /// The text found.
        token: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A known attribute has a malformed value.
    #[error("invalid {key}={value:?}: {expected}")]
    InvalidAttribute {
        /// The attribute name.
        key: String,
        /// Its value.
        value: String,
        /// What the value should look like.
        expected: &'static str,
    },
    /// A field that is neither the peer ID nor `key=value`.
    #[error("unexpected text {0:?} (attributes are key=value; comments start with #)")]
    UnexpectedToken(String),
    /// The same peer appears on an earlier line.
    #[error("duplicate entry for {peer} (first on line {first_line})")]
    Duplicate {
        /// The repeated peer.
        peer: PeerId,
        /// The line of its first entry.
        first_line: usize,
    },
}

/// An authorized peer and what is recorded about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    peer_id: PeerId,
    attrs: Vec<(String, String)>,
    comment: Option<String>,
    expires: Option<Timestamp>,
}

impl Entry {
    /// A new entry with an optional comment; newlines and NULs in the comment are removed.
    pub fn new(peer_id: PeerId, comment: Option<&str>) -> Self {
        let comment = comment
            .map(|c| c.chars().filter(|ch| !matches!(ch, '\n' | '\r' | '\0')).collect::<String>())
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        Self { peer_id, attrs: Vec::new(), comment, expires: None }
    }

    /// The peer.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The comment, without the `#`.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The value of an attribute.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All attributes, in file order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The SAS verification marker, if the peer was verified.
    pub fn verified(&self) -> Option<&str> {
        self.attr(ATTR_VERIFIED)
    }

    /// The pairing group.
    pub fn group(&self) -> Option<&str> {
        self.attr(ATTR_GROUP)
    }

    /// When the authorization ends.
    pub fn expires(&self) -> Option<Timestamp> {
        self.expires
    }

    /// Whether the authorization has ended at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }

    /// Sets (or replaces) an attribute after checking its value.
    pub fn set_attr(&mut self, key: &str, value: &str) -> Result<(), LineErrorKind> {
        let parsed = check_attr(key, value)?;
        if key == ATTR_EXPIRES {
            self.expires = parsed;
        }
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.attrs.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// Parses a line. `Ok(None)` for blank and comment-only lines.
    pub fn parse(line: &str) -> Result<Option<Self>, LineErrorKind> {
        let (data, comment) = match line.split_once('#') {
            Some((d, c)) => (d, Some(c.trim())),
            None => (line, None),
        };
        let mut fields = data.split_whitespace();
        let Some(token) = fields.next() else {
            return Ok(None);
        };
        let peer_id = token.parse::<PeerId>().map_err(|e| LineErrorKind::InvalidPeerId {
            token: token.to_string(),
            reason: e.to_string(),
        })?;
        let mut entry = Entry::new(peer_id, comment);
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| LineErrorKind::UnexpectedToken(field.to_string()))?;
            entry.set_attr(key, value)?;
        }
        Ok(Some(entry))
    }
}

/// Checks a known attribute's value; returns the parsed expiry for `expires`.
fn check_attr(key: &str, value: &str) -> Result<Option<Timestamp>, LineErrorKind> {
    let invalid = |expected| LineErrorKind::InvalidAttribute {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    };
    let is_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match key {
        ATTR_EXPIRES => value
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|_| invalid("an RFC 3339 time such as 2026-12-31T23:59:59Z")),
        ATTR_VERIFIED => value
            .strip_prefix("sha256:")
            .filter(|h| is_hex(h, 8))
            .map(|_| None)
            .ok_or_else(|| invalid("sha256: followed by 8 lowercase hex characters")),
        ATTR_GROUP if !is_hex(value, 8) => Err(invalid("8 lowercase hex characters")),
        ATTR_HMAC_PROOF if !is_hex(value, 64) => Err(invalid("64 lowercase hex characters")),
        _ if value.is_empty() || value.contains('#') => Err(invalid("a value without spaces or #")),
        _ => Ok(None),
    }
}

impl fmt::Display for Entry {
    /// The canonical line: `<id>  key=value …  # comment`, two spaces between fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_id)?;
        for (k, v) in &self.attrs {
            write!(f, "  {k}={v}")?;
        }
        if let Some(c) = &self.comment {
            write!(f, "  # {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";

    #[test]
    fn parses_go_lines() {
        let e = Entry::parse(&format!(
            "{ID}  expires=2030-01-01T00:00:00Z  verified=sha256:63dcdd01  group=0a1b2c3d  # home server"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(e.peer_id().to_string(), ID);
        assert_eq!(e.comment(), Some("home server"));
        assert_eq!(e.verified(), Some("sha256:63dcdd01"));
        assert_eq!(e.group(), Some("0a1b2c3d"));
        assert_eq!(e.expires().unwrap().to_string(), "2030-01-01T00:00:00Z");
        assert!(!e.is_expired("2029-12-31T00:00:00Z".parse().unwrap()));
        assert!(e.is_expired("2030-01-01T00:00:00Z".parse().unwrap()));

        let bare = Entry::parse(ID).unwrap().unwrap();
        assert_eq!(bare.comment(), None);
        assert_eq!(bare.to_string(), ID);
        assert!(Entry::parse("   ").unwrap().is_none());
        assert!(Entry::parse("# just a comment").unwrap().is_none());
        // Everything after the first # is the comment, including further #.
        let c = Entry::parse(&format!("{ID} # a # b")).unwrap().unwrap();
        assert_eq!(c.comment(), Some("a # b"));
    }

    #[test]
    fn keeps_unknown_attributes_and_order() {
        let line = format!("{ID}  zeta=1  verified=sha256:0011aabb  custom=x-y  # c");
        let e = Entry::parse(&line).unwrap().unwrap();
        assert_eq!(e.to_string(), line);
    }

    #[test]
    fn rejects_bad_lines() {
        type Check = fn(&LineErrorKind) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("not-a-peer-id".into(), |e| matches!(e, LineErrorKind::InvalidPeerId { .. })),
            (format!("{ID} expires=tomorrow"), |e| {
                matches!(e, LineErrorKind::InvalidAttribute { .. })
            }),
            (format!("{ID} verified=sha256:XYZ"), |e| {
                matches!(e, LineErrorKind::InvalidAttribute { .. })
            }),
            (format!("{ID} group=abc"), |e| matches!(e, LineErrorKind::InvalidAttribute { .. })),
            (format!("{ID} hmac_proof=00"), |e| {
                matches!(e, LineErrorKind::InvalidAttribute { .. })
            }),
            (format!("{ID} stray"), |e| matches!(e, LineErrorKind::UnexpectedToken(_))),
            (format!("{ID} =v"), |e| matches!(e, LineErrorKind::UnexpectedToken(_))),
        ];
        for (line, check) in cases {
            let err = Entry::parse(&line).unwrap_err();
            assert!(check(&err), "{line}: {err}");
        }
    }

    #[test]
    fn comment_is_sanitized() {
        let e = Entry::new(ID.parse().unwrap(), Some("evil\nline\r\0"));
        assert_eq!(e.comment(), Some("evilline"));
        assert_eq!(e.to_string(), format!("{ID}  # evilline"));
        assert_eq!(Entry::new(ID.parse().unwrap(), Some("  ")).comment(), None);
    }
}
