//! A hole punch per bulk connection, for peers whose direct connection was itself hole-punched.
//!
//! A bulk connection is a fresh TCP connection to the peer's address ([`crate::tunnel::bulk`]). When the
//! peer sits behind a NAT that filters by address and port, that address takes packets only
//! from where the peer itself sent to, so the fresh connection's SYN, from a new port, is
//! dropped; the connections then rode yamux on the hole-punched libp2p connection. This module
//! punches a new hole for each bulk connection instead, coordinated over the direct connection
//! that already exists:
//!
//! 1. The dialer binds a socket to a fresh port and asks the peer, on a stream of [`PROTOCOL`]
//!    over their direct connection, to meet it there.
//! 2. The peer binds a listener to a fresh port of its own, starts connecting from that port to
//!    the dialer's (the dialer's address as their direct connection sees it), and only then
//!    answers with its port. Its SYN opens its own NAT for the dialer's address and port (the
//!    dialer's NAT drops it, having seen nothing from the peer's new port yet).
//! 3. The dialer connects to the peer's port at the peer's address. Its SYN opens the dialer's
//!    NAT and passes the peer's, which now expects it: the two SYNs make one TCP connection
//!    (a simultaneous open). Where nothing filters, the peer's early SYN is refused instead and
//!    the dialer's reaches the listener; the peer takes whichever comes first.
//!
//!    Both sides connect only to ports from 1024 up (a peer could otherwise make this node send
//!    SYNs to the SSH or mail port of whoever shares its address), and the listener takes only
//!    the connection from the dialer's address *and* announced port; it closes any other.
//! 4. Over the connection the two run the bulk path's handshake, the dialer as the client:
//!    TLS 1.3 with libp2p certificates, then the request, as on any bulk connection.
//!
//! This needs NATs that keep a socket's port (endpoint-independent mapping with the port
//! preserved, as Linux's masquerade does when it can): each side names its own local port, and
//! the other reaches it at the same number. Where that fails, the punch times out, the bulk
//! client marks the route as failed and its connections keep riding yamux.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use libp2p::{PeerId, StreamProtocol};
use multistream_select::listener_select_proto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::AccessList;
use crate::node::Node;
use crate::streams::IncomingStream;

/// The stream protocol on which a peer asks another to meet it for a bulk connection.
pub const PROTOCOL: &str = crate::protocols::BULK_PUNCH;
/// Punches a peer answers at once; further requests wait in the stream queue.
const CONCURRENT: usize = 16;
/// The version byte of a request.
const VERSION: u8 = 1;
/// The lowest port a punch connects to: a peer must not make this node send SYNs to the
/// privileged ports (SSH, SMTP, ...) of whatever sits at its address.
const MIN_PORT: u16 = 1024;

/// A punch could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// The peer would not meet (no direct connection to reach back over, or no port).
    #[error("the peer refused the hole punch: {0}")]
    Refused(&'static str),
    /// A malformed message.
    #[error("malformed hole punch message: {0}")]
    Malformed(&'static str),
    /// The other side named a port below 1024.
    #[error("hole punch to privileged port {0} refused")]
    PrivilegedPort(u16),
    /// The stream or a socket failed.
    #[error("hole punch: {0}")]
    Io(String),
}

impl From<io::Error> for PunchError {
    fn from(e: io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// A request: the version, then the dialer's port (big-endian).
pub(crate) fn encode_request(port: u16) -> [u8; 3] {
    let [hi, lo] = port.to_be_bytes();
    [VERSION, hi, lo]
}

/// The dialer's port in a request (at least [`MIN_PORT`]).
pub(crate) fn decode_request(bytes: [u8; 3]) -> Result<u16, PunchError> {
    if bytes[0] != VERSION {
        return Err(PunchError::Malformed("unknown version"));
    }
    unprivileged(u16::from_be_bytes([bytes[1], bytes[2]]))
}

/// `port` if a punch may connect to it.
fn unprivileged(port: u16) -> Result<u16, PunchError> {
    match port {
        0 => Err(PunchError::Malformed("port 0")),
        p if p < MIN_PORT => Err(PunchError::PrivilegedPort(p)),
        p => Ok(p),
    }
}

/// An answer: 0 and the peer's port, or 1 (refused) and zeros.
pub(crate) fn encode_answer(port: Option<u16>) -> [u8; 3] {
    match port {
        Some(port) => {
            let [hi, lo] = port.to_be_bytes();
            [0, hi, lo]
        }
        None => [1, 0, 0],
    }
}

/// The peer's port in an answer (at least [`MIN_PORT`]).
pub(crate) fn decode_answer(bytes: [u8; 3]) -> Result<u16, PunchError> {
    match (bytes[0], u16::from_be_bytes([bytes[1], bytes[2]])) {
        (0, port) => unprivileged(port),
        (1, _) => Err(PunchError::Refused("no direct connection to reach back over")),
        _ => Err(PunchError::Malformed("unknown answer")),
    }
}

/// A TCP socket of `ip`'s family bound to `port` (0: a fresh one), shareable with another socket
/// on the same port when `shared`.
fn socket_for(ip: IpAddr, port: u16, shared: bool) -> io::Result<TcpSocket> {
    let (socket, any) = match ip {
        IpAddr::V4(_) => (TcpSocket::new_v4()?, IpAddr::from([0u8; 4])),
        IpAddr::V6(_) => (TcpSocket::new_v6()?, IpAddr::from([0u16; 8])),
    };
    if shared {
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
    }
    socket.bind(SocketAddr::new(any, port))?;
    Ok(socket)
}

/// Asks `peer` (reached at `ip` over a direct connection) to meet this node for a bulk
/// connection, and connects to it: a TCP connection on which the bulk handshake runs next, this
/// side as the client.
pub(crate) async fn open(node: &Node, peer: PeerId, ip: IpAddr) -> Result<TcpStream, PunchError> {
    let socket = socket_for(ip, 0, false)?;
    let ours = socket.local_addr()?.port();
    let (mut stream, _) = node
        .open_stream(peer, StreamProtocol::new(PROTOCOL))
        .await
        .map_err(|e| PunchError::Io(e.to_string()))?;
    stream.write_all(&encode_request(ours)).await?;
    stream.flush().await?;
    let mut answer = [0u8; 3];
    stream.read_exact(&mut answer).await?;
    let theirs = decode_answer(answer)?;
    let tcp = socket.connect(SocketAddr::new(ip, theirs)).await;
    let _ = stream.close().await;
    let tcp = tcp?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Meets the peers that ask (on [`PROTOCOL`], those `access` authorizes): connects back and runs
/// the bulk path's server side on the connection, as for any inbound bulk connection.
pub(crate) fn spawn_answerer(
    node: &Node,
    admission: crate::tunnel::bulk::Admission,
    access: AccessList,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let requests = node.accept_from(
        StreamProtocol::new(PROTOCOL),
        Arc::new(move |peer: &PeerId| access.is_authorized(peer)),
    );
    let (what, timeout) = ("bulk hole punch", crate::tunnel::bulk::SETUP_TIMEOUT);
    crate::serve::each(
        requests,
        crate::serve::Limits::waiting(CONCURRENT).within(timeout),
        what,
        tracker,
        cancel,
        move |request| {
            let admission = admission.clone();
            Some(async move { answer(&admission, request).await })
        },
    );
}

async fn answer(
    admission: &crate::tunnel::bulk::Admission,
    request: IncomingStream,
) -> Result<(), PunchError> {
    let (source, mut stream) = (request.peer, request.stream);
    let mut bytes = [0u8; 3];
    stream.read_exact(&mut bytes).await?;
    let theirs = decode_request(bytes)?;
    // The dialer as this direct connection sees it: its NAT's address.
    let ip = crate::netinfo::socket_of(&request.path.remote_addr)
        .filter(|_| !request.path.relayed)
        .map(|a| a.ip());
    let Some(ip) = ip else {
        stream.write_all(&encode_answer(None)).await?;
        let _ = stream.close().await;
        return Err(PunchError::Refused("not a direct connection"));
    };
    let meeting = Meeting::start(SocketAddr::new(ip, theirs)).await?;
    // The SYN has left; now the answer (module docs, step 2).
    stream.write_all(&encode_answer(Some(meeting.port))).await?;
    stream.flush().await?;
    let tcp = meeting.finish().await?;
    let _ = stream.close().await;
    let _ = tcp.set_nodelay(true);
    tracing::debug!(peer = %source, %ip, theirs, "bulk hole punch met");
    let (_, negotiated) = listener_select_proto(tcp.compat(), [crate::tunnel::bulk::PROTOCOL])
        .await
        .map_err(|e| PunchError::Io(e.to_string()))?;
    admission
        .admit(negotiated, crate::tunnel::bulk::PUNCHED, None)
        .await
        .map_err(|e| PunchError::Io(e.to_string()))
}

/// The answering side of a punch: a listener and a connection under way, on one fresh port.
struct Meeting {
    port: u16,
    /// The dialer's address and the port it announced: the only connection taken.
    dialer: SocketAddr,
    listener: TcpListener,
    /// Ours, connecting to the dialer; `None` once it failed.
    connecting: Option<BoxFuture<'static, io::Result<TcpStream>>>,
}

impl Meeting {
    /// Binds a fresh port and starts connecting from it to `dialer`: the SYN has left when this
    /// returns.
    async fn start(dialer: SocketAddr) -> io::Result<Self> {
        let listener = socket_for(dialer.ip(), 0, true)?;
        let port = listener.local_addr()?.port();
        let listener = listener.listen(1)?;
        let mut connecting = socket_for(dialer.ip(), port, true)?.connect(dialer).boxed();
        let connecting = match futures::poll!(connecting.as_mut()) {
            Poll::Pending => Some(connecting),
            Poll::Ready(Ok(tcp)) => Some(futures::future::ready(Ok(tcp)).boxed()),
            Poll::Ready(Err(_)) => None,
        };
        Ok(Self { port, dialer, listener, connecting })
    }

    /// The first connection with the dialer: ours connecting out, or its own arriving at the
    /// listener (when ours was refused, as where nothing filters).
    async fn finish(mut self) -> io::Result<TcpStream> {
        loop {
            tokio::select! {
                r = async { self.connecting.as_mut().expect("guarded").await },
                    if self.connecting.is_some() => match r {
                        Ok(tcp) => return Ok(tcp),
                        Err(_) => self.connecting = None,
                    },
                r = accept_from(&self.listener, self.dialer) => return r,
            }
        }
    }
}

/// The next connection to `listener` from `dialer` (its address and the port it announced);
/// others are closed. Another port at that address (a stranger behind the same NAT, say) would
/// otherwise take the dialer's place: the TLS handshake would refuse it, but the meeting would
/// be lost.
async fn accept_from(listener: &TcpListener, dialer: SocketAddr) -> io::Result<TcpStream> {
    loop {
        let (tcp, from) = listener.accept().await?;
        if from == dialer {
            return Ok(tcp);
        }
        tracing::debug!(%from, %dialer, "a punched port took a connection from elsewhere; closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        assert_eq!(decode_request(encode_request(40_001)).unwrap(), 40_001);
        assert_eq!(decode_answer(encode_answer(Some(40_002))).unwrap(), 40_002);
        assert!(matches!(decode_answer(encode_answer(None)), Err(PunchError::Refused(_))));
        assert!(matches!(decode_request([2, 0, 1]), Err(PunchError::Malformed(_))));
        assert!(matches!(decode_request([VERSION, 0, 0]), Err(PunchError::Malformed(_))));
        assert!(matches!(decode_answer([0, 0, 0]), Err(PunchError::Malformed(_))));
        assert!(matches!(decode_answer([9, 1, 1]), Err(PunchError::Malformed(_))));
    }

    /// A peer cannot make this node send SYNs to a privileged port at its address, as the
    /// answering side (the request) or as the dialer (the answer).
    #[test]
    fn privileged_ports_are_refused() {
        for port in [1u16, 22, 25, 443, 1023] {
            let [hi, lo] = port.to_be_bytes();
            let request = decode_request([VERSION, hi, lo]);
            assert!(matches!(request, Err(PunchError::PrivilegedPort(p)) if p == port), "{port}");
            let answer = decode_answer([0, hi, lo]);
            assert!(matches!(answer, Err(PunchError::PrivilegedPort(p)) if p == port), "{port}");
        }
        assert_eq!(decode_request(encode_request(1024)).unwrap(), 1024);
        assert_eq!(decode_answer(encode_answer(Some(1024))).unwrap(), 1024);
    }

    proptest! {
        #[test]
        fn decoding_never_panics_and_accepts_only_what_encodes(bytes: [u8; 3]) {
            if let Ok(port) = decode_request(bytes) {
                prop_assert_eq!(encode_request(port), bytes);
                prop_assert!(port >= MIN_PORT);
            }
            if let Ok(port) = decode_answer(bytes) {
                prop_assert_eq!(encode_answer(Some(port)), bytes);
                prop_assert!(port >= MIN_PORT);
            }
        }
    }

    /// Where nothing filters, the answering side's early SYN is refused by the dialer's bound
    /// (not yet connecting) port, and the dialer's connection reaches the listener on the same
    /// port instead.
    #[tokio::test]
    async fn meets_where_nothing_filters() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let dialer = socket_for(ip, 0, false).unwrap();
        let theirs = dialer.local_addr().unwrap().port();
        let meeting = Meeting::start(SocketAddr::new(ip, theirs)).await.unwrap();
        let port = meeting.port;
        let met = tokio::spawn(async move { meeting.finish().await.unwrap().peer_addr().unwrap() });
        let limit = std::time::Duration::from_secs(5);
        let tcp = tokio::time::timeout(limit, dialer.connect((ip, port).into()))
            .await
            .expect("connected in time")
            .expect("the listener took it");
        let seen = tokio::time::timeout(limit, met).await.expect("met in time").unwrap();
        assert_eq!(seen, tcp.local_addr().unwrap(), "it took the dialer's own connection");
    }

    /// A connection from elsewhere is not taken for the dialer's.
    #[tokio::test]
    async fn only_the_dialers_address_is_met() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let dialer = socket_for(ip, 0, false).unwrap();
        let theirs = dialer.local_addr().unwrap().port();
        let meeting = Meeting::start(SocketAddr::new(ip, theirs)).await.unwrap();
        let port = meeting.port;
        let met = tokio::spawn(meeting.finish());
        let stranger = TcpSocket::new_v4().unwrap();
        stranger.bind((IpAddr::from([127, 0, 0, 2]), 0).into()).unwrap();
        let limit = std::time::Duration::from_secs(5);
        // The stranger gets in at the TCP level (the listener's backlog), and is closed once
        // taken from it.
        let mut stranger = tokio::time::timeout(limit, stranger.connect((ip, port).into()))
            .await
            .expect("connected in time")
            .unwrap();
        let mut byte = [0u8; 1];
        let read =
            tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut stranger, &mut byte));
        assert!(matches!(read.await, Ok(Ok(0) | Err(_))), "the stranger's connection was closed");
        assert!(!met.is_finished(), "a stranger's connection was met");
        let tcp = tokio::time::timeout(limit, dialer.connect((ip, port).into()))
            .await
            .expect("connected in time")
            .unwrap();
        let seen = tokio::time::timeout(limit, met).await.expect("met in time").unwrap().unwrap();
        assert_eq!(seen.peer_addr().unwrap(), tcp.local_addr().unwrap());
    }

    /// A connection from the dialer's address but another port than the one it announced is
    /// not taken for the dialer's either.
    #[tokio::test]
    async fn only_the_announced_port_is_met() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let dialer = socket_for(ip, 0, false).unwrap();
        let theirs = dialer.local_addr().unwrap().port();
        let meeting = Meeting::start(SocketAddr::new(ip, theirs)).await.unwrap();
        let port = meeting.port;
        let met = tokio::spawn(meeting.finish());
        let limit = std::time::Duration::from_secs(5);
        let impostor = TcpSocket::new_v4().unwrap();
        impostor.bind((ip, 0).into()).unwrap();
        assert_ne!(impostor.local_addr().unwrap().port(), theirs);
        let mut impostor = tokio::time::timeout(limit, impostor.connect((ip, port).into()))
            .await
            .expect("connected in time")
            .unwrap();
        let mut byte = [0u8; 1];
        let read =
            tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut impostor, &mut byte));
        assert!(matches!(read.await, Ok(Ok(0) | Err(_))), "the impostor's connection was closed");
        assert!(!met.is_finished(), "a connection from another port was met");
        let tcp = tokio::time::timeout(limit, dialer.connect((ip, port).into()))
            .await
            .expect("connected in time")
            .unwrap();
        let seen = tokio::time::timeout(limit, met).await.expect("met in time").unwrap().unwrap();
        assert_eq!(seen.peer_addr().unwrap(), tcp.local_addr().unwrap());
    }
}
