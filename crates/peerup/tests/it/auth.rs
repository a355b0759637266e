//! `peerup auth …` against a real authorized_keys file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{Home, PEER_A, PEER_B};

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn add_list_remove_round_trip_keeps_comments() {
    let home = Home::initialized();
    let out = home.run(&["auth", "add", PEER_A, "--comment", "laptop"]).ok();
    assert!(out.contains("Authorized peer: 12D3KooWPrmh163s..."), "{out}");
    home.run(&["auth", "add", PEER_B]).ok();
    let text = home.read("authorized_keys");
    assert!(text.starts_with("# authorized_keys"), "header kept: {text}");
    assert!(text.contains(&format!("{PEER_A}  # laptop\n")), "{text}");
    assert_eq!(home.mode("authorized_keys"), 0o600);

    let list: serde_json::Value =
        serde_json::from_str(&home.run(&["auth", "list", "--json"]).ok()).unwrap();
    let ids: Vec<&str> =
        list.as_array().unwrap().iter().map(|p| p["peer_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [PEER_A, PEER_B]);
    assert_eq!(list[0]["comment"], "laptop");

    home.run(&["auth", "remove", PEER_A]).ok();
    let text = home.read("authorized_keys");
    assert!(
        !text.contains(PEER_A) && text.contains(PEER_B) && text.starts_with("# authorized_keys")
    );
    let err = home.fails_leaving(&["auth", "remove", PEER_A], &["authorized_keys"]);
    assert!(err.contains("peer not found"), "{err}");
}

#[test]
fn garbage_and_duplicate_peers_are_refused_without_touching_the_file() {
    let home = Home::initialized();
    home.run(&["auth", "add", PEER_A]).ok();
    let err = home.fails_leaving(&["auth", "add", "not-a-peer"], &["authorized_keys"]);
    assert!(err.contains("invalid peer ID \"not-a-peer\""), "{err}");
    let err =
        home.fails_leaving(&["auth", "add", PEER_A, "--comment", "again"], &["authorized_keys"]);
    assert!(err.contains("peer already authorized"), "{err}");
    let err =
        home.fails_leaving(&["auth", "add", PEER_B, "--expires", "someday"], &["authorized_keys"]);
    assert!(err.contains("--expires"), "{err}");
}

#[test]
fn expiry_is_recorded_and_shown() {
    let home = Home::initialized();
    home.run(&["auth", "add", PEER_A, "--expires", "2000-01-01T00:00:00Z"]).ok();
    home.run(&["auth", "add", PEER_B, "--expires", "30d"]).ok();
    assert!(
        home.read("authorized_keys").contains(&format!("{PEER_A}  expires=2000-01-01T00:00:00Z\n"))
    );
    let list: serde_json::Value =
        serde_json::from_str(&home.run(&["auth", "list", "--json"]).ok()).unwrap();
    assert_eq!(list[0]["expired"], true);
    assert_eq!(list[1]["expired"], false);
    assert!(home.run(&["auth", "list"]).ok().contains("[EXPIRED]"));
}

#[test]
fn validate_accepts_attributes_and_reports_bad_lines() {
    let home = Home::initialized();
    let good = home.path().join("good_keys");
    write_private(
        &good,
        &format!(
            "# c\n{PEER_A}  verified=sha256:63dcdd01  group=0a1b2c3d  future=x  # home\n{PEER_B} expires=2099-01-01T00:00:00Z\n"
        ),
    );
    let out = home.run(&["auth", "validate", good.to_str().unwrap()]).ok();
    assert!(out.contains("2 valid entries"), "{out}");

    let bad = home.path().join("bad_keys");
    write_private(&bad, &format!("{PEER_A}\nnot-a-peer\n{PEER_B} expires=tomorrow\n"));
    let run = home.run(&["auth", "validate", "--file", bad.to_str().unwrap()]);
    assert!(run.stdout.contains("Line 2: invalid peer ID"), "{}", run.stdout);
    assert!(run.stdout.contains("Line 3: invalid expires="), "{}", run.stdout);
    let err = run.fails();
    assert!(err.contains("2 invalid line(s)"), "{err}");
}

#[test]
fn file_flag_works_without_a_config() {
    let home = Home::new();
    let f = home.path().join("ak");
    home.run(&["auth", "add", PEER_A, "--file", f.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("{PEER_A}\n"));
}
