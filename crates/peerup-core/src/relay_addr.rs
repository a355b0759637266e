//! What a user types for a relay, turned into a dialable multiaddr that names the relay's peer ID.
//!
//! Accepted: a full multiaddr (`/ip4/203.0.113.5/tcp/7777/p2p/12D3KooW…`), or the short forms
//! `IP`, `IP:PORT`, `[IPv6]`, `[IPv6]:PORT` and a bare IPv6 address together with the relay's peer ID.
//! Short forms become `/ip4|ip6/<ip>/tcp/<port>/p2p/<id>`, port 7777 by default.

use std::net::{IpAddr, Ipv6Addr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The relay's default TCP and UDP port.
pub const DEFAULT_RELAY_PORT: u16 = 7777;

/// A relay address could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayAddrError {
    /// Not a parseable multiaddr.
    #[error("invalid relay multiaddr {input:?}: {reason}")]
    InvalidMultiaddr {
        /// What was typed.
        input: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A short form or multiaddr without `/p2p/` and no peer ID given.
    #[error(
        "relay address {0:?} does not name the relay's peer ID; pass --relay-peer-id <ID> or add /p2p/<ID>"
    )]
    MissingPeerId(String),
    /// The address names a different peer ID than the one passed alongside it.
    #[error("relay address {0:?} names a different peer ID than --relay-peer-id")]
    PeerIdMismatch(String),
    /// Neither an IP address nor a multiaddr.
    #[error(
        "relay address {0:?} is not an IP address; use IP, IP:PORT, [IPv6]:PORT or a full multiaddr (e.g. /dns4/relay.example.com/tcp/7777/p2p/<ID>)"
    )]
    NotAnIp(String),
    /// The port is not a number from 1 to 65535.
    #[error("invalid port in relay address {0:?}: use a number from 1 to 65535")]
    InvalidPort(String),
}

/// Whether `input` is a short form that needs the relay's peer ID passed alongside it.
pub fn is_short_form(input: &str) -> bool {
    !input.trim().starts_with('/')
}

/// Parses a relay address as typed by a user. See the module docs for the accepted forms.
pub fn parse(input: &str, peer_id: Option<PeerId>) -> Result<Multiaddr, RelayAddrError> {
    let input = input.trim();
    if !is_short_form(input) {
        return parse_multiaddr(input, peer_id);
    }
    let (ip, port) = split_host_port(input)?;
    let peer_id = peer_id.ok_or_else(|| RelayAddrError::MissingPeerId(input.to_string()))?;
    let mut addr = Multiaddr::empty();
    addr.push(match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    });
    addr.push(Protocol::Tcp(port));
    addr.push(Protocol::P2p(peer_id));
    Ok(addr)
}

/// The peer ID named by the last `/p2p/` component of an address, if any.
pub fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().fold(None, |last, p| match p {
        Protocol::P2p(id) => Some(id),
        _ => last,
    })
}

/// The same relay address over QUIC (`/udp/<port>/quic-v1`) when it is TCP. Dialing the relay over
/// QUIC as well teaches a node its public QUIC address, which is what hole punching needs (QUIC
/// dials from its listening socket; TCP does not).
pub fn quic_twin(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    let mut swapped = false;
    for p in addr.iter() {
        match p {
            Protocol::Tcp(port) if !swapped => {
                out.push(Protocol::Udp(port));
                out.push(Protocol::QuicV1);
                swapped = true;
            }
            other => out.push(other),
        }
    }
    swapped.then_some(out)
}

/// The same relay address over TCP when it is QUIC (`/udp/<port>/quic-v1` becomes `/tcp/<port>`).
pub fn tcp_twin(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    let mut swapped = false;
    for p in addr.iter() {
        match p {
            Protocol::Udp(port) if !swapped => {
                out.push(Protocol::Tcp(port));
                swapped = true;
            }
            Protocol::QuicV1 if swapped => {}
            other => out.push(other),
        }
    }
    (swapped && addr.iter().any(|p| matches!(p, Protocol::QuicV1))).then_some(out)
}

fn parse_multiaddr(input: &str, peer_id: Option<PeerId>) -> Result<Multiaddr, RelayAddrError> {
    let mut addr: Multiaddr = input.parse().map_err(|e: libp2p::multiaddr::Error| {
        RelayAddrError::InvalidMultiaddr { input: input.to_string(), reason: e.to_string() }
    })?;
    match (peer_id_of(&addr), peer_id) {
        (Some(named), Some(given)) if named != given => {
            Err(RelayAddrError::PeerIdMismatch(input.to_string()))
        }
        (Some(_), _) => Ok(addr),
        (None, Some(given)) => {
            addr.push(Protocol::P2p(given));
            Ok(addr)
        }
        (None, None) => Err(RelayAddrError::MissingPeerId(input.to_string())),
    }
}

fn split_host_port(input: &str) -> Result<(IpAddr, u16), RelayAddrError> {
    let not_ip = || RelayAddrError::NotAnIp(input.to_string());
    let parse_port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(RelayAddrError::InvalidPort(input.to_string())),
        Ok(n) => Ok(n),
    };
    if let Some(rest) = input.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(not_ip)?;
        let ip: Ipv6Addr = host.parse().map_err(|_| not_ip())?;
        let port = match tail {
            "" => DEFAULT_RELAY_PORT,
            t => parse_port(t.strip_prefix(':').ok_or_else(not_ip)?)?,
        };
        return Ok((IpAddr::V6(ip), port));
    }
    if let Ok(ip) = input.parse::<IpAddr>() {
        return Ok((ip, DEFAULT_RELAY_PORT));
    }
    let (host, port) = input.rsplit_once(':').ok_or_else(not_ip)?;
    let ip = host.parse::<std::net::Ipv4Addr>().map_err(|_| not_ip())?;
    Ok((IpAddr::V4(ip), parse_port(port)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_swap_tcp_and_quic() {
        let tcp: Multiaddr =
            "/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6"
                .parse()
                .unwrap();
        let quic = quic_twin(&tcp).unwrap();
        assert_eq!(
            quic.to_string(),
            "/ip4/198.18.0.1/udp/7777/quic-v1/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6"
        );
        assert_eq!(tcp_twin(&quic), Some(tcp.clone()));
        assert!(quic_twin(&quic).is_none());
        assert!(tcp_twin(&tcp).is_none());
    }

    const ID: &str = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";

    #[test]
    fn short_forms() {
        let id: PeerId = ID.parse().unwrap();
        for (input, want) in [
            ("203.0.113.50", format!("/ip4/203.0.113.50/tcp/7777/p2p/{ID}")),
            ("203.0.113.50:4001", format!("/ip4/203.0.113.50/tcp/4001/p2p/{ID}")),
            ("[2001:db8::1]:9000", format!("/ip6/2001:db8::1/tcp/9000/p2p/{ID}")),
            ("[2001:db8::1]", format!("/ip6/2001:db8::1/tcp/7777/p2p/{ID}")),
            ("2001:db8::1", format!("/ip6/2001:db8::1/tcp/7777/p2p/{ID}")),
            (" 198.18.0.1 ", format!("/ip4/198.18.0.1/tcp/7777/p2p/{ID}")),
        ] {
            assert_eq!(parse(input, Some(id)).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn multiaddrs() {
        let id: PeerId = ID.parse().unwrap();
        let full = format!("/ip4/1.2.3.4/tcp/7777/p2p/{ID}");
        assert_eq!(parse(&full, None).unwrap().to_string(), full);
        assert_eq!(parse(&full, Some(id)).unwrap().to_string(), full);
        assert_eq!(
            parse("/ip4/1.2.3.4/udp/7777/quic-v1", Some(id)).unwrap().to_string(),
            format!("/ip4/1.2.3.4/udp/7777/quic-v1/p2p/{ID}")
        );
        assert_eq!(peer_id_of(&parse(&full, None).unwrap()), Some(id));
    }

    #[test]
    fn errors() {
        let id: PeerId = ID.parse().unwrap();
        let other: PeerId = "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt".parse().unwrap();
        type Check = fn(&RelayAddrError) -> bool;
        let cases: [(&str, Option<PeerId>, Check); 8] = [
            ("1.2.3.4", None, |e| matches!(e, RelayAddrError::MissingPeerId(_))),
            ("/ip4/1.2.3.4/tcp/7777", None, |e| matches!(e, RelayAddrError::MissingPeerId(_))),
            ("/ip4/1.2.3.4/tcp/nope", None, |e| {
                matches!(e, RelayAddrError::InvalidMultiaddr { .. })
            }),
            ("relay.example.com", Some(id), |e| matches!(e, RelayAddrError::NotAnIp(_))),
            ("relay.example.com:7777", Some(id), |e| matches!(e, RelayAddrError::NotAnIp(_))),
            ("1.2.3.4:0", Some(id), |e| matches!(e, RelayAddrError::InvalidPort(_))),
            ("1.2.3.4:99999", Some(id), |e| matches!(e, RelayAddrError::InvalidPort(_))),
            (
                "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6",
                Some(other),
                |e| matches!(e, RelayAddrError::PeerIdMismatch(_)),
            ),
        ];
        for (input, pid, check) in cases {
            let err = parse(input, pid).unwrap_err();
            assert!(check(&err), "{input}: {err}");
        }
    }
}
