//! Config files: the YAML schemas, loading, validation, and comment-preserving edits.
//!
//! The core crate never sees YAML; commands load a file here and hand typed values to it.

pub mod archive;
pub mod edit;
pub mod load;
pub mod pending;
pub mod relay_schema;
pub mod relay_template;
pub mod schema;
pub mod template;
pub mod units;
pub mod validate;

pub use load::load_node;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use peerup_core::authorized_keys::AuthorizedKeys;

    use super::load::parse_yaml;
    use super::relay_schema::RelayConfig;
    use super::schema::NodeConfig;
    use super::validate::{validate_node, validate_relay};

    /// Every sample under `configs/` loads without unknown keys and validates.
    #[test]
    fn every_sample_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            match name.as_str() {
                "peerup.sample.yaml" => {
                    let (c, unknown) = parse_yaml::<NodeConfig>(&text).unwrap();
                    assert!(unknown.is_empty(), "{name}: {unknown:?}");
                    validate_node(&c).unwrap();
                    assert_eq!(c.services.len(), 2);
                }
                "relay-server.sample.yaml" => {
                    let (c, unknown) = parse_yaml::<RelayConfig>(&text).unwrap();
                    assert!(unknown.is_empty(), "{name}: {unknown:?}");
                    validate_relay(&c).unwrap();
                    assert_eq!(c, RelayConfig::default(), "the sample documents the defaults");
                }
                "authorized_keys.sample" => {
                    let keys = AuthorizedKeys::parse(&text);
                    assert!(keys.errors().is_empty(), "{:?}", keys.errors());
                    assert_eq!(keys.entries().count(), 3);
                }
                other => panic!("unexpected file in configs/: {other}"),
            }
            checked.push(name);
        }
        assert_eq!(checked.len(), 3, "{checked:?}");
    }
}
