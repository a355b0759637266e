//! The doctor's findings: each check turned into one line with a status and, where there is one, a
//! fix. Local faults (file modes, the clock, expired authorized_keys entries) are checked here;
//! the network ones are read from the core's [`Report`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::doctor::{Basis, Reach, RelayReport, Report, Reservation, Upnp};
use peerup_core::fsutil::{self, FsError};
use peerup_core::netinfo::NatMapping;
use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

/// One line of the doctor's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`key_permissions`, `nat_mapping`, …).
    pub id: &'static str,
    pub status: Status,
    pub summary: String,
    pub hint: Option<String>,
}

fn f(
    id: &'static str,
    status: Status,
    summary: impl Into<String>,
    hint: Option<String>,
) -> Finding {
    Finding { id, status, summary: summary.into(), hint }
}

/// A secret file that others may read or write, or that is missing.
pub fn permissions(id: &'static str, what: &str, path: &Path) -> Finding {
    match fsutil::check_private(path) {
        Ok(()) => f(id, Status::Ok, format!("{what} {} is private (0600)", path.display()), None),
        Err(FsError::InsecurePermissions { mode, .. }) => f(
            id,
            Status::Fail,
            format!("{what} {} has mode {mode:04o}: other users can read it", path.display()),
            Some(format!("chmod 600 {}", path.display())),
        ),
        Err(e) => f(id, Status::Fail, format!("{what}: {e}"), Some("run 'peerup init'".into())),
    }
}

/// A system clock earlier than this binary's file (written at build or install time) is wrong.
/// Only a clock that is behind can be caught without asking a third party.
pub fn clock(now: SystemTime, binary_written: Option<SystemTime>) -> Finding {
    // File times may come from a machine whose clock ran slightly ahead.
    const SLACK: Duration = Duration::from_secs(300);
    match binary_written.and_then(|b| b.duration_since(now).ok()) {
        Some(behind) if behind > SLACK => f(
            "clock",
            Status::Fail,
            format!(
                "the system clock is at least {} behind this binary's file time",
                humantime::format_duration(Duration::from_secs(behind.as_secs()))
            ),
            Some(
                "set the clock (e.g. 'timedatectl set-ntp true'); expiry dates depend on it".into(),
            ),
        ),
        _ => f("clock", Status::Ok, "the system clock is not behind this binary's file time", None),
    }
}

/// Entries of authorized_keys whose `expires=` has passed: those peers are refused.
pub fn expired_entries(keys: &AuthorizedKeys, now: Timestamp) -> Vec<Finding> {
    let expired: Vec<Finding> = keys
        .entries()
        .filter(|e| e.is_expired(now))
        .map(|e| {
            let who = e.comment().map(|c| format!(" ({c})")).unwrap_or_default();
            let when = e.expires().map(|t| t.to_string()).unwrap_or_default();
            f(
                "authorized_keys_expired",
                Status::Warn,
                format!("authorized peer {}{who} expired at {when}: it is refused", e.peer_id()),
                Some(format!(
                    "peerup auth remove {0}, or re-add it: peerup auth add {0} --expires 30d",
                    e.peer_id()
                )),
            )
        })
        .collect();
    if expired.is_empty() {
        let ok = f("authorized_keys_expired", Status::Ok, "no authorized peer has expired", None);
        return vec![ok];
    }
    expired
}

fn short(r: &RelayReport) -> String {
    crate::output::short_id(r.peer)
}

fn reach(id: &'static str, transport: &str, r: &RelayReport, reach: &Reach) -> Option<Finding> {
    let relay = short(r);
    Some(match reach {
        Reach::Ok { rtt, .. } => f(
            id,
            Status::Ok,
            format!("relay {relay} reachable over {transport} (connected in {} ms)", rtt.as_millis()),
            None,
        ),
        Reach::Failed { addr, reason } => f(
            id,
            Status::Fail,
            format!("relay {relay} unreachable over {transport} at {addr}: {reason}"),
            Some(match transport {
                "QUIC" => "allow outgoing UDP to the relay's port; the relay must listen on /udp/<port>/quic-v1",
                _ => "check the relay address and that the relay runs; is this peer authorized on it ('peerup relay authorize <id>')?",
            }
            .to_string()),
        ),
        Reach::NoEndpoint | Reach::NotTried => return None,
    })
}

fn reservation(r: &RelayReport, from_daemon: Option<bool>) -> Finding {
    let relay = short(r);
    let id = "relay_reservation";
    // Whether or not a daemon runs, the probe's connection shows a relay that refuses us.
    if let Reservation::NotAuthorized { node } = &r.reservation {
        return not_authorized(r, node);
    }
    if let Some(held) = from_daemon {
        return match held {
            true => f(id, Status::Ok, format!("the running daemon holds a reservation on relay {relay}"), None),
            false => f(
                id,
                Status::Fail,
                format!("the running daemon holds no reservation on relay {relay}"),
                Some("see the daemon's log; the relay must authorize this peer: peerup relay authorize <id>".into()),
            ),
        };
    }
    match &r.reservation {
        Reservation::Accepted { circuit_duration, circuit_bytes } => {
            let dur = circuit_duration.map_or("no time limit".into(), |d| {
                format!("{} per circuit", humantime::format_duration(d))
            });
            let bytes = circuit_bytes.map_or("no data limit".into(), |b| format!("{} per circuit", size(b)));
            f(id, Status::Ok, format!("relay {relay} grants a reservation ({dur}, {bytes})"), None)
        }
        Reservation::Refused(reason) => f(
            id,
            Status::Fail,
            format!("relay {relay} refused a reservation: {reason}"),
            Some("authorize this peer on the relay: peerup relay authorize <peer ID from 'peerup whoami'>".into()),
        ),
        Reservation::TimedOut => f(
            id,
            Status::Warn,
            format!("relay {relay} did not answer the reservation request in time"),
            Some("try again; if it persists, check the relay's log".into()),
        ),
        Reservation::Unreachable => f(id, Status::Fail, format!("no reservation: relay {relay} is unreachable"), None),
        Reservation::NotAuthorized { node } => not_authorized(r, node),
        Reservation::Pending | Reservation::NotTried => {
            f(id, Status::Info, format!("reservation on relay {relay} not tested"), None)
        }
    }
}

/// A relay whose gate hung up on us: in plain words, with the command that fixes it.
fn not_authorized(r: &RelayReport, node: &peerup_core::PeerId) -> Finding {
    let msg = peerup_core::relay::refusal_message(&r.peer, node);
    f(
        "relay_reservation",
        Status::Fail,
        msg,
        Some(format!("on the relay: peerup relay authorize {node}")),
    )
}

/// Bytes in the largest binary unit that keeps a whole number in front.
fn size(b: u64) -> String {
    let units = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match units.iter().find(|(n, _)| b >= *n) {
        Some((n, unit)) => format!("{:.1} {unit}", b as f64 / *n as f64),
        None => format!("{b} bytes"),
    }
}

fn basis(b: Basis) -> &'static str {
    match b {
        Basis::TwoAddresses => "two relay addresses",
        Basis::TwoPorts => "two ports of one relay address",
        Basis::OneEndpoint => "one relay endpoint",
        Basis::Nothing => "no QUIC connection to a relay",
    }
}

/// The network findings of a report. `daemon`: per relay, whether a running daemon holds its
/// reservation (`None`: no daemon, the probe's own reservation test counts).
pub fn network(report: &Report, daemon: &dyn Fn(&RelayReport) -> Option<bool>) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in &report.relays {
        out.extend(reach("relay_tcp", "TCP", r, &r.tcp));
        out.extend(reach("relay_quic", "QUIC", r, &r.quic));
        out.push(reservation(r, daemon(r)));
    }
    let m = &report.mapping;
    let how = basis(m.basis);
    out.push(match m.mapping {
        NatMapping::None => f("nat_mapping", Status::Ok, format!("no NAT: relays see this host's own address ({how})"), None),
        NatMapping::EndpointIndependent => f(
            "nat_mapping",
            Status::Ok,
            format!("NAT mapping is endpoint-independent: hole punching can work (measured against {how})"),
            None,
        ),
        NatMapping::EndpointDependent => f(
            "nat_mapping",
            Status::Warn,
            format!("NAT mapping is endpoint-dependent (symmetric): direct connections fail, the relay carries traffic (measured against {how})"),
            Some("enable UPnP/NAT-PMP or a port forward on the router, or use IPv6; peers behind a cone NAT still reach you through the relay".into()),
        ),
        NatMapping::Unknown => f(
            "nat_mapping",
            Status::Info,
            format!("NAT mapping unknown: measured against {how} only"),
            Some("give the relay a second QUIC port (e.g. /ip4/0.0.0.0/udp/7778/quic-v1) or add a second relay".into()),
        ),
    });
    let cgnat = report.findings.behind_cgnat();
    out.push(match cgnat {
        true => f(
            "cgnat",
            Status::Warn,
            "carrier-grade NAT (100.64.0.0/10) between this host and the internet",
            Some("ask the ISP for a public IPv4 address or use IPv6; otherwise the relay carries most traffic".into()),
        ),
        false => f("cgnat", Status::Ok, "no carrier-grade NAT seen", None),
    });
    let hops: Vec<String> = report.hops.iter().map(|h| h.addr.to_string()).collect();
    let path = if hops.is_empty() {
        "no router answered before the relay".into()
    } else {
        hops.join(" -> ")
    };
    out.push(match report.upstream.double_nat() {
        true => f(
            "double_nat",
            Status::Warn,
            format!(
                "double NAT: {} private hops before the internet ({path})",
                report.upstream.nat_hops
            ),
            Some("put the inner router in bridge mode, or forward the port on both".into()),
        ),
        false => f("double_nat", Status::Ok, format!("no double NAT ({path})"), None),
    });
    let v4 = public(report, true);
    let v6 = public(report, false);
    out.push(match v4.is_empty() {
        false => {
            f("public_ipv4", Status::Ok, format!("public IPv4 address: {}", v4.join(", ")), None)
        }
        true => f("public_ipv4", Status::Info, "no public IPv4 address on any interface", None),
    });
    out.push(match v6.is_empty() {
        false => {
            f("public_ipv6", Status::Ok, format!("public IPv6 address: {}", v6.join(", ")), None)
        }
        true => f("public_ipv6", Status::Info, "no public IPv6 address on any interface", None),
    });
    out.push(match &report.upnp {
        Upnp::Found { location, .. } => f("upnp", Status::Ok, format!("UPnP gateway found: {location}"), None),
        Upnp::NotFound => f(
            "upnp",
            Status::Info,
            "no UPnP gateway found",
            Some("enable UPnP on the router, and network.enable_upnp in the config, to get a port mapping".into()),
        ),
        Upnp::Skipped => f("upnp", Status::Info, "UPnP search skipped", None),
    });
    out
}

/// The public addresses among the interfaces, IPv4 or IPv6.
pub fn public(report: &Report, v4: bool) -> Vec<String> {
    report
        .addresses
        .iter()
        .filter(|ip| match ip {
            std::net::IpAddr::V4(a) => v4 && peerup_core::netinfo::is_global_v4(*a),
            std::net::IpAddr::V6(a) => !v4 && peerup_core::netinfo::is_global_v6(*a),
        })
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn permissions_finding_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("identity.key");
        std::fs::write(&key, b"x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(permissions("key_permissions", "key", &key).status, Status::Ok);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let bad = permissions("key_permissions", "key", &key);
        assert_eq!(bad.status, Status::Fail);
        assert!(bad.summary.contains("0644"), "{bad:?}");
        assert_eq!(bad.hint, Some(format!("chmod 600 {}", key.display())));
        let missing = permissions("key_permissions", "key", &dir.path().join("none"));
        assert_eq!(missing.status, Status::Fail);
    }

    #[test]
    fn clock_behind_the_binary_is_caught() {
        let now = SystemTime::now();
        assert_eq!(clock(now, Some(now - Duration::from_secs(86400))).status, Status::Ok);
        assert_eq!(clock(now, None).status, Status::Ok);
        assert_eq!(clock(now, Some(now + Duration::from_secs(60))).status, Status::Ok, "slack");
        let behind = clock(now, Some(now + Duration::from_secs(86400 * 400)));
        assert_eq!(behind.status, Status::Fail);
        assert!(behind.hint.is_some());
    }

    #[test]
    fn expired_entries_are_listed_with_a_fix() {
        let a = "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt";
        let b = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
        let text = format!("{a} expires=2020-01-01T00:00:00Z # old laptop\n{b}\n");
        let keys = AuthorizedKeys::parse(&text);
        let found = expired_entries(&keys, Timestamp::now());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].status, Status::Warn);
        assert!(found[0].summary.contains(a) && found[0].summary.contains("old laptop"));
        assert!(found[0].hint.as_deref().unwrap().contains(&format!("peerup auth remove {a}")));
        let fresh = AuthorizedKeys::parse(&format!("{b}\n"));
        assert_eq!(expired_entries(&fresh, Timestamp::now())[0].status, Status::Ok);
    }
}
