//! `peerup service …` and `peerup relay add|list|remove`: text edits that keep comments.

use crate::util::{Home, PEER_A, RELAY_ID};

#[test]
fn service_round_trip_keeps_comments_and_mode() {
    let home = Home::initialized();
    let original = home.read("config.yaml");
    home.run(&["service", "add", "ssh", "localhost:22"]).ok();
    home.run(&["service", "add", "web", "127.0.0.1:8080", "--protocol", "/x/1.0.0"]).ok();
    home.run(&["service", "disable", "ssh"]).ok();
    let list: serde_json::Value =
        serde_json::from_str(&home.run(&["service", "list", "--json"]).ok()).unwrap();
    assert_eq!(list[0]["name"], "ssh");
    assert_eq!(list[0]["enabled"], false);
    assert_eq!(list[1]["protocol"], "/peerup/web/1.0.0");
    let text = home.read("config.yaml");
    assert!(text.contains("# Friendly names for peer IDs"), "comments survive: {text}");
    assert_eq!(home.mode("config.yaml"), 0o600);
    assert!(home.run(&["service", "disable", "ssh"]).ok().contains("already disabled"));
    home.run(&["service", "enable", "ssh"]).ok();
    home.run(&["service", "remove", "ssh"]).ok();
    home.run(&["service", "remove", "web"]).ok();
    assert_eq!(home.read("config.yaml"), original, "removing everything restores the file");
}

#[test]
fn bad_service_input_is_refused_without_touching_the_config() {
    let home = Home::initialized();
    home.run(&["service", "add", "ssh", "localhost:22"]).ok();
    for (args, want) in [
        (vec!["service", "add", "Bad_Name", "localhost:22"], "invalid name \"Bad_Name\""),
        (vec!["service", "add", "web", "localhost"], "invalid service address \"localhost\""),
        (vec!["service", "add", "web", "localhost:99999"], "port must be"),
        (vec!["service", "add", "ssh", "localhost:2222"], "service already configured: ssh"),
        (vec!["service", "remove", "nope"], "service not found: nope"),
        (vec!["service", "enable", "nope"], "service not found: nope"),
    ] {
        let err = home.fails_leaving(&args, &["config.yaml"]);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn flags_after_positionals_are_honoured() {
    let home = Home::initialized();
    let cfg = home.file("config.yaml");
    let moved = home.path().join("moved.yaml");
    std::fs::rename(&cfg, &moved).unwrap();
    let key = home.file("identity.key");
    let text = std::fs::read_to_string(&moved)
        .unwrap()
        .replace("\"identity.key\"", &format!("\"{}\"", key.display()));
    std::fs::write(&moved, text).unwrap();
    home.run(&["service", "add", "ssh", "localhost:22", "--config", moved.to_str().unwrap()]).ok();
    assert!(std::fs::read_to_string(&moved).unwrap().contains("local_address: \"localhost:22\""));
}

#[test]
fn relay_add_list_remove() {
    let home = Home::initialized();
    let first = format!("/ip4/198.18.0.1/tcp/7777/p2p/{RELAY_ID}");
    let second = format!("/ip4/198.18.0.9/tcp/4001/p2p/{PEER_A}");
    home.run(&["relay", "add", "198.18.0.9:4001", "--peer-id", PEER_A]).ok();
    assert!(home.run(&["relay", "add", &second]).ok().contains("Already configured"));
    let list: serde_json::Value =
        serde_json::from_str(&home.run(&["relay", "list", "--json"]).ok()).unwrap();
    assert_eq!(list["addresses"], serde_json::json!([first, second]));
    let err = home.fails_leaving(&["relay", "add", "not-an-address"], &["config.yaml"]);
    assert!(err.contains("not an IP address"), "{err}");

    home.run(&["relay", "remove", &first]).ok();
    let err = home.fails_leaving(&["relay", "remove", &second], &["config.yaml"]);
    assert!(err.contains("cannot remove the last relay"), "{err}");
    home.run(&["relay", "remove", &second, "--force"]).ok();
    assert!(home.read("config.yaml").contains("  addresses: []\n"));
}
