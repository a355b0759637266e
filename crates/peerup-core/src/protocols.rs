//! Every protocol ID peerup speaks. They match the Go original so the two interoperate.

/// The Kademlia DHT protocol: `/peerup/kad/1.0.0`, or `/peerup/<network>/kad/1.0.0` in a namespace.
pub fn kad(network: Option<&str>) -> String {
    match network {
        Some(ns) => format!("/peerup/{ns}/kad/1.0.0"),
        None => "/peerup/kad/1.0.0".to_string(),
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
