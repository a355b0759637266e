//! What this machine's network looks like from here: its addresses, the NAT's mapping behaviour
//! as peers observe it, the NATs on the way out (from the addresses of the first hops), and the
//! reachability grade that sums them up. [`crate::doctor`] measures; this module classifies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// The machine's own addresses, loopback and link-local left out.
pub fn local_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .map(|i| i.ip())
                .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
                .collect()
        })
        .unwrap_or_default()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether an IPv4 address is in 100.64.0.0/10 (carrier-grade NAT).
pub fn is_cgnat(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (64..128).contains(&b)
}

/// Whether an IPv4 address is reachable from the internet: not private, CGNAT, link-local,
/// loopback, multicast, broadcast or unspecified.
pub fn is_global_v4(ip: Ipv4Addr) -> bool {
    !(ip.is_private()
        || is_cgnat(ip)
        || ip.is_link_local()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified())
}

/// Whether an IPv6 address is a global unicast one (not ULA, link-local, loopback or multicast).
pub fn is_global_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    (first & 0xe000) == 0x2000 // 2000::/3, global unicast
        && (first & 0xfe00) != 0xfc00
}

/// How the NAT in front of us maps our outbound flows, as peers observe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMapping {
    /// Peers see one of our own interface addresses: no NAT.
    None,
    /// Every peer sees the same public address and port: hole punching can work.
    EndpointIndependent,
    /// Different peers see different ports: a symmetric NAT, the relay is needed.
    EndpointDependent,
    /// Not enough observations yet.
    Unknown,
}

impl NatMapping {
    /// The name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::EndpointIndependent => "endpoint-independent",
            Self::EndpointDependent => "endpoint-dependent",
            Self::Unknown => "unknown",
        }
    }
}

/// The IP and UDP/TCP port of an observed address, if it is a plain (not relayed) one.
pub fn socket_of(addr: &Multiaddr) -> Option<SocketAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
            Protocol::Tcp(port) | Protocol::Udp(port) => return ip.map(|ip| (ip, port).into()),
            _ => {}
        }
    }
    None
}

/// Classifies the mapping from the addresses that distinct peers observed for the same local
/// socket (QUIC dials from its listening socket, so its observations compare like with like).
pub fn classify_mapping(local: &[IpAddr], observed: &[SocketAddr]) -> NatMapping {
    if observed.iter().any(|o| local.contains(&o.ip())) {
        return NatMapping::None;
    }
    let mut distinct: Vec<SocketAddr> = observed.to_vec();
    distinct.sort();
    distinct.dedup();
    match (observed.len(), distinct.len()) {
        (0 | 1, _) => NatMapping::Unknown,
        (_, 1) => NatMapping::EndpointIndependent,
        _ => NatMapping::EndpointDependent,
    }
}

/// What the first hops of the path out say about the NATs in front of this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Hops with a private or CGNAT address before the first public one: each is (most likely)
    /// a NAT, since a private network ends at one.
    pub nat_hops: usize,
    /// One of those hops is in 100.64.0.0/10, the range reserved for carrier-grade NAT.
    pub cgnat: bool,
}

impl Upstream {
    /// Two or more NATs in a row.
    pub fn double_nat(&self) -> bool {
        self.nat_hops >= 2
    }
}

/// Reads the addresses of the hops that answered a TTL-limited probe, in TTL order (hops that
/// did not answer left out), up to the first public one: everything after it is the internet.
pub fn classify_hops(hops: &[IpAddr]) -> Upstream {
    let mut up = Upstream::default();
    for hop in hops {
        match hop {
            IpAddr::V4(v4) if is_cgnat(*v4) => {
                up.nat_hops += 1;
                up.cgnat = true;
            }
            IpAddr::V4(v4) if v4.is_private() => up.nat_hops += 1,
            _ => break,
        }
    }
    up
}

/// The A–F reachability grade with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// `A` (best) to `F` (offline).
    pub grade: char,
    /// One word.
    pub label: &'static str,
    /// Why.
    pub description: String,
}

/// What the grade is computed from.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// The machine's addresses (see [`local_addresses`]).
    pub addresses: Vec<IpAddr>,
    /// The NAT mapping, if known.
    pub mapping: Option<NatMapping>,
    /// Whether a peer observed us from outside at all.
    pub has_external: bool,
    /// A carrier-grade NAT was seen beyond this machine: a hop or the observed address in
    /// 100.64.0.0/10 (an interface address in it counts too, see [`Self::behind_cgnat`]).
    pub cgnat_upstream: bool,
    /// Two or more NATs in a row (see [`Upstream::double_nat`]).
    pub double_nat: bool,
}

impl Findings {
    /// Whether any address is a global IPv4 one.
    pub fn has_global_v4(&self) -> bool {
        self.addresses.iter().any(|ip| matches!(ip, IpAddr::V4(v4) if is_global_v4(*v4)))
    }

    /// Whether any address is a global IPv6 one.
    pub fn has_global_v6(&self) -> bool {
        self.addresses.iter().any(|ip| matches!(ip, IpAddr::V6(v6) if is_global_v6(*v6)))
    }

    /// Whether an interface sits in the carrier-grade NAT range, or one was seen upstream.
    pub fn behind_cgnat(&self) -> bool {
        self.cgnat_upstream
            || self.addresses.iter().any(|ip| matches!(ip, IpAddr::V4(v4) if is_cgnat(*v4)))
    }

    /// The facts behind the grade, one short sentence each, the deciding one first.
    pub fn reasons(&self) -> Vec<String> {
        let grade = self.grade();
        let mut out = vec![grade.description.clone()];
        let mut add = |cond: bool, s: &str| {
            if cond && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        add(self.has_global_v6(), "Public IPv6 detected");
        add(self.has_global_v4(), "Public IPv4 detected");
        add(!self.has_global_v4() && !self.has_global_v6(), "No public address on any interface");
        add(self.behind_cgnat(), "Carrier-grade NAT (100.64.0.0/10) detected");
        add(self.double_nat, "Double NAT detected");
        if let Some(m) = self.mapping.filter(|m| *m != NatMapping::Unknown) {
            out.push(format!("NAT mapping: {}", m.as_str()));
        }
        out
    }

    /// The grade; the first matching rule wins.
    pub fn grade(&self) -> Reachability {
        let r = |grade, label, d: &str| Reachability { grade, label, description: d.to_string() };
        if self.has_global_v6() {
            return r('A', "Excellent", "Public IPv6 detected");
        }
        if self.has_global_v4() {
            return r('B', "Good", "Public IPv4 detected");
        }
        if self.behind_cgnat() {
            return r(
                'D',
                "Poor",
                "CGNAT detected, hole punching unlikely: the relay carries traffic",
            );
        }
        match self.mapping {
            Some(NatMapping::EndpointDependent) => {
                return r(
                    'D',
                    "Poor",
                    "Symmetric NAT (endpoint-dependent mapping): the relay carries traffic",
                );
            }
            _ if self.double_nat => {
                return r(
                    'C',
                    "Fair",
                    "Double NAT: hole punching works only if both NATs map endpoint-independently",
                );
            }
            Some(NatMapping::None) => {
                return r('B', "Good", "Peers see this host's own address (no NAT)");
            }
            Some(NatMapping::EndpointIndependent) => {
                return r('B', "Good", "Hole-punchable NAT (endpoint-independent mapping)");
            }
            _ => {}
        }
        if self.has_external {
            return r('C', "Fair", "NAT type unknown, external address discovered");
        }
        if !self.addresses.is_empty() {
            return r('D', "Poor", "No public address detected");
        }
        r('F', "Offline", "No network connectivity detected")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_and_special_ranges() {
        assert!(is_global_v4("198.18.0.1".parse().unwrap()));
        assert!(is_global_v4("8.8.8.8".parse().unwrap()));
        for ip in
            ["10.1.2.3", "172.16.0.1", "192.168.1.2", "100.64.0.2", "169.254.1.1", "127.0.0.1"]
        {
            assert!(!is_global_v4(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_cgnat("100.127.255.255".parse().unwrap()));
        assert!(!is_cgnat("100.128.0.0".parse().unwrap()));
        assert!(is_global_v6("2001:db8::1".parse().unwrap()));
        assert!(!is_global_v6("fd00::1".parse().unwrap()));
        assert!(!is_global_v6("fe80::1".parse().unwrap()));
    }

    #[test]
    fn mapping_from_observations() {
        let local = ["192.168.1.2".parse().unwrap()];
        assert_eq!(classify_mapping(&local, &[]), NatMapping::Unknown);
        assert_eq!(classify_mapping(&local, &[sa("198.18.0.11:4001")]), NatMapping::Unknown);
        let same = [sa("198.18.0.11:4001"), sa("198.18.0.11:4001")];
        assert_eq!(classify_mapping(&local, &same), NatMapping::EndpointIndependent);
        let differ = [sa("198.18.0.13:40001"), sa("198.18.0.13:40002")];
        assert_eq!(classify_mapping(&local, &differ), NatMapping::EndpointDependent);
        assert_eq!(classify_mapping(&local, &[sa("192.168.1.2:4001")]), NatMapping::None);
    }

    #[test]
    fn grades_follow_findings() {
        let lan =
            Findings { addresses: vec!["192.168.1.2".parse().unwrap()], ..Default::default() };
        assert_eq!(lan.grade().grade, 'D');
        let public =
            Findings { addresses: vec!["198.18.0.2".parse().unwrap()], ..Default::default() };
        assert_eq!(public.grade().grade, 'B');
        let v6 = Findings { addresses: vec!["2001:db8::2".parse().unwrap()], ..Default::default() };
        assert_eq!(v6.grade().grade, 'A');
        let eim = Findings { mapping: Some(NatMapping::EndpointIndependent), ..lan.clone() };
        assert_eq!(eim.grade().grade, 'B');
        let sym = Findings { mapping: Some(NatMapping::EndpointDependent), ..lan.clone() };
        assert_eq!(sym.grade().grade, 'D');
        let unknown = Findings { has_external: true, ..lan.clone() };
        assert_eq!(unknown.grade().grade, 'C');
        let cgnat = Findings {
            addresses: vec!["100.64.0.9".parse().unwrap()],
            mapping: Some(NatMapping::EndpointIndependent),
            ..Default::default()
        };
        assert_eq!(cgnat.grade().grade, 'D');
        assert_eq!(Findings::default().grade().grade, 'F');
    }

    #[test]
    fn hops_tell_single_double_and_carrier_nat() {
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpAddr>>();
        // pubpeer: no hop answered before the relay.
        assert_eq!(classify_hops(&[]), Upstream::default());
        // alice: her home router, then the internet.
        let one = classify_hops(&ips(&["192.168.1.1", "198.18.0.1"]));
        assert_eq!(one, Upstream { nat_hops: 1, cgnat: false });
        assert!(!one.double_nat());
        // dave: home router, then the carrier's NAT.
        let dave = classify_hops(&ips(&["192.168.4.1", "100.64.0.1"]));
        assert!(dave.double_nat() && dave.cgnat);
        // Private hops after the first public one are the ISP's business, not ours.
        let isp = classify_hops(&ips(&["192.168.1.1", "203.0.113.1", "10.0.0.1"]));
        assert_eq!(isp.nat_hops, 1);
    }

    #[test]
    fn double_nat_and_upstream_cgnat_grades() {
        let lan =
            Findings { addresses: vec!["192.168.4.2".parse().unwrap()], ..Default::default() };
        let dave = Findings {
            mapping: Some(NatMapping::EndpointIndependent),
            cgnat_upstream: true,
            double_nat: true,
            ..lan.clone()
        };
        assert_eq!(dave.grade().grade, 'D');
        let reasons = dave.reasons();
        assert!(reasons[0].starts_with("CGNAT"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r == "Double NAT detected"), "{reasons:?}");
        let double = Findings { cgnat_upstream: false, ..dave.clone() };
        assert_eq!(double.grade().grade, 'C');
        let sym = Findings { mapping: Some(NatMapping::EndpointDependent), ..double };
        assert_eq!(sym.grade().grade, 'D');
    }

    #[test]
    fn socket_of_skips_relayed_addresses() {
        let quic: Multiaddr = "/ip4/198.18.0.11/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(socket_of(&quic), Some(sa("198.18.0.11:4001")));
        let relayed: Multiaddr = "/ip4/198.18.0.1/tcp/7777/p2p-circuit".parse().unwrap();
        assert_eq!(socket_of(&relayed), None);
    }
}
