//! `peerup demo`: a relay and two nodes on loopback, in one process. "home" exposes a small echo
//! service; "laptop" reaches it through `proxy` (first over the relay circuit, then over the
//! direct connection hole punching makes) and prints the path and the bytes moved.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::gate::AccessList;
use peerup_core::identity::peer_id;
use peerup_core::multiaddr::Protocol;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::relay::RelayLimits;
use peerup_core::serve::{self, Limits};
use peerup_core::service::{self, ServiceSpec};
use peerup_core::tunnel::Tunnel;
use peerup_core::{Multiaddr, PeerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::outln;
use crate::runtime;

/// Bytes sent through the tunnel on each pass.
const PAYLOAD: usize = 8 << 20;
/// How long the demo waits for any one step.
const STEP: Duration = Duration::from_secs(20);
/// Connections the echo service serves at once (the demo makes one at a time).
const ECHO_CONNECTIONS: usize = 16;

async fn wait_for(
    rx: &mut broadcast::Receiver<NodeEvent>,
    what: &str,
    mut pred: impl FnMut(&NodeEvent) -> bool,
) -> Result<NodeEvent> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return Ok(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    bail!("node stopped while waiting for {what}")
                }
            }
        }
    };
    tokio::time::timeout(STEP, wait)
        .await
        .with_context(|| format!("timed out waiting for {what}"))?
}

fn loopback() -> Vec<Multiaddr> {
    ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

fn allow(peers: &[PeerId]) -> Result<AccessList> {
    let mut keys = AuthorizedKeys::default();
    for p in peers {
        keys.add(Entry::new(*p, None))?;
    }
    Ok(AccessList::from_keys(&keys))
}

async fn echo(mut sock: TcpStream) {
    let (mut r, mut w) = sock.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

pub(super) fn run() -> Result<()> {
    runtime::block_on(async {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let result = demo(&cancel, &tracker).await;
        runtime::shutdown(&cancel, &tracker).await;
        result
    })
}

async fn demo(cancel: &CancellationToken, tracker: &TaskTracker) -> Result<()> {
    let relay_key = libp2p_key();
    let home_key = libp2p_key();
    let laptop_key = libp2p_key();
    let (home_id, laptop_id) = (peer_id(&home_key), peer_id(&laptop_key));

    let mut relay_cfg = NodeConfig::new(relay_key);
    relay_cfg.listen = loopback();
    relay_cfg.relay_server = Some(RelayLimits::default());
    relay_cfg.listen_addrs_are_external = true;
    relay_cfg.access = allow(&[home_id, laptop_id])?;
    let (relay, mut relay_events) = Tunnel::spawn(relay_cfg, cancel.clone(), tracker)?;
    let relay = relay.node().clone();
    let NodeEvent::Listening(addr) = wait_for(
        &mut relay_events,
        "the relay to listen",
        |e| matches!(e, NodeEvent::Listening(a) if a.iter().any(|p| matches!(p, Protocol::Tcp(_)))),
    )
    .await?
    else {
        bail!("unexpected event");
    };
    let relay_addr = addr.with(Protocol::P2p(relay.peer_id()));
    outln!("relay   {}  listening on {relay_addr}", relay.peer_id())?;

    let node_cfg = |key, reserve, access| {
        let mut c = NodeConfig::new(key);
        c.listen = loopback();
        c.relays = vec![relay_addr.clone()];
        c.reserve = reserve;
        c.access = access;
        c
    };
    let home_access = allow(&[laptop_id])?;
    let (home, mut home_events) =
        Tunnel::spawn(node_cfg(home_key, true, home_access.clone()), cancel.clone(), tracker)?;
    wait_for(&mut home_events, "home's relay reservation", |e| {
        matches!(e, NodeEvent::ReservationAccepted { .. })
    })
    .await?;
    let echo_listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo_listener.local_addr()?.to_string();
    let limits = Limits::waiting(ECHO_CONNECTIONS);
    serve::each(echo_listener, limits, "echo", tracker, cancel.clone(), |(sock, _)| {
        Some(echo(sock))
    });
    let spec = ServiceSpec { name: "echo".into(), local_address: echo_addr, allowed_peers: None };
    outln!(
        "home    {home_id}  reserved a slot on the relay; exposes 'echo' -> {}",
        spec.local_address
    )?;
    service::expose(&home, spec, home_access, cancel.clone(), tracker)?;

    // Behind real NATs the DHT's addresses for home would be unreachable; on loopback they are
    // not, so laptop does without the DHT to show the relay path first.
    let mut laptop_cfg = node_cfg(laptop_key, false, allow(&[home_id])?);
    laptop_cfg.enable_dht = false;
    let (laptop, mut laptop_events) = Tunnel::spawn(laptop_cfg, cancel.clone(), tracker)?;
    wait_for(&mut laptop_events, "laptop to reach the relay", |e| {
        matches!(e, NodeEvent::Identified { .. })
    })
    .await?;
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = proxy.local_addr()?;
    outln!("laptop  {laptop_id}  peerup proxy home echo {}", proxy_addr.port())?;
    let printed = super::proxy::printed();
    crate::proxy::serve(
        proxy,
        laptop.clone(),
        home_id,
        "echo".into(),
        printed,
        cancel.clone(),
        tracker,
    );

    transfer(proxy_addr).await?;
    // Hole punching runs beside the first transfer; wait for it unless it is already done.
    if laptop.node().paths(home_id).await?.iter().all(|p| p.relayed) {
        wait_for(&mut laptop_events, "hole punching", |e| {
            matches!(e, NodeEvent::HolePunched { .. } | NodeEvent::HolePunchFailed { .. })
        })
        .await?;
    }
    transfer(proxy_addr).await?;
    outln!("Done: the service reached through the relay-assisted tunnel, then peer to peer.")?;
    Ok(())
}

fn libp2p_key() -> peerup_core::node::Keypair {
    peerup_core::node::Keypair::generate_ed25519()
}

/// One pass: send the payload through the proxy, read the echo, check it.
async fn transfer(proxy: std::net::SocketAddr) -> Result<()> {
    let data: Vec<u8> =
        (0..PAYLOAD).map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[1]).collect();
    let start = Instant::now();
    let sock = TcpStream::connect(proxy).await?;
    let (mut r, mut w) = sock.into_split();
    let send = async {
        w.write_all(&data).await?;
        w.shutdown().await
    };
    let recv = async {
        let mut out = Vec::with_capacity(PAYLOAD);
        r.read_to_end(&mut out).await.map(|_| out)
    };
    let (sent, echoed) = tokio::time::timeout(STEP, async { tokio::join!(send, recv) })
        .await
        .context("transfer timed out")?;
    sent?;
    let echoed = echoed?;
    if echoed != data {
        bail!("the echo differs: {} bytes back of {}", echoed.len(), data.len());
    }
    let secs = start.elapsed().as_secs_f64();
    outln!(
        "        moved {} MiB each way, byte-exact, in {:.2} s ({:.0} MiB/s)",
        PAYLOAD >> 20,
        secs,
        (2 * PAYLOAD) as f64 / (1 << 20) as f64 / secs
    )?;
    Ok(())
}
