//! `peerup daemon`: run the node in the foreground: hold relay reservations, expose the enabled
//! services, answer pings, until SIGINT/SIGTERM.

use anyhow::{Context, Result, bail};
use peerup_core::node::{Node, NodeEvent};
use peerup_core::service::{self, ServiceSpec};
use peerup_core::{StreamProtocol, pingpong};
use tokio::sync::broadcast::error::RecvError;

use super::Ctx;
use crate::config::{self, validate::validate_node};
use crate::net;
use crate::outln;

pub(super) fn run(ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    if let Err(problems) = validate_node(&loaded.config) {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("invalid config {}: {}", loaded.path.display(), list.join("; "));
    }
    net::block_on(async move {
        let (cancel, tracker) = net::shutdown_on_signals()?;
        let core = net::node_config(&loaded, true)?;
        let access = core.access.clone();
        let (node, mut events) = Node::spawn(core, cancel.clone(), &tracker)?;
        outln!("Peer ID: {}", node.peer_id())?;

        let c = &loaded.config;
        for (name, svc) in c.services.iter().filter(|(_, s)| s.enabled) {
            let spec = ServiceSpec {
                name: name.clone(),
                local_address: svc.local_address.clone(),
                allowed_peers: net::allowed_peers(name, svc.allowed_peers.as_ref())?,
            };
            service::expose(&node, spec, access.clone(), cancel.clone(), &tracker)?;
            outln!("Exposing service {name} -> {}", svc.local_address)?;
        }
        if c.protocols.ping_pong.enabled {
            let protocol = StreamProtocol::try_from_owned(c.protocols.ping_pong.id.clone())
                .context("protocols.ping_pong.id")?;
            pingpong::serve(&node, protocol, access.clone(), cancel.clone(), &tracker);
        }

        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => break,
                e = events.recv() => e,
            };
            match event {
                Ok(NodeEvent::ReservationAccepted { relay, renewal: false }) => {
                    outln!("Reservation accepted by relay {relay}")?;
                }
                Ok(NodeEvent::ReservationLost { relay, reason }) => {
                    outln!("Reservation lost on relay {relay} ({reason}); reconnecting")?;
                }
                Ok(NodeEvent::HolePunched { peer }) => outln!("Direct connection with {peer}")?,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
        net::shutdown(&cancel, &tracker).await;
        Ok(())
    })
}
