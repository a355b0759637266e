//! Config discovery, validation and the refusal of broken or exposed files.

use std::os::unix::fs::PermissionsExt;

use crate::util::Home;

#[test]
fn malformed_yaml_is_one_line_and_left_alone() {
    let home = Home::initialized();
    let path = home.file("config.yaml");
    std::fs::write(&path, "relay:\n  addresses: [oops\n").unwrap();
    let err = home.fails_leaving(&["status"], &["config.yaml"]);
    assert!(err.contains("invalid config") && err.contains("config.yaml"), "{err}");
    std::fs::write(&path, "security:\n  enable_connection_gating: maybe\n").unwrap();
    let err = home.fails_leaving(&["service", "list"], &["config.yaml"]);
    assert!(err.contains("security.enable_connection_gating") && err.contains("maybe"), "{err}");
}

#[test]
fn exposed_config_is_refused_with_the_fix() {
    let home = Home::initialized();
    let path = home.file("config.yaml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = home.run(&["status"]).fails();
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
}

#[test]
fn search_order_prefers_flag_then_working_dir() {
    let home = Home::initialized();
    let local = home.path().join("peerup.yaml");
    let mut text = home.read("config.yaml").replace("identity.key", ".config/peerup/identity.key");
    text = text.replace("\"authorized_keys\"", "\"elsewhere_keys\"");
    std::fs::write(&local, &text).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&home.run(&["status", "--json"]).ok()).unwrap();
    assert_eq!(json["config"], "peerup.yaml", "./peerup.yaml wins over ~/.config");
    let explicit = home.file("config.yaml");
    let json: serde_json::Value = serde_json::from_str(
        &home.run(&["status", "--json", "--config", explicit.to_str().unwrap()]).ok(),
    )
    .unwrap();
    assert_eq!(json["config"], explicit.to_str().unwrap());
    let err = home.run(&["status", "--config", "/nonexistent.yaml"]).fails();
    assert!(err.contains("config file not found: /nonexistent.yaml"), "{err}");
}

#[test]
fn validate_names_key_and_value_and_unknown_keys_only_warn() {
    let home = Home::initialized();
    let ok = home.run(&["config", "validate"]).ok();
    assert!(ok.contains("is valid"), "{ok}");

    let path = home.file("config.yaml");
    let text = home.read("config.yaml").replace("\"2m\"", "\"soon\"") + "future_feature: true\n";
    std::fs::write(&path, text).unwrap();
    let run = home.run(&["config", "validate"]);
    assert!(run.stdout.contains("note: unknown key future_feature is ignored"), "{}", run.stdout);
    assert!(run.stdout.contains("FAIL: relay.reservation_interval: \"soon\""), "{}", run.stdout);
    let status = home.run(&["status"]);
    assert_eq!(status.code, 0, "unknown keys do not stop other commands: {}", status.stderr);
    assert!(status.stderr.contains("unknown config key ignored"), "{}", status.stderr);
    assert!(status.stderr.contains("future_feature"), "{}", status.stderr);
}

#[test]
fn show_prints_resolved_yaml() {
    let home = Home::initialized();
    let out = home.run(&["config", "show"]).ok();
    assert!(out.starts_with("# Resolved config from "), "{out}");
    let key = home.file("identity.key");
    assert!(out.contains(&format!("key_file: {}", key.display())), "{out}");
}

#[test]
fn relay_config_validate() {
    let home = Home::new();
    let path = home.path().join("relay-server.yaml");
    std::fs::write(&path, "resources:\n  session_data_limit: lots\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = home.run(&["relay", "config", "validate"]);
    assert!(run.stdout.contains("FAIL: resources.session_data_limit: \"lots\""), "{}", run.stdout);
    run.fails();
    std::fs::write(&path, "version: 1\n").unwrap();
    assert!(home.run(&["relay", "config", "validate"]).ok().contains("is valid"));
}

/// A config that Go peer-up accepts starts the daemon: a fractional duration, a metrics address
/// with a host name, and bad `names:`/`allowed_peers` entries, which are warnings naming their
/// line (as Go logs and skips them) in `config validate` and at the daemon's start.
#[test]
fn go_valid_config_starts_the_daemon_and_warns_about_bad_entries() {
    let home = Home::initialized();
    let path = home.file("config.yaml");
    let text = home
        .read("config.yaml")
        .replace("reservation_interval: \"2m\"", "reservation_interval: \"1.5m\"")
        .replace(
            "services: {}",
            "services:\n  ssh:\n    local_address: \"localhost:22\"\n    allowed_peers: [\"not-a-peer\"]",
        )
        .replace("names: {}", "names:\n  home: \"not-an-id\"")
        + "telemetry:\n  metrics:\n    enabled: true\n    listen_address: \"localhost:0\"\n";
    std::fs::write(&path, &text).unwrap();
    let line_of = |v: &str| text.lines().position(|l| l.contains(v)).unwrap() + 1;
    let names_warning = format!("line {}: names.home: \"not-an-id\"", line_of("not-an-id"));
    let acl_warning =
        format!("line {}: services.ssh.allowed_peers[0]: \"not-a-peer\"", line_of("not-a-peer"));

    let out = home.run(&["config", "validate"]).ok();
    assert!(out.contains("is valid"), "{out}");
    assert!(out.contains(&format!("warning: {names_warning}")), "{out}");
    assert!(out.contains(&format!("warning: {acl_warning}")), "{out}");

    let mut daemon = crate::daemon_api::Daemon::spawn(&home, &["daemon"], &[], "Metrics: http://");
    daemon.wait_line("API: ");
    home.run(&["daemon", "stop"]).ok();
    let (code, _, stderr) = daemon.finish_split();
    assert_eq!(code, 0, "{stderr:?}");
    for w in [&names_warning, &acl_warning] {
        assert!(stderr.iter().any(|l| l.contains(w.as_str())), "{w} not in {stderr:#?}");
    }
}

/// A Go relay config with `resources.*` at 0 (Go's "the default") is valid and serves; the two
/// Go keys peerup cannot apply are named with the reason, by `relay config validate` and at start.
#[test]
fn relay_resources_at_zero_mean_the_defaults() {
    let home = Home::new();
    let cfg = crate::util::loopback_relay_config(&home, true);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for (from, to) in [
        ("max_reservations: 128", "max_reservations: 0"),
        ("max_circuits: 16", "max_circuits: 0\n  buffer_size: 0\n  max_reservations_per_asn: 0"),
        ("max_reservations_per_ip: 8", "max_reservations_per_ip: 0"),
        ("reservation_ttl: \"1h\"", "reservation_ttl: \"0s\""),
    ] {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = home.run(&["relay", "config", "validate", "--config", cfg]).ok();
    assert!(out.contains("is valid"), "{out}");
    for key in ["resources.buffer_size", "resources.max_reservations_per_asn"] {
        assert!(out.contains(&format!("warning: {key}: \"0\": not ")), "{out}");
    }
    let mut relay = crate::daemon_api::Daemon::spawn(
        &home,
        &["relay", "serve", "--config", cfg],
        &[],
        "Relay ready:",
    );
    let line = relay.wait_err("the buffer_size warning", |l| l.contains("resources.buffer_size"));
    assert!(line.contains("WARN") && line.contains("not applied"), "{line}");
}

/// `telemetry.audit.enabled` writes the audit events (here: an authorization added through the
/// API) at the default log level; without it they stay hidden, as in Go.
#[test]
fn audit_enabled_writes_audit_events() {
    let peer = "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt";
    for enabled in [false, true] {
        let home = Home::initialized();
        let path = home.file("config.yaml");
        let text =
            home.read("config.yaml") + &format!("telemetry:\n  audit:\n    enabled: {enabled}\n");
        std::fs::write(&path, text).unwrap();
        let daemon = crate::daemon_api::Daemon::start(&home);
        let cookie = home.read(".daemon-cookie");
        let add = format!(r#"{{"peer_id":"{peer}"}}"#);
        let (code, _) = crate::daemon_api::call(&home, Some(&cookie), "POST", "/v1/auth", &add);
        assert_eq!(code, 200);
        home.run(&["daemon", "stop"]).ok();
        let (_, _, stderr) = daemon.finish_split();
        let logged = stderr.iter().any(|l| l.contains("auth_change: added") && l.contains(peer));
        assert_eq!(logged, enabled, "audit.enabled={enabled}: {stderr:#?}");
    }
}
