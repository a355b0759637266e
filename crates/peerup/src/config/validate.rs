//! Checks that go beyond YAML types: addresses parse, durations are positive, names are DNS labels.
//! Every problem names its key and shows the bad value. [`validate_node`]/[`validate_relay`] find
//! what refuses a start; [`node_warnings`] what Go peer-up only logs and skips (a bad `names:` or
//! `allowed_peers` entry), which a start reports but survives.

use std::fmt;
use std::net::SocketAddr;

use peerup_core::pairing::pake::is_peer_id;
use peerup_core::{Multiaddr, PeerId, label, relay_addr};

use super::relay_schema::RelayConfig;
use super::schema::NodeConfig;
use super::units::{parse_data_size, parse_duration};

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `relay.addresses[0]`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What is wrong.
    pub reason: String,
    /// The file's line that holds the value, when known ([`with_lines`]).
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.line {
            write!(f, "line {n}: ")?;
        }
        write!(f, "{}: {:?}: {}", self.key, self.value, self.reason)
    }
}

/// Fills in each problem's line: the first line of `text` (the config file) that holds its value.
pub fn with_lines(mut problems: Vec<Problem>, text: &str) -> Vec<Problem> {
    for p in &mut problems {
        if !p.value.trim().is_empty() {
            p.line = text.lines().position(|l| l.contains(p.value.as_str())).map(|i| i + 1);
        }
    }
    problems
}

/// Problems collected while walking a config.
#[derive(Default)]
struct Checker(Vec<Problem>);

impl Checker {
    fn fail(
        &mut self,
        key: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) {
        self.0.push(Problem {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
            line: None,
        });
    }

    fn check<T, E: fmt::Display>(&mut self, key: impl Into<String>, value: &str, r: Result<T, E>) {
        if let Err(e) = r {
            self.fail(key, value, e.to_string());
        }
    }

    fn non_empty(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(key, value, "required");
        }
    }

    fn multiaddrs(&mut self, key: &str, list: &[String], at_least_one: bool) {
        if at_least_one && list.is_empty() {
            self.fail(key, "[]", "at least one address is required");
        }
        for (i, a) in list.iter().enumerate() {
            self.check(format!("{key}[{i}]"), a, a.parse::<Multiaddr>());
        }
    }

    fn positive_duration(&mut self, key: &str, value: &str) {
        match parse_duration(value) {
            Ok(d) if d.is_zero() => self.fail(key, value, "must be greater than zero"),
            Ok(_) => {}
            Err(e) => self.fail(key, value, e),
        }
    }

    fn network(&mut self, key: &str, ns: Option<&str>) {
        if let Some(ns) = ns {
            self.check(key, ns, label::validate(ns));
        }
    }

    fn finish(self) -> Result<(), Vec<Problem>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// Checks a `host:port` service address.
pub fn check_local_address(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("expected host:port".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("port must be a number from 1 to 65535".into()),
    }
}

/// Checks a `host:port` to listen on: an IP address or a host name (`localhost:9091`, as Go
/// accepts), and a port (0 picks a free one).
pub fn check_listen_address(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !name_ok {
        return Err("expected host:port with an IP address or a host name".into());
    }
    port.parse::<u16>().map(|_| ()).map_err(|_| "port must be a number from 0 to 65535".into())
}

/// Checks a node config.
pub fn validate_node(c: &NodeConfig) -> Result<(), Vec<Problem>> {
    let mut k = Checker::default();
    k.non_empty("identity.key_file", &c.identity.key_file.to_string_lossy());
    k.multiaddrs("network.listen_addresses", &c.network.listen_addresses, true);
    if c.relay.addresses.is_empty() {
        k.fail("relay.addresses", "[]", "at least one relay is required");
    }
    for (i, a) in c.relay.addresses.iter().enumerate() {
        k.check(format!("relay.addresses[{i}]"), a, relay_addr::parse(a, None).map(|_| ()));
    }
    k.positive_duration("relay.reservation_interval", &c.relay.reservation_interval);
    k.non_empty("discovery.rendezvous", &c.discovery.rendezvous);
    k.network("discovery.network", c.discovery.network.as_deref());
    k.multiaddrs("discovery.bootstrap_peers", &c.discovery.bootstrap_peers, false);
    if c.security.enable_connection_gating {
        k.non_empty(
            "security.authorized_keys_file",
            &c.security.authorized_keys_file.to_string_lossy(),
        );
    }
    if !c.protocols.ping_pong.id.starts_with('/') {
        k.fail("protocols.ping_pong.id", &c.protocols.ping_pong.id, "must start with /");
    }
    for (name, svc) in &c.services {
        k.check(format!("services.{name}"), name, label::validate(name));
        let key = format!("services.{name}.local_address");
        k.check(key, &svc.local_address, check_local_address(&svc.local_address));
    }
    let metrics = &c.telemetry.metrics.listen_address;
    if !metrics.is_empty() {
        k.check("telemetry.metrics.listen_address", metrics, check_listen_address(metrics));
    }
    k.finish()
}

/// What a node start reports and skips, as Go peer-up does: an `allowed_peers` entry that is not a
/// peer ID (the rest of the list still applies), and a `names:` entry that cannot be used (the
/// other names still resolve).
pub fn node_warnings(c: &NodeConfig) -> Vec<Problem> {
    let mut k = Checker::default();
    for (name, svc) in &c.services {
        for (i, p) in svc.allowed_peers.iter().flatten().enumerate() {
            k.check(format!("services.{name}.allowed_peers[{i}]"), p, p.trim().parse::<PeerId>());
        }
    }
    for (name, id) in &c.names {
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            k.fail(format!("names.{name}"), name, "names must be non-empty without spaces");
        }
        if is_peer_id(name) {
            // Peer IDs resolve as themselves: such a name would be dead, or a trap if it ever won.
            k.fail(format!("names.{name}"), name, "a name must not be a peer ID");
        }
        k.check(format!("names.{name}"), id, id.parse::<PeerId>());
    }
    k.0
}

/// Keys of a relay config that Go peer-up uses and peerup cannot, with the reason: said by
/// `relay config validate` and at the relay's start.
pub fn relay_unsupported(c: &RelayConfig) -> Vec<Problem> {
    let mut k = Checker::default();
    if let Some(v) = c.resources.buffer_size {
        k.fail(
            "resources.buffer_size",
            v,
            "not applied: rust-libp2p's circuit relay has no buffer setting (each circuit runs on its connections' flow control)",
        );
    }
    if let Some(v) = c.resources.max_reservations_per_asn {
        k.fail(
            "resources.max_reservations_per_asn",
            v,
            "not enforced: peerup has no IP-to-AS table; resources.max_reservations_per_ip still caps each address",
        );
    }
    k.0
}

/// Checks a relay config.
pub fn validate_relay(c: &RelayConfig) -> Result<(), Vec<Problem>> {
    let mut k = Checker::default();
    k.non_empty("identity.key_file", &c.identity.key_file.to_string_lossy());
    k.multiaddrs("network.listen_addresses", &c.network.listen_addresses, true);
    k.network("discovery.network", c.discovery.network.as_deref());
    if c.security.enable_connection_gating {
        k.non_empty(
            "security.authorized_keys_file",
            &c.security.authorized_keys_file.to_string_lossy(),
        );
    }
    // 0 means the default (as in Go peer-up), so only what is left after that is checked.
    let r = &c.resources.effective();
    k.positive_duration("resources.reservation_ttl", &r.reservation_ttl);
    k.positive_duration("resources.session_duration", &r.session_duration);
    match parse_data_size(&r.session_data_limit) {
        Ok(0) => k.fail(
            "resources.session_data_limit",
            &r.session_data_limit,
            "must be greater than zero",
        ),
        Ok(_) => {}
        Err(e) => k.fail("resources.session_data_limit", &r.session_data_limit, e),
    }
    for (key, addr) in [
        ("health.listen_address", &c.health.listen_address),
        ("telemetry.metrics.listen_address", &c.telemetry.metrics.listen_address),
    ] {
        if !addr.is_empty() {
            k.check(key, addr, check_listen_address(addr));
        }
    }
    k.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::parse_yaml;

    const RELAY: &str =
        "/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";

    fn node(extra: &str) -> NodeConfig {
        parse_yaml(&format!("relay:\n  addresses: [\"{RELAY}\"]\n{extra}")).unwrap().0
    }

    #[test]
    fn a_minimal_config_is_valid() {
        validate_node(&node("")).unwrap();
        validate_relay(&RelayConfig::default()).unwrap();
    }

    #[test]
    fn problems_name_key_and_value() {
        let cases = [
            ("relay:\n  addresses: []\n", "relay.addresses", "[]"),
            (
                "relay:\n  addresses: [\"/ip4/1.2.3.4/tcp/1\"]\n",
                "relay.addresses[0]",
                "/ip4/1.2.3.4/tcp/1",
            ),
            (
                "relay:\n  addresses: [\"x\"]\n  reservation_interval: 0s\n",
                "relay.reservation_interval",
                "0s",
            ),
            ("discovery:\n  network: Bad_NS\n", "discovery.network", "Bad_NS"),
            ("services:\n  ssh:\n    local_address: nope\n", "services.ssh.local_address", "nope"),
            ("services:\n  Bad:\n    local_address: a:1\n", "services.Bad", "Bad"),
            ("network:\n  listen_addresses: [\"tcp/0\"]\n", "network.listen_addresses[0]", "tcp/0"),
        ];
        for (yaml, key, value) in cases {
            let c: NodeConfig = parse_yaml(&format!("relay:\n  addresses: [\"{RELAY}\"]\n{yaml}"))
                .map(|(c, _)| c)
                .or_else(|_| parse_yaml(yaml).map(|(c, _)| c))
                .unwrap();
            let problems = validate_node(&c).unwrap_err();
            assert!(
                problems.iter().any(|p| p.key == key && p.value == value),
                "{yaml}: {problems:?}"
            );
        }
    }

    /// A bad `names:` or `allowed_peers` entry is a warning with its line (Go logs and skips it),
    /// not a reason to refuse the config.
    #[test]
    fn bad_names_and_allowed_peers_are_warnings_with_their_line() {
        let text = format!(
            "relay:\n  addresses: [\"{RELAY}\"]\nservices:\n  ssh:\n    local_address: a:1\n    allowed_peers: [zz]\nnames:\n  home: not-an-id\n  12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt: {}\n",
            &RELAY[RELAY.len() - 52..]
        );
        let (c, _) = parse_yaml::<NodeConfig>(&text).unwrap();
        validate_node(&c).unwrap();
        let warnings = with_lines(node_warnings(&c), &text);
        let found: Vec<_> =
            warnings.iter().map(|p| (p.key.as_str(), p.value.as_str(), p.line)).collect();
        assert_eq!(
            found,
            [
                ("services.ssh.allowed_peers[0]", "zz", Some(6)),
                (
                    "names.12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt",
                    "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt",
                    Some(9)
                ),
                ("names.home", "not-an-id", Some(8)),
            ]
        );
        assert!(warnings[2].to_string().starts_with("line 8: names.home: \"not-an-id\""));
        assert!(node_warnings(&node("")).is_empty());
    }

    #[test]
    fn relay_limits_are_checked() {
        let (c, _) = parse_yaml::<RelayConfig>(
            "resources:\n  max_circuits: 0\n  session_data_limit: lots\n  session_duration: forever\n",
        )
        .unwrap();
        let keys: Vec<_> = validate_relay(&c).unwrap_err().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["resources.session_duration", "resources.session_data_limit"]);
    }

    /// Go peer-up reads 0 as "the default"; such a file loads, and runs with the defaults.
    #[test]
    fn zero_relay_limits_mean_the_defaults() {
        let (c, _) = parse_yaml::<RelayConfig>(
            "resources:\n  max_reservations: 0\n  max_circuits: 0\n  buffer_size: 0\n  max_reservations_per_ip: 0\n  max_reservations_per_asn: 0\n  reservation_ttl: \"0s\"\n  session_duration: \"0\"\n  session_data_limit: \"0MB\"\n",
        )
        .unwrap();
        validate_relay(&c).unwrap();
        let mut want = RelayConfig::default().resources;
        (want.buffer_size, want.max_reservations_per_asn) = (Some(0), Some(0));
        assert_eq!(c.resources.effective(), want);
        let (c, _) = parse_yaml::<RelayConfig>("resources:\n  max_circuits: 3\n").unwrap();
        assert_eq!(c.resources.effective().max_circuits, 3);
    }

    #[test]
    fn listen_addresses_may_name_a_host() {
        for ok in ["127.0.0.1:9091", "[::1]:0", "localhost:9091", "metrics.lan:80", "0.0.0.0:0"] {
            check_listen_address(ok).unwrap();
        }
        for bad in ["9091", "localhost", ":9091", "local host:1", "a..b:1", "host:99999", "h_st:1"]
        {
            assert!(check_listen_address(bad).is_err(), "{bad}");
        }
        let mut c = node("telemetry:\n  metrics:\n    listen_address: \"localhost:9091\"\n");
        validate_node(&c).unwrap();
        c.telemetry.metrics.listen_address = "localhost".into();
        assert!(validate_node(&c).is_err());
        let (r, _) = parse_yaml::<RelayConfig>(
            "health:\n  listen_address: localhost:9090\ntelemetry:\n  metrics:\n    listen_address: localhost:9091\n",
        )
        .unwrap();
        validate_relay(&r).unwrap();
    }

    /// The Go keys peerup cannot apply are named, with the reason, only when the file sets them.
    #[test]
    fn unsupported_keys_are_named() {
        assert!(relay_unsupported(&RelayConfig::default()).is_empty());
        let (r, _) = parse_yaml::<RelayConfig>(
            "resources:\n  buffer_size: 2048\n  max_reservations_per_asn: 32\n",
        )
        .unwrap();
        let keys: Vec<_> = relay_unsupported(&r).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["resources.buffer_size", "resources.max_reservations_per_asn"]);
    }

    #[test]
    fn local_addresses() {
        for ok in ["localhost:22", "127.0.0.1:8080", "[::1]:22"] {
            check_local_address(ok).unwrap();
        }
        for bad in ["22", ":22", "host:", "host:0", "host:70000", "a b:1"] {
            assert!(check_local_address(bad).is_err(), "{bad}");
        }
    }
}
