//! Last-known-good archives of a config file, kept on every successful start of `peerup daemon`
//! (node config) or `peerup relay serve` (relay config), and `config rollback`.
//!
//! For a config `<dir>/<name><ext>` (e.g. `config.yaml`):
//! - `<dir>/.<name>.history/<UTC time>.<ext>`: the [`KEEP`] newest archives, named by when they
//!   were taken (`20261201T120000.123456789Z.yaml`, so names sort by time).
//! - `<dir>/.<name>.last-good<ext>`: a copy of the newest archive, the file Go peer-up reads and
//!   writes (a Go-era `.config.last-good.yaml` is taken into the history on the first archive).
//! - `<dir>/.<name>.before-rollback<ext>`: the config as it was before the last rollback.
//!
//! A start whose config is byte-for-byte the newest archive adds nothing, so restarts do not push
//! older configs out. Every file is written atomically with mode 0600; the folder is 0700.
//! Commit-confirmed changes ([`super::pending`]) are not archived until they are confirmed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use peerup_core::fsutil;

/// How many archives are kept.
pub const KEEP: usize = 5;

/// The sibling file `<dir>/.<name>.<tag><ext>` of a config file.
pub(crate) fn sibling(config: &Path, tag: &str, with_ext: bool) -> PathBuf {
    let dir = config.parent().unwrap_or(Path::new("."));
    let stem = config.file_stem().unwrap_or_default().to_string_lossy();
    let ext = match (with_ext, config.extension()) {
        (true, Some(e)) => format!(".{}", e.to_string_lossy()),
        _ => String::new(),
    };
    dir.join(format!(".{stem}.{tag}{ext}"))
}

/// The Go-compatible newest archive, `.<name>.last-good<ext>`.
pub fn last_good(config: &Path) -> PathBuf {
    sibling(config, "last-good", true)
}

/// The folder of timestamped archives, `.<name>.history/`.
pub fn history_dir(config: &Path) -> PathBuf {
    sibling(config, "history", false)
}

/// Where `rollback` keeps the config it replaced.
pub fn before_rollback(config: &Path) -> PathBuf {
    sibling(config, "before-rollback", true)
}

/// One archived config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// 1 = newest.
    pub n: usize,
    /// When it was archived.
    pub archived_at: Timestamp,
    /// The archive file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

fn file_name(at: Timestamp, config: &Path) -> String {
    let ext = config.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    format!("{}.{:09}Z{ext}", at.strftime("%Y%m%dT%H%M%S"), at.subsec_nanosecond())
}

fn parse_name(name: &str) -> Option<Timestamp> {
    let (secs, rest) = name.split_once('.')?;
    let nanos: i32 = rest.get(..9)?.parse().ok()?;
    let at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", secs).ok()?;
    let at = at.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Timestamp::new(at.as_second(), nanos).ok()
}

/// The archives of `config`, newest first (an empty list when there are none).
pub fn list(config: &Path) -> Result<Vec<Archive>> {
    let dir = history_dir(config);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temp files of an interrupted write, or anything else, are not archives.
        let Some(at) = parse_name(&name) else { continue };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        found.push(Archive { n: 0, archived_at: at, path: entry.path(), bytes });
    }
    found.sort_by_key(|a| std::cmp::Reverse(a.archived_at));
    for (i, a) in found.iter_mut().enumerate() {
        a.n = i + 1;
    }
    Ok(found)
}

fn add(config: &Path, contents: &[u8], at: Timestamp) -> Result<PathBuf> {
    let dir = history_dir(config);
    fsutil::create_private_dir(&dir)?;
    let path = dir.join(file_name(at, config));
    fsutil::write_private_atomic(&path, contents)?;
    Ok(path)
}

/// Archives `contents` (the config just started with) as the newest last-known-good config, and
/// drops archives beyond [`KEEP`]. Returns the new archive, or `None` when `contents` already is
/// the newest one.
pub fn archive(config: &Path, contents: &[u8]) -> Result<Option<PathBuf>> {
    let mut archives = list(config)?;
    let go_era = last_good(config);
    if archives.is_empty()
        && let Ok(old) = std::fs::read(&go_era)
        && old != contents
    {
        // A last-good file from Go peer-up (or an earlier peerup): keep it as the oldest archive.
        let at = std::fs::metadata(&go_era)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| Timestamp::try_from(t).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        add(config, &old, at)?;
        archives = list(config)?;
    }
    if let Some(newest) = archives.first()
        && std::fs::read(&newest.path).ok().as_deref() == Some(contents)
    {
        if std::fs::read(&go_era).ok().as_deref() != Some(contents) {
            fsutil::write_private_atomic(&go_era, contents)?;
        }
        return Ok(None);
    }
    let now = Timestamp::now();
    let at = match archives.first() {
        // Names must sort by time even if the clock stepped back.
        Some(newest) if newest.archived_at >= now => {
            newest.archived_at.checked_add(jiff::SignedDuration::from_nanos(1))?
        }
        _ => now,
    };
    let path = add(config, contents, at)?;
    fsutil::write_private_atomic(&go_era, contents)?;
    for old in list(config)?.iter().skip(KEEP) {
        std::fs::remove_file(&old.path)
            .with_context(|| format!("cannot remove old archive {}", old.path.display()))?;
    }
    Ok(Some(path))
}

/// Restores archive `n` (1 = newest) over `config`, byte for byte and atomically (mode 0600).
/// The replaced config is kept as [`before_rollback`].
pub fn rollback(config: &Path, n: usize) -> Result<Archive> {
    let archives = list(config)?;
    if archives.is_empty() {
        bail!(
            "no last-known-good archive for {} (one is made on every successful start)",
            config.display()
        );
    }
    let Some(chosen) = archives.get(n.wrapping_sub(1)).cloned() else {
        bail!("there is no archive {n}: {} has {} (1 = newest)", config.display(), archives.len());
    };
    let contents = std::fs::read(&chosen.path)
        .with_context(|| format!("cannot read archive {}", chosen.path.display()))?;
    // The config kept as before-rollback must be the one this rollback replaces.
    let _lock = fsutil::lock_exclusive(config)?;
    if let Ok(current) = std::fs::read(config) {
        fsutil::write_private_atomic(&before_rollback(config), &current)?;
    }
    fsutil::write_private_atomic(config, &contents)?;
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn sibling_names_follow_go() {
        let c = Path::new("/etc/peerup/config.yaml");
        assert_eq!(last_good(c), Path::new("/etc/peerup/.config.last-good.yaml"));
        assert_eq!(history_dir(c), Path::new("/etc/peerup/.config.history"));
        let r = Path::new("relay-server.yaml");
        assert_eq!(last_good(r), Path::new(".relay-server.last-good.yaml"));
    }

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let at = Timestamp::new(1_790_000_000, 123_456_789).unwrap();
        let name = file_name(at, Path::new("config.yaml"));
        assert_eq!(name, "20260921T141320.123456789Z.yaml");
        assert_eq!(parse_name(&name), Some(at));
        assert_eq!(parse_name(".peerup-abc.tmp"), None);
        assert_eq!(parse_name("garbage"), None);
    }

    #[test]
    fn keeps_the_five_newest_and_skips_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config.yaml");
        for i in 0..7 {
            let text = format!("version: 1 # {i}\n");
            assert!(archive(&c, text.as_bytes()).unwrap().is_some());
            assert!(archive(&c, text.as_bytes()).unwrap().is_none(), "same config again");
        }
        let all = list(&c).unwrap();
        assert_eq!(all.len(), KEEP);
        let newest: Vec<String> =
            all.iter().map(|a| std::fs::read_to_string(&a.path).unwrap()).collect();
        assert_eq!(newest[0], "version: 1 # 6\n");
        assert_eq!(newest[4], "version: 1 # 2\n", "the two oldest were dropped");
        assert!(all.windows(2).all(|w| w[0].archived_at > w[1].archived_at));
        assert_eq!(std::fs::read_to_string(last_good(&c)).unwrap(), newest[0]);
        assert_eq!(mode(&all[0].path), 0o600);
        assert_eq!(mode(&last_good(&c)), 0o600);
        assert_eq!(mode(&history_dir(&c)), 0o700);
    }

    #[test]
    fn rollback_restores_bytes_and_keeps_the_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config.yaml");
        let err = rollback(&c, 1).unwrap_err().to_string();
        assert!(err.contains("no last-known-good archive"), "{err}");
        archive(&c, b"a: 1\n").unwrap();
        archive(&c, b"b: 2\r\n# exact bytes\n").unwrap();
        std::fs::write(&c, "broken: [\n").unwrap();
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(rollback(&c, 1).unwrap().n, 1);
        assert_eq!(std::fs::read(&c).unwrap(), b"b: 2\r\n# exact bytes\n");
        assert_eq!(mode(&c), 0o600);
        assert_eq!(std::fs::read(before_rollback(&c)).unwrap(), b"broken: [\n");
        rollback(&c, 2).unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), b"a: 1\n");
        let err = rollback(&c, 3).unwrap_err().to_string();
        assert!(err.contains("no archive 3") && err.contains("has 2"), "{err}");
        assert!(rollback(&c, 0).is_err());
    }

    #[test]
    fn a_go_era_last_good_becomes_the_oldest_archive() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config.yaml");
        std::fs::write(last_good(&c), "from: go\n").unwrap();
        archive(&c, b"new: 1\n").unwrap();
        let all = list(&c).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(std::fs::read(&all[1].path).unwrap(), b"from: go\n");
        assert_eq!(std::fs::read(last_good(&c)).unwrap(), b"new: 1\n");
    }
}
