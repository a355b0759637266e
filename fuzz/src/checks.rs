//! What every parser of hostile local input must do with any bytes: return, never panic; refuse
//! with a clear (non-empty) message; and give back, on re-encoding what it accepted, the same value.
//!
//! One function per parser, shared by three runners: the libFuzzer targets (`fuzz/fuzz_targets/`),
//! the proptests of the normal suite and the replay of the saved inputs
//! (`crates/peerup/tests/hostile_input.rs`, which includes this file by path). A check fails by
//! panicking, which is what libFuzzer and the test harness both report.

use std::path::Path;

use peerup::config::load::{node_from_text, parse_yaml, relay_from_text};
use peerup::config::pending::parse_marker;
use peerup::config::relay_schema::RelayConfig;
use peerup::config::schema::NodeConfig;
use peerup::config::validate::{validate_node, validate_relay};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::pairing::code::InviteCode;
use peerup_core::pairing::wire::Message;
use peerup_core::tunnel::bulk;
use peerup_core::{identity, relay_addr};

/// A check: panics if the parser misbehaves on `data`.
pub type Check = fn(&[u8]);

/// Every target: its name (the folder of its seeds and regressions) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("authorized_keys", authorized_keys),
    ("identity_key", identity_key),
    ("invite_code", invite_code),
    ("pairing_wire", pairing_wire),
    ("bulk_request", bulk_request),
    ("relay_addr", relay_addr),
    ("node_config", node_config),
    ("relay_config", relay_config),
    ("pending_marker", pending_marker),
];

/// An error must say something.
fn clear(what: &str, input: &[u8], message: String) {
    assert!(!message.trim().is_empty(), "{what}: empty error message for {input:?}");
}

/// `authorized_keys`: every bad line is reported with its number and a message; what parses renders
/// back to the same text, and every entry's canonical line parses back to the same entry.
pub fn authorized_keys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let keys = AuthorizedKeys::parse(&text);
    let lines = text.lines().count();
    for e in keys.errors() {
        assert!((1..=lines).contains(&e.line), "error on line {} of {lines}", e.line);
        clear("authorized_keys", data, e.to_string());
    }
    let rendered = keys.render();
    let again = AuthorizedKeys::parse(&rendered);
    assert_eq!(again.render(), rendered, "render is not stable");
    assert!(keys.entries().eq(again.entries()), "entries changed across a render");
    for e in keys.entries() {
        assert_eq!(Entry::parse(&e.to_string()), Ok(Some(e.clone())), "line {e}");
    }
}

/// `identity.key`: only a 68-byte protobuf Ed25519 key is accepted, and it re-encodes to the same
/// bytes.
pub fn identity_key(data: &[u8]) {
    match identity::decode(Path::new("identity.key"), data) {
        Err(e) => clear("identity_key", data, e.to_string()),
        Ok(key) => {
            let bytes = key.to_protobuf_encoding().expect("an Ed25519 key encodes");
            assert_eq!(bytes, data, "the key re-encodes differently");
        }
    }
}

/// Invite codes: a code that decodes re-encodes to a code that decodes to the same thing.
pub fn invite_code(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match InviteCode::decode(&text) {
        Err(e) => clear("invite_code", data, e.to_string()),
        Ok(code) => assert_eq!(InviteCode::decode(&code.encode()), Ok(code)),
    }
}

/// Pairing messages (rendezvous and PAKE): what decodes encodes back to the same bytes.
pub fn pairing_wire(data: &[u8]) {
    match Message::decode(data) {
        Err(e) => clear("pairing_wire", data, e.to_string()),
        Ok(m) => {
            assert_eq!(m.encode(), data, "{m:?} re-encodes differently");
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }
}

/// The bulk-path request: what decodes encodes back to the same bytes.
pub fn bulk_request(data: &[u8]) {
    match bulk::decode_request(data) {
        Err(e) => clear("bulk_request", data, e.to_string()),
        Ok(name) => assert_eq!(bulk::encode_request(&name).expect("a decoded name fits"), data),
    }
}

/// Relay addresses as typed (`--relay`, `relay add`): an accepted address parses again to itself.
pub fn relay_addr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match relay_addr::parse(&text, None) {
        Err(e) => clear("relay_addr", data, e.to_string()),
        Ok(addr) => {
            let again = relay_addr::parse(&addr.to_string(), None).expect("a parsed address");
            assert_eq!(again, addr);
        }
    }
}

/// The node config (`config.yaml`): the loader and the validator refuse with messages; an accepted
/// config written back as YAML reads back equal.
pub fn node_config(data: &[u8]) {
    // The loader reads the file as UTF-8 text and reports anything else as an I/O error.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match node_from_text(text, Path::new("/fuzz/config.yaml")) {
        Err(e) => clear("node_config", data, format!("{e:#}")),
        Ok(loaded) => {
            if let Err(problems) = validate_node(&loaded.config) {
                assert!(!problems.is_empty());
                problems.iter().for_each(|p| clear("node_config", data, p.to_string()));
            }
        }
    }
    if let Ok((config, _)) = parse_yaml::<NodeConfig>(text) {
        round_trip(&config);
    }
}

/// The relay server's config (`relay-server.yaml`), as [`node_config`].
pub fn relay_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match relay_from_text(text, Path::new("/fuzz/relay-server.yaml")) {
        Err(e) => clear("relay_config", data, format!("{e:#}")),
        Ok(loaded) => {
            if let Err(problems) = validate_relay(&loaded.config) {
                assert!(!problems.is_empty());
                problems.iter().for_each(|p| clear("relay_config", data, p.to_string()));
            }
        }
    }
    if let Ok((config, _)) = parse_yaml::<RelayConfig>(text) {
        round_trip(&config);
    }
}

/// Writes `config` as `peerup config show` does and reads it back: the same config, no unknown keys.
fn round_trip<T>(config: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    let yaml = serde_saphyr::to_string_with_options(config, options).expect("a config serializes");
    if !yaml.chars().all(yaml_printable) {
        // serde-saphyr 2.2 writes DEL and C1 control characters unescaped, and YAML does not allow
        // them raw: its own output then fails to read back (with a clear error, checked here).
        // Such a string can only come from an escape in a double-quoted scalar.
        let err = parse_yaml::<T>(&yaml).expect_err("raw control characters are refused");
        assert!(!format!("{err:#}").is_empty());
        return;
    }
    let (again, unknown) = parse_yaml::<T>(&yaml).expect("written YAML reads back");
    assert!(unknown.is_empty(), "{unknown:?}");
    assert_eq!(&again, config, "round trip through:\n{yaml}");
}

/// YAML 1.2's printable characters (`c-printable`), the only ones allowed unescaped.
pub fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}')
        || matches!(c, '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// The pending-apply marker (`.config.pending.json`), a JSON file the daemon reads at start.
pub fn pending_marker(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = parse_marker(&text) {
        clear("pending_marker", data, format!("{e:#}"));
    }
}
