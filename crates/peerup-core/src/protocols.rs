//! Every protocol ID peerup speaks, and only here (`scripts/check-layers` fails on a protocol ID
//! literal anywhere else). Those the Go original speaks match it, so the two interoperate; the
//! others are peerup's own, each negotiated so that a peer without it falls back.

/// The Kademlia DHT protocol outside any namespace.
pub const KAD: &str = "/peerup/kad/1.0.0";
/// How every Kademlia protocol ID ends, namespaced or not (and libp2p's own).
pub const KAD_SUFFIX: &str = "/kad/1.0.0";

/// The Kademlia DHT protocol: [`KAD`], or `/peerup/<network>/kad/1.0.0` in a namespace.
pub fn kad(network: Option<&str>) -> String {
    match network {
        Some(ns) => format!("/peerup/{ns}{KAD_SUFFIX}"),
        None => KAD.to_string(),
    }
}

/// The stream protocol of an exposed service: `/peerup/<name>/1.0.0`.
pub fn service(name: &str) -> String {
    format!("/peerup/{name}/1.0.0")
}

/// The service name in a service stream protocol, if `protocol` is one.
pub fn service_name(protocol: &str) -> Option<&str> {
    protocol.strip_prefix("/peerup/")?.strip_suffix("/1.0.0").filter(|n| !n.contains('/'))
}

/// The default ping-pong protocol (config key `protocols.ping_pong.id`).
pub const DEFAULT_PING_PONG: &str = "/pingpong/1.0.0";

/// The pairing rendezvous at a relay (peerup only; the Go original has no equivalent).
pub const PAIR_RENDEZVOUS: &str = "/peerup/pair-rendezvous/1.0.0";

/// Group introductions, relay → member (peerup only).
pub const GROUP_INTRO: &str = "/peerup/group-intro/1.0.0";

/// libp2p's identify protocol.
pub const IDENTIFY: &str = "/ipfs/id/1.0.0";

/// libp2p's TLS 1.3 handshake (`crate::transport::tls`).
pub const TLS: &str = "/tls/1.0.0";

/// yamux (`crate::transport::mux`).
pub const YAMUX: &str = "/yamux/1.0.0";

/// The RTT probe of `traceroute` (`crate::diag`; peerup only).
pub const RTT_PROBE: &str = "/peerup/rtt-probe/1.0.0";

/// The bulk path (`crate::tunnel::bulk`): named in multistream-select in place of [`TLS`], and
/// the ALPN of its handshake (peerup only).
pub const BULK: &str = "/peerup-bulk/1.2.0";

/// A hole punch for one bulk connection (`crate::tunnel::punch`; peerup only).
pub const BULK_PUNCH: &str = "/peerup/bulk-punch/1.0.0";

/// A peer asks its relay for a leg pair (`crate::tunnel::legs`; peerup only).
pub const LEGS_OPEN: &str = "/peerup/relay-legs/open/1.0.0";

/// A relay tells a peer that a leg pair awaits it (peerup only).
pub const LEGS_INCOMING: &str = "/peerup/relay-legs/incoming/1.0.0";

/// A leg on a relay's TCP listener, named in place of [`TLS`] (peerup only).
pub const LEGS_SECURITY: &str = "/peerup-relay-leg/1.0.0";

/// Identify agent prefix of peerup nodes.
pub const AGENT_PREFIX: &str = "peerup/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_go_original() {
        assert_eq!(kad(None), "/peerup/kad/1.0.0");
        assert_eq!(kad(Some("lab")), "/peerup/lab/kad/1.0.0");
        assert_eq!(service("ssh"), "/peerup/ssh/1.0.0");
        assert_eq!(service_name("/peerup/ssh/1.0.0"), Some("ssh"));
        assert_eq!(service_name("/peerup/kad/x/1.0.0"), None);
        assert_eq!(service_name("/pingpong/1.0.0"), None);
    }
}
