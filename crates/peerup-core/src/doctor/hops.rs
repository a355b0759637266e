//! The first hops towards a relay, traceroute style: one UDP datagram per TTL (1 to [`MAX_HOPS`])
//! from its own socket, and the ICMP "time exceeded" each router on the way sends back, read from
//! the socket's error queue (`IP_RECVERR`, so no raw socket and no privileges are needed).
//!
//! The addresses of those routers tell how many NATs sit in front of this machine (see
//! [`crate::netinfo::classify_hops`]): a home router answers from its LAN address (192.168.x.1),
//! a carrier-grade NAT from 100.64.0.0/10, and the first public address is the internet. Linux
//! only; elsewhere the probe reports nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How many hops are probed: a home router, a carrier NAT and one more cover what we look for.
pub const MAX_HOPS: u8 = 4;

/// One router that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The TTL of the probe it answered.
    pub ttl: u8,
    /// The router's address (the one it sent the ICMP error from).
    pub addr: IpAddr,
}

/// Probes the hops towards `target` (an IPv4 relay endpoint) and returns the routers that
/// answered within `wait`, by TTL, up to the destination. Blocking: run it on a blocking thread.
/// Errors (no IPv4 route, a socket option refused) yield an empty list, logged at debug level:
/// the doctor then says the NAT depth is unknown.
pub fn probe(target: SocketAddr, wait: Duration) -> Vec<Hop> {
    match imp::probe(target, wait) {
        Ok(hops) => hops,
        Err(e) => {
            tracing::debug!(%target, error = %e, "hop probe failed");
            Vec::new()
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io::IoSliceMut;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::{AsFd, AsRawFd};
    use std::time::{Duration, Instant};

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt,
    };

    use super::{Hop, MAX_HOPS};

    /// `SO_EE_ORIGIN_ICMP`: the error came from an ICMP message.
    const ORIGIN_ICMP: u8 = 2;
    /// ICMP "time exceeded" (a router on the way).
    const TIME_EXCEEDED: u8 = 11;
    /// ICMP "destination unreachable" (the end of the path, or a router refusing).
    const UNREACHABLE: u8 = 3;

    pub(super) fn probe(target: SocketAddr, wait: Duration) -> std::io::Result<Vec<Hop>> {
        if !target.is_ipv4() {
            return Ok(Vec::new());
        }
        let mut probes = Vec::new();
        for ttl in 1..=MAX_HOPS {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_ttl(u32::from(ttl))?;
            setsockopt(&sock, sockopt::Ipv4RecvErr, &true)?;
            sock.set_nonblocking(true)?;
            // Any payload: the relay's QUIC endpoint drops a datagram this short.
            sock.send_to(b"peerup doctor hop probe", target)?;
            probes.push((ttl, sock, false));
        }
        let deadline = Instant::now() + wait;
        let mut hops = Vec::new();
        let mut reached: Option<u8> = None;
        loop {
            let open: Vec<usize> = (0..probes.len())
                .filter(|&i| !probes[i].2 && reached.is_none_or(|r| probes[i].0 < r))
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if open.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .map(|&i| PollFd::new(probes[i].1.as_fd(), PollFlags::empty()))
                .collect();
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
            if poll(&mut fds, PollTimeout::from(ms))? == 0 {
                break;
            }
            let ready: Vec<usize> = open
                .iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(&i, _)| i)
                .collect();
            drop(fds);
            for i in ready {
                let (ttl, sock, done) = &mut probes[i];
                *done = true;
                match read_error(sock) {
                    Some((TIME_EXCEEDED, addr)) => hops.push(Hop { ttl: *ttl, addr }),
                    Some((UNREACHABLE, addr)) => {
                        hops.push(Hop { ttl: *ttl, addr });
                        reached = Some(reached.map_or(*ttl, |r| r.min(*ttl)));
                    }
                    _ => {}
                }
            }
        }
        hops.sort_by_key(|h| h.ttl);
        if let Some(r) = reached {
            hops.retain(|h| h.ttl <= r);
        }
        Ok(hops)
    }

    /// The ICMP type and sender of the error queued on `sock`, if it is an ICMP one.
    fn read_error(sock: &UdpSocket) -> Option<(u8, std::net::IpAddr)> {
        let mut buf = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in);
        let msg = recvmsg::<SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        msg.cmsgs().ok()?.find_map(|c| match c {
            ControlMessageOwned::Ipv4RecvErr(err, Some(from)) if err.ee_origin == ORIGIN_ICMP => {
                let ip = std::net::Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
                Some((err.ee_type, ip.into()))
            }
            _ => None,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::Hop;

    pub(super) fn probe(_target: SocketAddr, _wait: Duration) -> std::io::Result<Vec<Hop>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On loopback the destination is the first hop: nothing answers before it, and a closed
    /// port answers "unreachable" from the destination itself.
    #[test]
    #[cfg(target_os = "linux")]
    fn loopback_has_no_routers_before_the_destination() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let hops = probe(target, Duration::from_secs(2));
        assert_eq!(hops, vec![Hop { ttl: 1, addr: "127.0.0.1".parse().unwrap() }]);
    }
}
