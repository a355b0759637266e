//! Proptests of the config loader: YAML near the valid shape (every key, values of every kind,
//! nulls, wrong types) is accepted or refused with a message naming the problem, and generated
//! configs written as YAML, and as JSON (which YAML includes), read back equal. Generated strings
//! leave out control characters, which serde-saphyr writes unescaped (see `checks::round_trip`).

use std::collections::BTreeMap;

use peerup::config::load::parse_yaml;
use peerup::config::relay_schema::RelayConfig;
use peerup::config::schema::{NodeConfig, ServiceEntry};
use proptest::prelude::*;

use crate::checks;

/// A YAML scalar or small collection, valid or not for whatever key it lands on.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        "[a-z0-9:/.\\[\\]]{0,20}",
        "[ -~]{0,30}",
    ]
}

/// A node or relay config, key by key from the known sections, with values from [`value`].
fn yaml() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("version"),
        Just("identity.key_file"),
        Just("network.listen_addresses"),
        Just("network.enable_upnp"),
        Just("relay.addresses"),
        Just("relay.reservation_interval"),
        Just("security.authorized_keys_file"),
        Just("security.enable_connection_gating"),
        Just("services.ssh.local_address"),
        Just("services.ssh.allowed_peers"),
        Just("services.web.enabled"),
        Just("names.laptop"),
        Just("telemetry.metrics.listen_address"),
        Just("resources.max_reservations"),
        Just("resources.session_duration"),
        Just("resources.session_data_limit"),
        Just("health.enabled"),
        Just("unknown.key"),
    ];
    proptest::collection::vec((key, value()), 0..8).prop_map(|pairs| {
        let mut out = String::new();
        for (key, value) in pairs {
            let parts: Vec<&str> = key.split('.').collect();
            for (depth, part) in parts.iter().enumerate() {
                out.push_str(&"  ".repeat(depth));
                out.push_str(part);
                out.push(':');
                if depth + 1 == parts.len() {
                    out.push(' ');
                    out.push_str(&value);
                }
                out.push('\n');
            }
        }
        out
    })
}

fn services() -> impl Strategy<Value = BTreeMap<String, ServiceEntry>> {
    let entry = (
        any::<bool>(),
        "\\PC{0,24}",
        proptest::option::of("[ -~]{0,12}"),
        proptest::option::of(proptest::collection::vec("\\PC{0,12}", 0..3)),
    )
        .prop_map(|(enabled, local_address, protocol, allowed_peers)| ServiceEntry {
            enabled,
            local_address,
            protocol,
            allowed_peers,
        });
    proptest::collection::btree_map("[a-z][a-z0-9-]{0,10}", entry, 0..4)
}

fn node_configs() -> impl Strategy<Value = NodeConfig> {
    (
        services(),
        proptest::collection::btree_map("\\PC{1,12}", "\\PC{0,20}", 0..3),
        proptest::collection::vec("\\PC{0,30}", 0..3),
        "\\PC{0,12}",
        any::<(bool, bool, u32)>(),
    )
        .prop_map(|(services, names, relays, interval, (upnp, gating, version))| {
            let mut c = NodeConfig { services, names, version, ..NodeConfig::default() };
            c.relay.addresses = relays;
            c.relay.reservation_interval = interval;
            c.network.enable_upnp = upnp;
            c.security.enable_connection_gating = gating;
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn configs_near_the_schema_load_or_fail_with_a_message(text in yaml()) {
        checks::node_config(text.as_bytes());
        checks::relay_config(text.as_bytes());
    }

    #[test]
    fn generated_node_configs_round_trip_as_yaml_and_json(c in node_configs()) {
        let yaml = serde_saphyr::to_string(&c).unwrap();
        prop_assert_eq!(&parse_yaml::<NodeConfig>(&yaml).unwrap().0, &c, "{}", yaml);
        let json = serde_json::to_string_pretty(&c).unwrap();
        prop_assert_eq!(&parse_yaml::<NodeConfig>(&json).unwrap().0, &c, "{}", json);
        checks::node_config(yaml.as_bytes());
    }

    #[test]
    fn generated_relay_configs_round_trip(
        limits: (u32, u32),
        gating: bool,
        listen in proptest::collection::vec("\\PC{0,30}", 0..3),
        durations in ("\\PC{0,10}", "\\PC{0,10}", "\\PC{0,10}"),
    ) {
        let mut c = RelayConfig::default();
        c.network.listen_addresses = listen;
        c.security.enable_connection_gating = gating;
        c.resources.max_reservations = limits.0;
        c.resources.max_circuits = limits.1;
        c.resources.reservation_ttl = durations.0;
        c.resources.session_duration = durations.1;
        c.resources.session_data_limit = durations.2;
        let yaml = serde_saphyr::to_string(&c).unwrap();
        prop_assert_eq!(&parse_yaml::<RelayConfig>(&yaml).unwrap().0, &c, "{}", yaml);
        checks::relay_config(yaml.as_bytes());
    }
}
