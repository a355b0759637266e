//! `peerup ping`, `peerup traceroute` and `peerup resolve`.

use std::time::Duration;

use anyhow::{Context, Result};
use peerup_core::node::Node;
use peerup_core::{StreamProtocol, pingpong};
use serde::Serialize;

use super::Ctx;
use crate::config::{self, schema::NodeConfig};
use crate::core_config;
use crate::diag;
use crate::outln;
use crate::output::{self, short_id};
use crate::peers;
use crate::runtime;

#[derive(Serialize)]
struct Reply {
    seq: u32,
    peer_id: String,
    rtt_ms: Option<f64>,
    path: Option<&'static str>,
    error: Option<String>,
}

#[derive(Serialize, Default)]
struct Stats {
    sent: u32,
    received: u32,
    lost: u32,
    loss_pct: f64,
    min_ms: f64,
    avg_ms: f64,
    max_ms: f64,
}

impl Stats {
    fn new(rtts: &[f64], sent: u32) -> Self {
        let received = rtts.len() as u32;
        let lost = sent - received;
        let mut s = Stats { sent, received, lost, ..Default::default() };
        if sent > 0 {
            s.loss_pct = f64::from(lost) * 100.0 / f64::from(sent);
        }
        if !rtts.is_empty() {
            s.min_ms = rtts.iter().copied().fold(f64::INFINITY, f64::min);
            s.max_ms = rtts.iter().copied().fold(0.0, f64::max);
            s.avg_ms = rtts.iter().sum::<f64>() / rtts.len() as f64;
        }
        s
    }
}

fn ping_protocol(c: &NodeConfig) -> Result<StreamProtocol> {
    StreamProtocol::try_from_owned(c.protocols.ping_pong.id.clone())
        .context("protocols.ping_pong.id")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Pings through the running daemon, when there is one and the count is finite. Returns `None`
/// when no daemon answers, so the caller runs a node of its own.
pub(super) fn ping_via_daemon(
    dir: &std::path::Path,
    target: &str,
    count: u32,
    interval: Duration,
    json: bool,
) -> Result<Option<()>> {
    if count == 0 {
        return Ok(None);
    }
    let body = serde_json::json!({
        "peer": target,
        "count": count,
        "interval_ms": u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
    });
    let Some(data) =
        crate::daemon::client::call_if_running(dir, hyper::Method::POST, "/v1/ping", Some(body))?
    else {
        return Ok(None);
    };
    let results = data["results"].as_array().cloned().unwrap_or_default();
    if json {
        for r in &results {
            outln!("{r}")?;
        }
        outln!("{}", data["stats"])?;
        return Ok(Some(()));
    }
    outln!("PING {target} (via the daemon)")?;
    for r in &results {
        match (r["rtt_ms"].as_f64(), r["path"].as_str()) {
            (Some(rtt), Some(path)) => outln!("seq={} rtt={rtt:.1}ms path=[{path}]", r["seq"])?,
            _ => outln!("seq={} error={}", r["seq"], r["error"].as_str().unwrap_or_default())?,
        }
    }
    let st = &data["stats"];
    let f = |k: &str| st[k].as_f64().unwrap_or(0.0);
    outln!()?;
    outln!("--- {target} ping statistics ---")?;
    outln!(
        "{} sent, {} received, {:.0}% loss, rtt min/avg/max = {:.1}/{:.1}/{:.1} ms",
        st["sent"],
        st["received"],
        f("loss_pct"),
        f("min_ms"),
        f("avg_ms"),
        f("max_ms")
    )?;
    Ok(Some(()))
}

pub(super) fn ping(
    target: &str,
    count: u32,
    interval: Duration,
    json: bool,
    ctx: &Ctx,
) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let (peer, _) = peers::resolve_peer(&loaded.config, target)?;
    // Daemon first: it is already connected, and a second node with the same key would compete.
    if ping_via_daemon(loaded.dir(), target, count, interval, json)?.is_some() {
        return Ok(());
    }
    let protocol = ping_protocol(&loaded.config)?;
    runtime::block_on(async move {
        let (cancel, tracker) = runtime::shutdown_on_signals()?;
        let (node, _events) =
            Node::spawn(core_config::node_config(&loaded, false)?, cancel.clone(), &tracker)?;
        if !json {
            outln!("PING {target} ({})", short_id(peer))?;
        }
        let mut rtts = Vec::new();
        let mut sent = 0;
        let mut seq = 0;
        while count == 0 || seq < count {
            seq += 1;
            if seq > 1 {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
            sent += 1;
            let result = tokio::select! {
                () = cancel.cancelled() => break,
                r = pingpong::ping(&node, peer, protocol.clone()) => r,
            };
            let reply = match result {
                Ok((rtt, path)) => {
                    rtts.push(ms(rtt));
                    Reply {
                        seq,
                        peer_id: peer.to_string(),
                        rtt_ms: Some(ms(rtt)),
                        path: Some(path.kind()),
                        error: None,
                    }
                }
                Err(e) => Reply {
                    seq,
                    peer_id: peer.to_string(),
                    rtt_ms: None,
                    path: None,
                    error: Some(e.to_string()),
                },
            };
            if json {
                outln!("{}", serde_json::to_string(&reply)?)?;
            } else if let (Some(rtt), Some(path)) = (reply.rtt_ms, reply.path) {
                outln!("seq={seq} rtt={rtt:.1}ms path=[{path}]")?;
            } else {
                outln!("seq={seq} error={}", reply.error.unwrap_or_default())?;
            }
        }
        let stats = Stats::new(&rtts, sent);
        if json {
            outln!("{}", serde_json::to_string(&stats)?)?;
        } else {
            outln!()?;
            outln!("--- {target} ping statistics ---")?;
            outln!(
                "{} sent, {} received, {:.0}% loss, rtt min/avg/max = {:.1}/{:.1}/{:.1} ms",
                stats.sent,
                stats.received,
                stats.loss_pct,
                stats.min_ms,
                stats.avg_ms,
                stats.max_ms
            )?;
        }
        runtime::shutdown(&cancel, &tracker).await;
        Ok(())
    })
}

pub(super) fn traceroute(target: &str, json: bool, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let (peer, _) = peers::resolve_peer(&loaded.config, target)?;
    let protocol = ping_protocol(&loaded.config)?;
    // Daemon first, as for ping.
    let body = serde_json::json!({ "peer": target });
    let via_daemon = crate::daemon::client::call_if_running(
        loaded.dir(),
        hyper::Method::POST,
        "/v1/traceroute",
        Some(body),
    )?;
    let trace = match via_daemon {
        Some(v) => v,
        None => runtime::block_on_value(async move {
            let (cancel, tracker) = runtime::shutdown_on_signals()?;
            let (node, _events) =
                Node::spawn(core_config::node_config(&loaded, false)?, cancel.clone(), &tracker)?;
            let trace = peerup_core::diag::traceroute(&node, peer, protocol).await;
            runtime::shutdown(&cancel, &tracker).await;
            Ok(diag::trace_json(target, peer, &trace))
        })?,
    };
    if json {
        return output::json(&trace);
    }
    outln!("traceroute to {target} ({})", short_id(peer))?;
    for h in trace["hops"].as_array().into_iter().flatten() {
        let (hop, id, addr) = (
            &h["hop"],
            short_id(h["peer_id"].as_str().unwrap_or_default()),
            h["address"].as_str().unwrap_or_default(),
        );
        match h["rtt_ms"].as_f64() {
            Some(rtt) => outln!(" {hop}  {id}  {addr}  {rtt:.1}ms")?,
            None => outln!(" {hop}  {id}  {addr}  *  ({})", h["error"].as_str().unwrap_or(""))?,
        }
    }
    outln!("--- path: [{}] ---", trace["path"].as_str().unwrap_or("?"))?;
    Ok(())
}

#[derive(Serialize)]
struct Resolved {
    name: String,
    peer_id: String,
    source: &'static str,
}

pub(super) fn resolve(name: &str, json: bool, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    // Daemon first: it answers from the names it runs with.
    let body = serde_json::json!({ "name": name });
    if let Some(v) = crate::daemon::client::call_if_running(
        loaded.dir(),
        hyper::Method::POST,
        "/v1/resolve",
        Some(body),
    )? {
        if json {
            return output::json(&v);
        }
        outln!("{name} \u{2192} {}", v["peer_id"].as_str().unwrap_or_default())?;
        return Ok(());
    }
    let (peer, source) = peers::resolve_peer(&loaded.config, name)?;
    let r = Resolved { name: name.to_string(), peer_id: peer.to_string(), source };
    if json {
        return output::json(&r);
    }
    outln!("{} \u{2192} {}", r.name, r.peer_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let s = Stats::new(&[10.0, 20.0, 30.0], 4);
        assert_eq!((s.sent, s.received, s.lost), (4, 3, 1));
        assert_eq!(s.loss_pct, 25.0);
        assert_eq!((s.min_ms, s.avg_ms, s.max_ms), (10.0, 20.0, 30.0));
        let none = Stats::new(&[], 2);
        assert_eq!(none.loss_pct, 100.0);
    }
}
