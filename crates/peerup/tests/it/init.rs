//! `peerup init`, `whoami`, `status`, `version` and the global conventions (exit codes, streams).

use crate::util::{Home, RELAY_ID};

#[test]
fn init_non_interactive_writes_private_files_and_prints_id_and_qr() {
    let home = Home::new();
    let out = home
        .run(&[
            "init",
            "--non-interactive",
            "--relay",
            "198.18.0.1:4001",
            "--relay-peer-id",
            RELAY_ID,
            "--network",
            "lab",
        ])
        .ok();
    for f in ["config.yaml", "identity.key", "authorized_keys"] {
        assert_eq!(home.mode(f), 0o600, "{f}");
    }
    assert_eq!(std::fs::read(home.file("identity.key")).unwrap().len(), 68);
    let config = home.read("config.yaml");
    assert!(config.contains(&format!("\"/ip4/198.18.0.1/tcp/4001/p2p/{RELAY_ID}\"")), "{config}");
    assert!(config.contains("network: \"lab\""));

    let id = home.run(&["whoami"]).ok().trim().to_string();
    assert!(id.starts_with("12D3KooW"), "{id}");
    assert!(out.contains(&id), "init prints the peer ID");
    assert!(out.contains('█'), "init prints a QR code");
    let json: serde_json::Value =
        serde_json::from_str(&home.run(&["whoami", "--json"]).ok()).unwrap();
    assert_eq!(json["peer_id"], id.as_str());
    assert!(!out.contains('\x1b'), "NO_COLOR is respected");
}

#[test]
fn init_interactive_reads_answers_from_stdin() {
    let home = Home::new();
    let dir = home.path().join("node");
    let out = home
        .run_with_stdin(
            &["init", "--dir", dir.to_str().unwrap()],
            &format!("[2001:db8::7]:9000\n{RELAY_ID}\n"),
        )
        .ok();
    assert!(out.contains("peerup initialized"));
    let config = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    assert!(config.contains(&format!("/ip6/2001:db8::7/tcp/9000/p2p/{RELAY_ID}")), "{config}");
}

#[test]
fn init_refuses_to_overwrite_and_rejects_bad_relays_without_writing() {
    let home = Home::initialized();
    let err = home.fails_leaving(
        &["init", "--non-interactive", "--relay", "1.2.3.4", "--relay-peer-id", RELAY_ID],
        &["config.yaml", "identity.key", "authorized_keys"],
    );
    assert!(err.contains("config already exists"), "{err}");

    let fresh = Home::new();
    for (args, want) in [
        (vec!["init", "--non-interactive"], "--relay is required"),
        (vec!["init", "--non-interactive", "--relay", "1.2.3.4"], "--relay-peer-id"),
        (
            vec![
                "init",
                "--non-interactive",
                "--relay",
                "relay.example.com",
                "--relay-peer-id",
                RELAY_ID,
            ],
            "not an IP",
        ),
        (
            vec!["init", "--non-interactive", "--relay", "1.2.3.4", "--relay-peer-id", "nope"],
            "invalid relay peer ID",
        ),
        (
            vec![
                "init",
                "--non-interactive",
                "--relay",
                "/ip4/1.2.3.4/tcp/1",
                "--relay-peer-id",
                RELAY_ID,
                "--network",
                "Bad_NS",
            ],
            "invalid name",
        ),
    ] {
        let err = fresh.run(&args).fails();
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!fresh.config_dir().exists(), "{args:?} created files");
    }
}

#[test]
fn status_reports_the_node_offline() {
    let home = Home::initialized();
    let text = home.run(&["status"]).ok();
    assert!(text.contains("Network:  global (default)"), "{text}");
    assert!(text.contains(RELAY_ID));
    let json: serde_json::Value =
        serde_json::from_str(&home.run(&["status", "--json"]).ok()).unwrap();
    assert_eq!(json["relays"].as_array().unwrap().len(), 1);
    assert_eq!(json["authorized_peers"].as_array().unwrap().len(), 0);
    assert_eq!(json["peer_id"], home.run(&["whoami"]).ok().trim());
}

#[test]
fn a_corrupt_key_file_gets_one_clear_line_and_is_kept() {
    let home = Home::initialized();
    let mut key = std::fs::read(home.file("identity.key")).unwrap();
    key.pop();
    std::fs::write(home.file("identity.key"), &key).unwrap();
    let err = home.fails_leaving(&["whoami"], &["identity.key"]);
    assert!(err.contains("67 bytes") && err.contains("expected 68"), "{err}");
}

#[test]
fn exit_codes_and_streams() {
    let home = Home::new();
    let usage = home.run(&["no-such-command"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(usage.stdout.is_empty());
    assert_eq!(home.run(&["auth", "add"]).code, 2, "missing positional is a usage error");
    let help = home.run(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("init"));
    let missing = home.run(&["whoami"]).fails();
    assert!(missing.contains("peerup init"), "{missing}");
    let v = home.run(&["version", "--json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
}
