//! `peerup relay …`: the node's own relays, and the relay server.
//!
//! - [`node_relays`]: `relay add|list|remove`, the relays this node keeps reservations on.
//! - [`server`]: the relay server, with its own config: `relay setup|serve|info|authorize|
//!   deauthorize|list-peers`, and `setup --fresh` with its snapshot.
//! - `relay version`: as `peerup version`.
//! - [`pair`]: `relay pair`, group codes from the running relay over its admin socket.
//! - `relay config validate|apply|confirm|rollback` (the relay server's config changes) are in
//!   `config_cmd`.

mod node_relays;
mod pair;
mod server;

use anyhow::Result;

use super::Ctx;
use crate::cli::RelayCommand;

pub(super) fn run(cmd: RelayCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        RelayCommand::Add { addresses, peer_id } => {
            node_relays::add(&addresses, peer_id.as_deref(), ctx)
        }
        RelayCommand::List(json) => node_relays::list(json.json, ctx),
        RelayCommand::Remove { address, force } => node_relays::remove(&address, force, ctx),
        RelayCommand::Config(cmd) => super::config_cmd::relay_changes(cmd, ctx),
        RelayCommand::Setup { dir, fresh, non_interactive: _ } => {
            server::setup(dir.as_deref(), fresh, ctx)
        }
        RelayCommand::Serve => server::serve(ctx),
        RelayCommand::Pair { count, ttl, expires, list, revoke, json } => {
            let args = pair::PairArgs {
                count: usize::from(count),
                ttl,
                expires,
                list,
                revoke,
                json: json.json,
            };
            server::pair(&args, ctx)
        }
        RelayCommand::Info(json) => server::info(json.json, ctx),
        RelayCommand::Authorize { peer_id, comment } => {
            server::authorize(&peer_id, comment.as_deref(), ctx)
        }
        RelayCommand::Deauthorize { peer_id } => server::deauthorize(&peer_id, ctx),
        RelayCommand::ListPeers(json) => server::list_peers(json.json, ctx),
        RelayCommand::Version(json) => super::version("peerup relay", json.json),
    }
}
