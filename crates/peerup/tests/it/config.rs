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
