//! Replays every saved fuzz input: the seeds each target starts from (`fuzz/seeds/<target>/`) and
//! every input that once crashed a target (`fuzz/regressions/<target>/`), so a fixed bug stays fixed
//! in the normal suite.

use std::path::{Path, PathBuf};

use crate::checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_saved_fuzz_input_passes_its_check() {
    let mut replayed = 0;
    for (name, check) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {name}");
        for file in seeds.iter().chain(&files(&fuzz_dir().join("regressions").join(name))) {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{name}: {} fails its check", file.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "{replayed}");
}

/// Every fuzz target binary has its check listed, and the other way round.
#[test]
fn every_fuzz_target_is_listed() {
    let mut bins: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    bins.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(bins, listed);
}
