//! Finding and loading config files: search order, the 0600 check, YAML parsing with warnings for
//! unknown keys, the version check, and resolving relative paths against the config's folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

use super::relay_schema::RelayConfig;
use super::schema::{CONFIG_VERSION, NodeConfig};

/// The node config file name inside a config folder.
pub const NODE_CONFIG_FILE: &str = "config.yaml";
/// The relay config file name.
pub const RELAY_CONFIG_FILE: &str = "relay-server.yaml";

/// A config file read from disk.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The parsed config, with relative paths resolved against `dir`.
    pub config: T,
    /// The file it came from.
    pub path: PathBuf,
    /// Keys present in the file that this version does not know (ignored).
    pub unknown_keys: Vec<String>,
}

impl<T> Loaded<T> {
    /// The folder holding the config file.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// The default config folder, `~/.config/peerup`.
pub fn default_config_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set; pass --config <path>")?;
    Ok(PathBuf::from(home).join(".config").join("peerup"))
}

/// Where the node config is looked for, in order, when `--config` is not given.
pub fn node_search_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("peerup.yaml")];
    if let Ok(dir) = default_config_dir() {
        paths.push(dir.join(NODE_CONFIG_FILE));
    }
    paths.push(PathBuf::from("/etc/peerup").join(NODE_CONFIG_FILE));
    paths
}

/// Finds the node config: `--config`, then `./peerup.yaml`, `~/.config/peerup/config.yaml` and
/// `/etc/peerup/config.yaml`.
pub fn find_node_config(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.exists() {
            bail!("config file not found: {}", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let searched = node_search_paths();
    if let Some(found) = searched.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let list = searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    bail!(
        "no config file found (searched {list}); run 'peerup init' to create one, or use --config <path>"
    )
}

/// Finds and loads the node config.
pub fn load_node(explicit: Option<&Path>) -> Result<Loaded<NodeConfig>> {
    let path = find_node_config(explicit)?;
    load_node_file(&path)
}

/// Loads a node config file.
pub fn load_node_file(path: &Path) -> Result<Loaded<NodeConfig>> {
    resolve_node(load_file::<NodeConfig>(path, |c| c.version, true)?)
}

/// Loads the node config even if others may read it (`peerup doctor` reports that instead).
pub fn load_node_unchecked(explicit: Option<&Path>) -> Result<Loaded<NodeConfig>> {
    resolve_node(load_file::<NodeConfig>(&find_node_config(explicit)?, |c| c.version, false)?)
}

/// Parses node config text as if it were the file `path` (its relative paths resolve against
/// `path`'s folder); the file itself is not read.
pub fn node_from_text(text: &str, path: &Path) -> Result<Loaded<NodeConfig>> {
    resolve_node(from_text::<NodeConfig>(text, path, |c| c.version)?)
}

fn resolve_node(mut loaded: Loaded<NodeConfig>) -> Result<Loaded<NodeConfig>> {
    let dir = loaded.dir().to_path_buf();
    let c = &mut loaded.config;
    c.identity.key_file = resolve(&dir, &c.identity.key_file);
    c.security.authorized_keys_file = resolve(&dir, &c.security.authorized_keys_file);
    Ok(loaded)
}

/// Loads a relay config file. Its paths resolve against its own folder too (the Go original used
/// the working directory, which broke when run from anywhere else).
pub fn load_relay_file(path: &Path) -> Result<Loaded<RelayConfig>> {
    resolve_relay(load_file::<RelayConfig>(path, |c| c.version, true)?)
}

/// Parses relay config text as if it were the file `path` (see [`node_from_text`]).
pub fn relay_from_text(text: &str, path: &Path) -> Result<Loaded<RelayConfig>> {
    resolve_relay(from_text::<RelayConfig>(text, path, |c| c.version)?)
}

fn resolve_relay(mut loaded: Loaded<RelayConfig>) -> Result<Loaded<RelayConfig>> {
    let dir = loaded.dir().to_path_buf();
    let c = &mut loaded.config;
    c.identity.key_file = resolve(&dir, &c.identity.key_file);
    c.security.authorized_keys_file = resolve(&dir, &c.security.authorized_keys_file);
    Ok(loaded)
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.as_os_str().is_empty() || p.is_absolute() { p.to_path_buf() } else { dir.join(p) }
}

fn load_file<T: DeserializeOwned + Default>(
    path: &Path,
    version: impl Fn(&T) -> u32,
    check_mode: bool,
) -> Result<Loaded<T>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    if check_mode {
        peerup_core::fsutil::check_private(path)?;
    }
    from_text(&text, path, version)
}

fn from_text<T: DeserializeOwned + Default>(
    text: &str,
    path: &Path,
    version: impl Fn(&T) -> u32,
) -> Result<Loaded<T>> {
    let (config, unknown_keys) =
        parse_yaml::<T>(text).with_context(|| format!("invalid config {}", path.display()))?;
    let v = version(&config);
    if v > CONFIG_VERSION {
        bail!(
            "config {} has version {v}, newer than this peerup supports ({CONFIG_VERSION}); please upgrade peerup",
            path.display()
        );
    }
    for key in &unknown_keys {
        tracing::warn!(config = %path.display(), key = %key, "unknown config key ignored");
    }
    Ok(Loaded { config, path: path.to_path_buf(), unknown_keys })
}

/// Parses YAML into `T`, returning the dotted paths of keys `T` does not know. Type errors name the
/// key and show the bad value.
pub fn parse_yaml<T: DeserializeOwned + Default>(text: &str) -> Result<(T, Vec<String>)> {
    if is_blank_yaml(text) {
        return Ok((T::default(), Vec::new()));
    }
    let mut unknown = Vec::new();
    // A type error stops deserialization half-way; the parser then complains about the unread rest,
    // so the first error is kept here and reported instead.
    let mut type_error = None;
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        // serde_ignored writes `?` for the Option layer of sections that may be null; drop it.
        let mut record =
            |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
        let ignoring = serde_ignored::Deserializer::new(de, &mut record);
        match serde_path_to_error::deserialize::<_, T>(ignoring) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let path = e.path().clone();
                type_error = Some((path, e.into_inner().to_string()));
                Ok(None)
            }
        }
    });
    if let Some((path, msg)) = type_error {
        match value_at(text, &path) {
            Some(v) => bail!("{path}: {v} is not valid here: {msg}"),
            None => bail!("{path}: {msg}"),
        }
    }
    let value = match parsed {
        Ok(Some(v)) => v,
        Ok(None) => bail!("invalid YAML"),
        Err(e) => bail!("{e}"),
    };
    Ok((value, unknown))
}

/// The value written at `path`, rendered compactly, to show next to a type error.
fn value_at(text: &str, path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut v: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    for seg in path.iter() {
        v = match seg {
            Segment::Map { key } => v.get_mut(key.as_str())?.take(),
            Segment::Seq { index } => v.get_mut(*index)?.take(),
            _ => return None,
        };
    }
    Some(v.to_string())
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with('#') || l == "---")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unknown_keys_warn_but_load() {
        let (c, unknown) = parse_yaml::<NodeConfig>(
            "version: 1\nfuture_thing: 3\nnetwork:\n  listen_addresses: []\n  shiny: true\n",
        )
        .unwrap();
        assert!(c.network.listen_addresses.is_empty());
        assert_eq!(unknown, vec!["future_thing".to_string(), "network.shiny".to_string()]);
    }

    #[test]
    fn type_errors_name_the_key_and_value() {
        let err = parse_yaml::<NodeConfig>("security:\n  enable_connection_gating: maybe\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.enable_connection_gating"), "{err}");
        assert!(err.contains("maybe"), "{err}");
        let err = parse_yaml::<NodeConfig>("relay: [oops\n").unwrap_err().to_string();
        assert!(!err.is_empty());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let (c, _) = parse_yaml::<NodeConfig>("# nothing\n").unwrap();
        assert_eq!(c, NodeConfig::default());
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "identity:\n  key_file: keys/id.key\nsecurity:\n  authorized_keys_file: /abs/ak\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = load_node_file(&p).unwrap();
        assert_eq!(l.config.identity.key_file, dir.path().join("keys/id.key"));
        assert_eq!(l.config.security.authorized_keys_file, PathBuf::from("/abs/ak"));
    }

    #[test]
    fn newer_version_and_open_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "version: 2\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = format!("{:#}", load_node_file(&p).unwrap_err());
        assert!(err.contains("version 2") && err.contains("upgrade"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", load_node_file(&p).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
    }
}
