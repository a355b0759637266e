//! The relay's rules for entries that pairing adds to its authorized_keys: what an inviter's word
//! is worth, and membership expiry times.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use peerup_core::PeerId;
use peerup_core::authorized_keys::{ATTR_EXPIRES, AuthorizedKeys, Entry};

/// The attribute naming the peer the operator authorized that vouches, directly or through a
/// chain of invites, for an entry added by pairing.
const ATTR_SPONSOR: &str = "sponsor";
/// Peers one operator-authorized peer may bring in by invites, over its whole chain of invites
/// (counting entries that have not expired). A person's own machines and a few friends.
const MAX_ADMITTED_PER_SPONSOR: usize = 16;

/// The entry for a joiner an inviter vouches for. The inviter must be authorized now (it may have
/// been removed or expired since it opened the invite); the joiner's authorization ends when the
/// inviter's does (`expires=` carried over), and it has the inviter's sponsor (the inviter itself
/// when the operator authorized it), who may bring in at most [`MAX_ADMITTED_PER_SPONSOR`] peers.
/// So a joiner can invite in turn, but neither outlive nor outnumber what the operator allowed.
pub(super) fn invited_entry(
    keys: &AuthorizedKeys,
    joiner: PeerId,
    inviter: PeerId,
    now: Timestamp,
) -> Result<Entry, String> {
    let Some(by) = keys.get(&inviter).filter(|e| !e.is_expired(now)) else {
        return Err("the inviter is no longer authorized on this relay".into());
    };
    let sponsor = by.attr(ATTR_SPONSOR).map_or_else(|| inviter.to_string(), String::from);
    let sponsor_ok = sponsor.parse::<PeerId>().is_ok_and(|p| keys.is_authorized(&p, now));
    if !sponsor_ok {
        return Err(format!(
            "the inviter's sponsor {sponsor} is no longer authorized on this relay"
        ));
    }
    let admitted = keys
        .entries()
        .filter(|e| !e.is_expired(now) && e.attr(ATTR_SPONSOR) == Some(sponsor.as_str()))
        .count();
    if admitted >= MAX_ADMITTED_PER_SPONSOR {
        return Err(format!(
            "{sponsor} has brought in {admitted} peers, the most this relay allows \
             ({MAX_ADMITTED_PER_SPONSOR}); its operator can authorize more"
        ));
    }
    let mut e = Entry::new(joiner, Some(&format!("paired via {inviter}")));
    e.set_attr(ATTR_SPONSOR, &sponsor).map_err(|e| e.to_string())?;
    if let Some(until) = by.expires() {
        e.set_attr(ATTR_EXPIRES, &until.to_string()).map_err(|e| e.to_string())?;
    }
    Ok(e)
}

/// `now + d` as an `expires=` time; an error rather than an overflow for absurd durations.
pub(super) fn expiry_after(now: Timestamp, d: Duration) -> Result<Timestamp, String> {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .ok_or_else(|| format!("a membership of {} is out of range", humantime::format_duration(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[String]) -> AuthorizedKeys {
        AuthorizedKeys::parse(&lines.join("\n"))
    }

    #[test]
    fn an_invited_entry_inherits_expiry_and_sponsor_and_the_inviter_must_be_current() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let (alice, bob, carol) = (PeerId::random(), PeerId::random(), PeerId::random());
        let k = keys(&[format!("{alice} expires=2030-02-01T00:00:00Z")]);
        let e = invited_entry(&k, bob, alice, now).unwrap();
        assert_eq!(e.expires(), Some("2030-02-01T00:00:00Z".parse().unwrap()));
        assert_eq!(e.attr(ATTR_SPONSOR), Some(alice.to_string().as_str()));
        assert_eq!(e.comment(), Some(format!("paired via {alice}").as_str()));

        // bob invites carol: alice stays the sponsor, the expiry carries on.
        let k = keys(&[format!("{alice} expires=2030-02-01T00:00:00Z"), e.to_string()]);
        let e = invited_entry(&k, carol, bob, now).unwrap();
        assert_eq!(e.attr(ATTR_SPONSOR), Some(alice.to_string().as_str()));
        assert_eq!(e.expires(), Some("2030-02-01T00:00:00Z".parse().unwrap()));

        // An expired or removed inviter vouches for no one; nor does one whose sponsor went.
        let later: Timestamp = "2030-03-01T00:00:00Z".parse().unwrap();
        let err = invited_entry(&k, carol, alice, later).unwrap_err();
        assert!(err.starts_with("the inviter is no longer authorized"), "{err}");
        let err = invited_entry(&keys(&[]), carol, alice, now).unwrap_err();
        assert!(err.starts_with("the inviter is no longer authorized"), "{err}");
        let orphan = keys(&[format!("{bob} sponsor={alice}")]);
        let err = invited_entry(&orphan, carol, bob, now).unwrap_err();
        assert!(err.contains("sponsor"), "{err}");
    }

    #[test]
    fn a_sponsor_brings_in_at_most_the_quota() {
        let now = Timestamp::now();
        let alice = PeerId::random();
        let mut lines = vec![alice.to_string()];
        for _ in 0..MAX_ADMITTED_PER_SPONSOR - 1 {
            lines.push(format!("{}  sponsor={alice}", PeerId::random()));
        }
        // Expired entries do not count.
        lines.push(format!("{}  sponsor={alice}  expires=2000-01-01T00:00:00Z", PeerId::random()));
        invited_entry(&keys(&lines), PeerId::random(), alice, now).unwrap();
        lines.push(format!("{}  sponsor={alice}", PeerId::random()));
        let err = invited_entry(&keys(&lines), PeerId::random(), alice, now).unwrap_err();
        assert!(err.contains(&format!("({MAX_ADMITTED_PER_SPONSOR})")), "{err}");
    }

    #[test]
    fn an_absurd_membership_is_an_error_not_a_panic() {
        let now = Timestamp::now();
        let ten_thousand_years = Duration::from_secs(10_000 * 365 * 24 * 3600);
        assert!(expiry_after(now, ten_thousand_years).unwrap_err().contains("out of range"));
        assert!(expiry_after(now, Duration::from_secs(u64::MAX)).is_err());
        let day = expiry_after(now, Duration::from_secs(86_400)).unwrap();
        assert_eq!(day, now.checked_add(SignedDuration::from_hours(24)).unwrap());
    }
}
