//! Group pairing on the relay: `peerup relay pair [--count N] [--ttl 1h] [--expires D]`,
//! `--list` and `--revoke <group>`. The CLI talks to the running `relay serve` over its admin socket
//! `<relay config dir>/.relay-admin.sock` (owner-only), authenticated by the cookie
//! `.relay-admin.cookie` that changes on every start. The protocol is one JSON line each way.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use peerup_core::multiaddr::Protocol;
use peerup_core::node::Node;
use peerup_core::pairing::code::InviteCode;
use peerup_core::pairing::group::{GroupSpec, MAX_MEMBER_EXPIRES};
use peerup_core::pairing::rendezvous::Rendezvous;
use peerup_core::serve::{self, Accept, Limits};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::daemon::ApiPaths;
use crate::outln;
use crate::output::{self, faint, ok};

/// The admin socket's and cookie's file names in the relay config's folder.
const SOCKET: &str = ".relay-admin.sock";
const COOKIE: &str = ".relay-admin.cookie";
/// The longest request line.
const MAX_REQUEST: u64 = 4096;
/// How long one admin connection may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections answered at once; more wait. The socket is the relay owner's alone, so this
/// only bounds the owner's own scripts.
const MAX_REQUESTS: usize = 16;
/// A pause after a failed accept (out of file descriptors, typically), so that the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

fn paths(dir: &Path) -> ApiPaths {
    ApiPaths { socket: dir.join(SOCKET), cookie: dir.join(COOKIE) }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Pair { count: usize, ttl_secs: u64, expires_secs: Option<u64> },
    List,
    Revoke { id: String },
}

#[derive(Deserialize, Serialize)]
struct Envelope {
    token: String,
    #[serde(flatten)]
    request: Request,
}

/// Serves the admin socket in the relay process.
pub(super) async fn serve(
    dir: &Path,
    node: Node,
    rendezvous: Rendezvous,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<()> {
    let paths = paths(dir);
    if UnixStream::connect(&paths.socket).await.is_ok() {
        bail!(
            "another relay runs with this config (its admin socket {} answers)",
            paths.socket.display()
        );
    }
    let listener = paths.bind().await?;
    let token = paths.new_cookie()?;
    let limits = Limits::waiting(MAX_REQUESTS).within(REQUEST_TIMEOUT);
    let source = AdminSocket(listener);
    serve::each(source, limits, "relay admin request", tracker, cancel.clone(), move |stream| {
        let (token, node, rv) = (token.clone(), node.clone(), rendezvous.clone());
        Some(async move { answer(stream, &token, &node, &rv).await })
    });
    // The socket and the cookie last as long as the relay runs.
    tracker.spawn(async move {
        cancel.cancelled().await;
        paths.remove();
    });
    Ok(())
}

/// The admin socket as a source of connections for [`serve::each`]. It never closes: a failed
/// accept is logged and tried again after a pause.
struct AdminSocket(UnixListener);

impl Accept for AdminSocket {
    type Item = UnixStream;

    async fn next(&mut self) -> Option<UnixStream> {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => return Some(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "relay admin socket: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

async fn answer(stream: UnixStream, token: &str, node: &Node, rv: &Rendezvous) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(r.take(MAX_REQUEST)).read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Envelope>(&line) {
        Err(e) => json!({ "error": format!("bad request: {e}") }),
        Ok(env) if !bool::from(env.token.as_bytes().ct_eq(token.as_bytes())) => {
            json!({ "error": "unauthorized" })
        }
        Ok(env) => match handle(env.request, node, rv).await {
            Ok(v) => json!({ "data": v }),
            Err(e) => json!({ "error": format!("{e:#}") }),
        },
    };
    let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
}

/// The relay's IPv4 TCP address for long codes: a non-loopback IPv4 TCP listen address if there is
/// one (a wildcard replaced by the first non-loopback interface address), else a loopback one.
async fn code_address(node: &Node) -> Option<SocketAddrV4> {
    let addrs = node.listen_addrs().await.ok()?;
    let candidates: Vec<SocketAddrV4> = addrs
        .iter()
        .filter_map(|a| {
            let (mut ip, mut port) = (None, None);
            for p in a.iter() {
                match p {
                    Protocol::Ip4(i) => ip = Some(i),
                    Protocol::Tcp(t) => port = Some(t),
                    _ => {}
                }
            }
            let ip = match ip? {
                i if i.is_unspecified() => first_interface_ipv4()?,
                i => i,
            };
            Some(SocketAddrV4::new(ip, port?))
        })
        .collect();
    candidates.iter().find(|a| !a.ip().is_loopback()).or(candidates.first()).copied()
}

fn first_interface_ipv4() -> Option<Ipv4Addr> {
    if_addrs::get_if_addrs().ok()?.into_iter().find_map(|i| match i.ip() {
        std::net::IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
        _ => None,
    })
}

async fn handle(req: Request, node: &Node, rv: &Rendezvous) -> Result<Value> {
    match req {
        Request::Pair { count, ttl_secs, expires_secs } => {
            let spec = GroupSpec {
                count,
                ttl: Duration::from_secs(ttl_secs),
                member_expires: expires_secs.filter(|s| *s > 0).map(Duration::from_secs),
            };
            let group = rv.create_group(spec)?;
            let relay = code_address(node).await;
            let codes: Vec<String> = group
                .codes
                .iter()
                .map(|(slot, password)| {
                    InviteCode { relay, slot: *slot, password: *password }.encode()
                })
                .collect();
            Ok(
                json!({ "group_id": format!("{:08x}", group.id), "codes": codes, "ttl_secs": ttl_secs }),
            )
        }
        Request::List => {
            let groups: Vec<Value> = rv
                .groups()
                .into_iter()
                .map(|g| {
                    json!({
                        "id": format!("{:08x}", g.id),
                        "total": g.total,
                        "used": g.members.len(),
                        "expires_in_secs": g.expires_in.as_secs(),
                        "members": g.members.iter().map(|(p, n)| json!({"peer_id": p.to_string(), "name": n})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Ok(Value::Array(groups))
        }
        Request::Revoke { id } => {
            let id = u32::from_str_radix(id.trim(), 16).context("a group id is 8 hex digits")?;
            if !rv.revoke(id) {
                bail!("group not found");
            }
            Ok(json!({ "status": "revoked" }))
        }
    }
}

/// What `relay pair` was asked.
pub(super) struct PairArgs {
    pub(super) count: usize,
    pub(super) ttl: Duration,
    pub(super) expires: Option<Duration>,
    pub(super) list: bool,
    pub(super) revoke: Option<String>,
    pub(super) json: bool,
}

/// `peerup relay pair`: asks the running relay (whose config is in `dir`).
pub(super) fn run(dir: &Path, args: &PairArgs) -> Result<()> {
    if args.expires.is_some_and(|d| d > MAX_MEMBER_EXPIRES) {
        bail!(
            "--expires may be at most {} days; leave it out for memberships that do not expire",
            MAX_MEMBER_EXPIRES.as_secs() / 86_400
        );
    }
    let request = match (&args.revoke, args.list) {
        (Some(id), _) => Request::Revoke { id: id.clone() },
        (None, true) => Request::List,
        (None, false) => Request::Pair {
            count: args.count,
            ttl_secs: args.ttl.as_secs(),
            expires_secs: args.expires.map(|d| d.as_secs()),
        },
    };
    let paths = paths(dir);
    let token = std::fs::read_to_string(&paths.cookie).with_context(|| {
        format!(
            "the relay is not running (no {}); start it with 'peerup relay serve'",
            paths.cookie.display()
        )
    })?;
    let env = Envelope { token: token.trim().to_string(), request };
    let reply: Value = crate::runtime::block_on_value(async {
        let mut s = UnixStream::connect(&paths.socket)
            .await
            .with_context(|| format!("the relay is not running ({})", paths.socket.display()))?;
        s.write_all(format!("{}\n", serde_json::to_string(&env)?).as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(s.take(1 << 20)).read_line(&mut line).await?;
        serde_json::from_str(&line).context("the relay answered garbage")
    })?;
    if let Some(e) = reply.get("error").and_then(Value::as_str) {
        bail!("relay: {e}");
    }
    let data = reply.get("data").cloned().unwrap_or(Value::Null);
    if args.json {
        return output::json(&data);
    }
    match (&args.revoke, args.list) {
        (Some(id), _) => outln!("{}", ok(format!("Group {id} revoked")))?,
        (None, true) => {
            let groups = data.as_array().cloned().unwrap_or_default();
            if groups.is_empty() {
                outln!("No active groups.")?;
            }
            for g in groups {
                // A group outlives its codes while it has members to introduce.
                let left = match g["expires_in_secs"].as_u64() {
                    Some(0) | None => "codes expired".to_string(),
                    Some(s) => format!("{s} s left"),
                };
                outln!(
                    "  {}  {}/{} used  ({left})",
                    g["id"].as_str().unwrap_or("?"),
                    g["used"],
                    g["total"],
                )?;
            }
        }
        (None, false) => {
            let ttl = humantime::format_duration(args.ttl);
            outln!(
                "Group {} ({} codes, valid for {ttl}):",
                data["group_id"].as_str().unwrap_or("?"),
                args.count
            )?;
            for (i, c) in data["codes"].as_array().cloned().unwrap_or_default().iter().enumerate() {
                outln!("  Code {}:  {}", i + 1, c.as_str().unwrap_or("?"))?;
            }
            outln!(
                "{}",
                faint("Each member runs: peerup join <its code>   (then 'peerup daemon')")
            )?;
        }
    }
    Ok(())
}
