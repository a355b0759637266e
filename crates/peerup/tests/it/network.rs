//! The networked commands' offline edges (names, relay setup, argument errors) and the loopback
//! demo, which runs a relay and two nodes in one process.

use std::os::unix::fs::PermissionsExt;

use crate::util::{Home, PEER_A};

#[test]
fn resolve_names_and_peer_ids() {
    let home = Home::initialized();
    let path = home.file("config.yaml");
    let text =
        home.read("config.yaml").replace("names: {}", &format!("names:\n  home: \"{PEER_A}\""));
    std::fs::write(&path, text).unwrap();
    assert_eq!(home.run(&["resolve", "home"]).ok(), format!("home \u{2192} {PEER_A}\n"));
    let json: serde_json::Value =
        serde_json::from_str(&home.run(&["resolve", PEER_A, "--json"]).ok()).unwrap();
    assert_eq!(json["source"], "peer_id");
    let err = home.run(&["resolve", "nobody"]).fails();
    assert!(err.contains("unknown peer \"nobody\""), "{err}");
}

#[test]
fn relay_setup_info_and_authorization() {
    let home = Home::new();
    let dir = home.path().join("relay");
    let out =
        home.run(&["relay", "setup", "--dir", dir.to_str().unwrap(), "--non-interactive"]).ok();
    for f in ["relay-server.yaml", "relay_node.key", "relay_authorized_keys"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let cfg = dir.join("relay-server.yaml");
    let cfg = cfg.to_str().unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&home.run(&["relay", "info", "--json", "--config", cfg]).ok())
            .unwrap();
    let id = info["peer_id"].as_str().unwrap().to_string();
    assert!(out.contains(&id), "setup prints the relay's peer ID: {out}");
    assert!(
        info["addresses"].as_array().unwrap().iter().all(|a| a.as_str().unwrap().ends_with(&id))
    );

    // A second setup keeps the identity.
    let again = home.run(&["relay", "setup", "--dir", dir.to_str().unwrap()]).ok();
    assert!(again.contains("existing files kept") && again.contains(&id), "{again}");

    home.run(&["relay", "authorize", PEER_A, "--comment", "home", "--config", cfg]).ok();
    let list: serde_json::Value =
        serde_json::from_str(&home.run(&["relay", "list-peers", "--json", "--config", cfg]).ok())
            .unwrap();
    assert_eq!(list[0]["peer_id"], PEER_A);
    assert_eq!(list[0]["comment"], "home");
    let err = home.run(&["relay", "authorize", "bogus", "--config", cfg]).fails();
    assert!(err.contains("invalid peer ID"), "{err}");
    home.run(&["relay", "deauthorize", PEER_A, "--config", cfg]).ok();
    assert!(home.run(&["relay", "list-peers", "--config", cfg]).ok().contains("Total: 0 peer(s)"));
    let err = home.run(&["relay", "serve", "--config", "/nonexistent/relay.yaml"]).fails();
    assert!(err.contains("relay config not found"), "{err}");
}

#[test]
fn proxy_and_ping_refuse_bad_targets_and_busy_ports() {
    let home = Home::initialized();
    let err = home.run(&["proxy", "nobody", "ssh", "0"]).fails();
    assert!(err.contains("unknown peer \"nobody\""), "{err}");
    let err = home.run(&["proxy", PEER_A, "Bad_Service", "0"]).fails();
    assert!(err.contains("service name"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let err = home.run(&["proxy", PEER_A, "ssh", &port]).fails();
    assert!(err.contains("is the port in use"), "{err}");
    let err = home.run(&["ping", "nobody"]).fails();
    assert!(err.contains("unknown peer"), "{err}");
    assert_eq!(home.run(&["ping", PEER_A, "--interval", "0s"]).code, 2);
}

#[test]
fn daemon_refuses_an_invalid_config() {
    let home = Home::initialized();
    let path = home.file("config.yaml");
    let text = home.read("config.yaml").replace("\"2m\"", "\"0s\"");
    std::fs::write(&path, text).unwrap();
    let err = home.run(&["daemon"]).fails();
    assert!(err.contains("relay.reservation_interval"), "{err}");
}

#[test]
fn demo_tunnels_through_the_relay_then_directly() {
    let home = Home::new();
    let out = home.run(&["demo"]).ok();
    assert!(out.contains("Connection 1: [RELAYED]"), "{out}");
    assert!(out.contains("Connection 2: [DIRECT]"), "the second connection is direct: {out}");
    assert!(out.matches("byte-exact").count() == 2, "{out}");
    assert!(out.contains("Done:"), "{out}");
}
