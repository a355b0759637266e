//! `peerup doctor` against a relay on loopback: the JSON shape, the relay checks, and a key file
//! others can read reported with its fix (the probe still runs).

use std::os::unix::fs::PermissionsExt;

use crate::daemon_api::Daemon;
use crate::util::{Home, loopback_relay_config};

/// A port free for both TCP and UDP on 127.0.0.1 (the relay's TCP and first QUIC port match, as
/// in the default config, so the doctor finds QUIC beside the configured TCP address).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn doctor_reports_relay_nat_grade_and_key_permissions() {
    let relay_home = Home::new();
    let cfg = loopback_relay_config(&relay_home, false);
    let port = free_port();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    - \"/ip4/127.0.0.1/tcp/0\"",
        &format!(
            "    - \"/ip4/127.0.0.1/tcp/{port}\"\n    - \"/ip4/127.0.0.1/udp/{port}/quic-v1\"\n    - \"/ip4/127.0.0.1/udp/0/quic-v1\""
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let mut relay = Daemon::spawn(
        &relay_home,
        &["relay", "serve", "--config", cfg.to_str().unwrap()],
        &[],
        "Relay ready: ",
    );
    let relay_addr = relay.wait_line("  /ip4/127.0.0.1/tcp/").trim().to_string();

    let home = Home::new();
    home.run(&["init", "--non-interactive", "--relay", &relay_addr]).ok();
    let key = home.file("identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let v: serde_json::Value =
        serde_json::from_str(&home.run(&["doctor", "--json", "--no-upnp"]).ok()).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert!(findings.len() >= 10, "{v:#}");
    for f in findings {
        for field in ["id", "status", "summary"] {
            assert!(f[field].is_string(), "{field} in {f}");
        }
        assert!(f["hint"].is_string() || f["hint"].is_null(), "{f}");
        assert!(["ok", "info", "warn", "fail"].contains(&f["status"].as_str().unwrap()), "{f}");
    }
    let perm = findings.iter().find(|f| f["id"] == "key_permissions").unwrap();
    assert_eq!(perm["status"], "fail", "{perm}");
    assert!(perm["summary"].as_str().unwrap().contains("0644"), "{perm}");
    assert_eq!(perm["hint"], format!("chmod 600 {}", key.display()));

    let r = &v["relays"][0];
    assert!(relay_addr.ends_with(r["peer_id"].as_str().unwrap()), "{r:#}");
    for t in ["tcp", "quic", "quic_second"] {
        assert_eq!(r[t]["status"], "ok", "{t}: {r:#}");
    }
    assert_eq!(r["reservation"]["status"], "accepted", "{r:#}");
    assert_eq!(r["reservation"]["source"], "probe");
    // The loopback relay sees our own (loopback) address on both of its QUIC ports.
    assert_eq!(v["nat_mapping"]["mapping"], "none", "{v:#}");
    assert_eq!(v["nat_mapping"]["basis"], "two_ports", "{v:#}");
    assert_eq!(v["nat_mapping"]["observations"].as_array().unwrap().len(), 2);
    assert_eq!(v["upnp"], "skipped");
    for key in ["cgnat", "double_nat"] {
        assert!(v[key].is_boolean(), "{key}");
    }
    for key in ["public_ipv4", "public_ipv6", "hops"] {
        assert!(v[key].is_array(), "{key}");
    }
    let grade = v["grade"]["grade"].as_str().unwrap();
    assert!(["A", "B", "C", "D", "F"].contains(&grade), "{grade}");
    assert!(v["grade"]["label"].is_string());
    assert!(!v["grade"]["reasons"].as_array().unwrap().is_empty());

    // Text: one line per finding, the fix beside it, no color under NO_COLOR.
    let text = home.run(&["doctor", "--no-upnp"]).ok();
    let line = text.lines().find(|l| l.contains("identity key")).unwrap();
    assert!(line.contains("FAIL") && line.contains("(fix: chmod 600"), "{line}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("Reachability: "), "{text}");
}

#[test]
fn doctor_without_a_config_is_one_error_line() {
    let err = Home::new().run(&["doctor", "--no-upnp"]).fails();
    assert!(err.contains("no config file found"), "{err}");
}
