//! `peerup doctor --json` on four hosts of one lab: what each NAT looks like from the relay, and
//! the grade that follows.

use std::time::{Duration, Instant};

use super::lab::Lab;
use super::node::Node;
use super::paths::nodes;

/// `doctor --json` on `node`, with its wall time.
fn doctor(lab: &Lab, node: &Node) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let out = node.peerup(lab, "doctor", &["doctor", "--json"]).ok();
    let took = start.elapsed();
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{}: doctor --json printed no JSON ({e}):\n{out}", node.host));
    say!(
        "[{}] {}: mapping {} ({}), cgnat {}, double NAT {}, hops {}, grade {} in {:.1} s",
        lab.prefix(),
        node.host,
        v["nat_mapping"]["mapping"],
        v["nat_mapping"]["basis"],
        v["cgnat"],
        v["double_nat"],
        v["hops"],
        v["grade"]["grade"],
        took.as_secs_f64()
    );
    (v, took)
}

#[track_caller]
fn finding<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .unwrap_or_else(|| panic!("no {id} finding in {v:#}"))
}

/// The relay reachable over TCP and QUIC, its reservation granted with limits, and both QUIC
/// ports compared.
#[track_caller]
fn relay_is_fine(host: &str, v: &serde_json::Value) {
    let r = &v["relays"][0];
    for t in ["tcp", "quic", "quic_second"] {
        assert_eq!(r[t]["status"], "ok", "{host}: relay {t}: {r:#}");
    }
    assert_eq!(r["reservation"]["status"], "accepted", "{host}: {r:#}");
    assert!(r["reservation"]["circuit_duration_secs"].as_u64().is_some(), "{host}: {r:#}");
    assert_eq!(v["nat_mapping"]["basis"], "two_ports", "{host}: {v:#}");
    assert_eq!(v["upnp"], "not_found", "{host}: the lab has no UPnP");
    for id in ["relay_tcp", "relay_quic", "relay_reservation", "key_permissions"] {
        assert_eq!(finding(v, id)["status"], "ok", "{host}: {id}");
    }
}

pub fn four_hosts() {
    let Some(lab) = Lab::up("pd1", &[]) else { return };
    let (_relay, n) = nodes(&lab, &["alice", "carol", "dave", "pubpeer"]);
    let [alice, carol, dave, pubpeer] = [&n[0], &n[1], &n[2], &n[3]];

    let (v, took) = doctor(&lab, alice);
    relay_is_fine("alice", &v);
    assert_eq!(v["nat_mapping"]["mapping"], "endpoint-independent", "{v:#}");
    assert_eq!((v["cgnat"].as_bool(), v["double_nat"].as_bool()), (Some(false), Some(false)));
    assert_eq!(v["hops"][0]["address"], "192.168.1.1", "alice's router answers TTL 1");
    assert_eq!(v["public_ipv4"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["grade"]["grade"], "B", "{v:#}");
    assert!(took < Duration::from_secs(10), "doctor took {took:?}");

    let (v, _) = doctor(&lab, carol);
    relay_is_fine("carol", &v);
    assert_eq!(v["nat_mapping"]["mapping"], "endpoint-dependent", "{v:#}");
    assert_eq!(finding(&v, "nat_mapping")["status"], "warn");
    assert!(finding(&v, "nat_mapping")["hint"].is_string());
    assert_eq!(v["grade"]["grade"], "D", "{v:#}");

    let (v, _) = doctor(&lab, dave);
    relay_is_fine("dave", &v);
    assert_eq!((v["cgnat"].as_bool(), v["double_nat"].as_bool()), (Some(true), Some(true)));
    let hops: Vec<&str> =
        v["hops"].as_array().unwrap().iter().map(|h| h["address"].as_str().unwrap()).collect();
    assert_eq!(hops[..2], ["192.168.4.1", "100.64.0.1"], "{v:#}");
    for id in ["cgnat", "double_nat"] {
        assert_eq!(finding(&v, id)["status"], "warn", "{id}");
        assert!(finding(&v, id)["hint"].is_string(), "{id}");
    }
    assert_eq!(v["grade"]["grade"], "D", "{v:#}");
    assert!(v["grade"]["reasons"].to_string().contains("Double NAT"), "{v:#}");

    let (v, _) = doctor(&lab, pubpeer);
    relay_is_fine("pubpeer", &v);
    assert_eq!(v["nat_mapping"]["mapping"], "none", "{v:#}");
    assert_eq!(v["public_ipv4"][0], "198.18.0.2", "{v:#}");
    assert_eq!((v["cgnat"].as_bool(), v["double_nat"].as_bool()), (Some(false), Some(false)));
    assert_eq!(v["hops"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["grade"]["grade"], "B", "{v:#}");
}
