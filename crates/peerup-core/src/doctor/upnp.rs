//! Is there a UPnP Internet Gateway Device on the LAN? One SSDP search (the UPnP Device Architecture's
//! discovery: an HTTP-over-UDP `M-SEARCH` to 239.255.255.250:1900, multicast TTL 2) and the first answer within
//! the wait. Only discovery: no port is mapped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const SSDP: (Ipv4Addr, u16) = (Ipv4Addr::new(239, 255, 255, 250), 1900);
const SEARCH: &[u8] = b"M-SEARCH * HTTP/1.1\r\n\
HOST: 239.255.255.250:1900\r\n\
MAN: \"ssdp:discover\"\r\n\
MX: 1\r\n\
ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upnp {
    /// A gateway answered: its address and its description URL (`LOCATION:`).
    Found {
        /// Who answered.
        from: SocketAddr,
        /// The device description URL.
        location: String,
    },
    /// Nothing answered within the wait.
    NotFound,
    /// The search was not made (switched off).
    Skipped,
}

/// Searches for a gateway, waiting at most `wait` for an answer.
pub async fn search(wait: Duration) -> Upnp {
    match tokio::time::timeout(wait, search_inner()).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "UPnP search failed");
            Upnp::NotFound
        }
        Err(_) => Upnp::NotFound,
    }
}

async fn search_inner() -> std::io::Result<Upnp> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    sock.set_multicast_ttl_v4(2)?;
    sock.send_to(SEARCH, SSDP).await?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        if let Some(location) = location_of(&buf[..n]) {
            return Ok(Upnp::Found { from, location });
        }
    }
}

/// The `LOCATION:` header of an SSDP answer (header names are case-insensitive).
fn location_of(reply: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(reply).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("location").then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_location_of_a_gateway_answer() {
        let reply = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
Location: http://192.168.1.1:5000/rootDesc.xml\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";
        assert_eq!(location_of(reply).as_deref(), Some("http://192.168.1.1:5000/rootDesc.xml"));
        assert_eq!(location_of(b"M-SEARCH * HTTP/1.1\r\nLOCATION: x\r\n\r\n"), None);
        assert_eq!(location_of(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
