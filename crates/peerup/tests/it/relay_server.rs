//! The relay server's operations: authorizations that a running relay applies at once, and a node
//! that a relay refuses saying so with the fix.

use crate::daemon_api::Daemon;
use crate::util::{Home, loopback_relay_config};

/// A node the relay does not know is refused, says so in plain words with the command that fixes
/// it; `relay authorize` on the running relay lets it reserve without any restart, and
/// `relay deauthorize` ends its reservation at once.
#[test]
fn a_running_relay_applies_authorize_and_deauthorize_at_once() {
    let relay_home = Home::new();
    let cfg = loopback_relay_config(&relay_home, true);
    let cfg = cfg.to_str().unwrap();
    let mut relay =
        Daemon::spawn(&relay_home, &["relay", "serve", "--config", cfg], &[], "Relay ready: ");
    let relay_addr = relay.wait_line("  /ip4/127.0.0.1/tcp/").trim().to_string();
    let relay_id = relay_addr.rsplit('/').next().unwrap().to_string();

    let home = Home::new();
    home.run(&["init", "--non-interactive", "--relay", &relay_addr]).ok();
    let id = home.run(&["whoami"]).ok().trim().to_string();
    let mut node = Daemon::start(&home);
    let refused = node.wait_line("Refused: ");
    assert_eq!(
        refused,
        format!(
            "Refused: the relay {relay_id} does not authorize this node: run `peerup relay authorize {id}` there"
        )
    );

    // `doctor` says the same, from its own probe of the relay.
    let v: serde_json::Value =
        serde_json::from_str(&home.run(&["doctor", "--json", "--no-upnp"]).ok()).unwrap();
    let plain = format!(
        "the relay {relay_id} does not authorize this node: run `peerup relay authorize {id}` there"
    );
    assert_eq!(v["relays"][0]["reservation"]["status"], "not_authorized", "{v:#}");
    assert_eq!(v["relays"][0]["reservation"]["error"], plain.as_str());
    let finding = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "relay_reservation")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!((&finding["status"], &finding["summary"]), (&"fail".into(), &plain.as_str().into()));

    let out = relay_home.run(&["relay", "authorize", &id, "--config", cfg]).ok();
    assert!(out.contains("applies this at once"), "{out}");
    node.wait_line(&format!("Reservation accepted by relay {relay_id}"));

    relay_home.run(&["relay", "deauthorize", &id, "--config", cfg]).ok();
    node.wait_line(&format!("Reservation lost on relay {relay_id}"));
    node.wait_line("Refused: ");
    assert!(relay.is_running());
}
