//! File safety: a `peerup` writer SIGKILLed at any instant leaves `config.yaml` and
//! `authorized_keys` whole (the old version or the new, mode 0600), and the temp files of killed
//! writers never pile up; and concurrent writers never lose each other's change.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerup_core::PeerId;
use peerup_core::authorized_keys::AuthorizedKeys;

use crate::util::{Home, PEER_A, PEER_B};

/// Kills to deliver; the loop also stops at [`BUDGET`] and then needs at least [`MIN_KILLS`].
const KILLS: usize = 200;
const MIN_KILLS: usize = 100;
const BUDGET: Duration = Duration::from_secs(30);
/// Peers in the authorized_keys file, so that each write is large enough (about 100 KiB) for kills
/// to land inside it.
const PEERS: usize = 1500;

/// One file and the two commands that flip it between two complete versions.
struct Target {
    file: &'static str,
    add: Vec<String>,
    remove: Vec<String>,
    /// Whole versions: without and with the change.
    versions: [Vec<u8>; 2],
    /// How long one uninterrupted command takes, the range of the random kill delay.
    run_time: Duration,
}

#[test]
fn sigkill_mid_write_leaves_config_and_authorized_keys_whole() {
    let home = Home::initialized();
    let mut keys = String::from("# many peers\n");
    for i in 0..PEERS {
        keys.push_str(&format!("{}  # peer number {i} with a comment\n", PeerId::random()));
    }
    std::fs::write(home.file("authorized_keys"), &keys).unwrap();
    let targets = [
        target(
            &home,
            "authorized_keys",
            &["auth", "add", PEER_A, "--comment", "kill test"],
            &["auth", "remove", PEER_A],
        ),
        target(
            &home,
            "config.yaml",
            &["relay", "add", "198.18.0.9:4001", "--peer-id", PEER_B],
            &["relay", "remove", &format!("/ip4/198.18.0.9/tcp/4001/p2p/{PEER_B}")],
        ),
    ];

    let seed = seed();
    let mut rng = Rng(seed);
    let start = Instant::now();
    let (mut kills, mut mid_run, mut temps_left) = (0, 0, 0);
    while kills < KILLS && start.elapsed() < BUDGET {
        let t = &targets[kills % 2];
        let now = std::fs::read(home.file(t.file)).unwrap();
        let args = if now == t.versions[0] { &t.add } else { &t.remove };
        let mut child = spawn(&home, args);
        let delay = t.run_time.mul_f64(1.2 * rng.unit());
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;

        for t in &targets {
            let bytes = std::fs::read(home.file(t.file)).unwrap();
            assert!(
                t.versions.contains(&bytes),
                "{} is torn after kill {kills} (seed {seed}, delay {delay:?}):\n{}",
                t.file,
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(home.mode(t.file), 0o600, "{}", t.file);
        }
        let keys = String::from_utf8(std::fs::read(home.file("authorized_keys")).unwrap()).unwrap();
        assert!(AuthorizedKeys::parse(&keys).errors().is_empty());
        // A writer cleans up dead writers' temp files before it makes its own, so at most the
        // last killed writer's temp file is ever there.
        let temps = temp_files(&home.config_dir());
        assert!(temps <= 1, "{temps} temp files left after kill {kills}");
        temps_left += temps;
    }
    assert!(kills >= MIN_KILLS, "only {kills} kills in {BUDGET:?}");
    // One more uninterrupted write removes what the last killed writer left.
    let t = &targets[0];
    let now = std::fs::read(home.file(t.file)).unwrap();
    let args = if now == t.versions[0] { &t.add } else { &t.remove };
    assert!(spawn(&home, args).wait().unwrap().success());
    assert_eq!(temp_files(&home.config_dir()), 0);
    eprintln!(
        "file safety: {kills} SIGKILLs in {:.1?}, {mid_run} while the writer ran, \
         {temps_left} left a temp file (killed between temp write and rename); no torn file",
        start.elapsed()
    );
}

/// Writers run at once (`auth add` and `auth remove`, `service add` and `service remove`, in
/// separate processes) lose nothing: every add is there at the end and no removed entry comes back.
/// Each writer holds the file's lock from its read to its rename; without it, writers that read the
/// same version overwrite each other's change.
#[test]
fn concurrent_writers_lose_nothing() {
    const EACH: usize = 8;
    let home = Home::initialized();
    let (old, new): (Vec<PeerId>, Vec<PeerId>) =
        (0..EACH).map(|_| (PeerId::random(), PeerId::random())).unzip();
    let mut keys = String::from("# peers\n");
    for p in &old {
        keys.push_str(&format!("{p}  # to be removed\n"));
    }
    std::fs::write(home.file("authorized_keys"), keys).unwrap();
    for i in 0..EACH {
        home.run(&["service", "add", &format!("old-{i}"), &format!("127.0.0.1:{}", 3000 + i)]).ok();
    }

    let mut runs: Vec<Vec<String>> = Vec::new();
    for i in 0..EACH {
        runs.push(vec!["auth".into(), "add".into(), new[i].to_string()]);
        runs.push(vec!["auth".into(), "remove".into(), old[i].to_string()]);
        runs.push(vec![
            "service".into(),
            "add".into(),
            format!("new-{i}"),
            format!("127.0.0.1:{}", 4000 + i),
        ]);
        runs.push(vec!["service".into(), "remove".into(), format!("old-{i}")]);
    }
    let children: Vec<_> = runs
        .iter()
        .map(|args| {
            let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("peerup"));
            cmd.args(args)
                .env_clear()
                .env("HOME", home.path())
                .env("NO_COLOR", "1")
                .current_dir(home.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            (args, cmd.spawn().unwrap())
        })
        .collect();
    for (args, child) in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?} failed: {err}");
    }

    let keys = AuthorizedKeys::load_strict(&home.file("authorized_keys")).unwrap();
    let mut have: Vec<PeerId> = keys.entries().map(|e| e.peer_id()).collect();
    let mut want = new.clone();
    have.sort();
    want.sort();
    let out = home.run(&["service", "list", "--json"]).ok();
    let services: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<&str> =
        services.as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    names.sort();
    let want_names: Vec<String> = (0..EACH).map(|i| format!("new-{i}")).collect();
    assert!(
        have == want && names == want_names,
        "after {} writers: authorized_keys has {} of the {EACH} added and {} of the {EACH} removed; \
         services: {names:?}\n{}",
        runs.len(),
        have.iter().filter(|p| new.contains(p)).count(),
        have.iter().filter(|p| old.contains(p)).count(),
        keys.render()
    );
}

/// Runs `add` then `remove` uninterrupted to learn both versions and the run time.
fn target(home: &Home, file: &'static str, add: &[&str], remove: &[&str]) -> Target {
    let before = std::fs::read(home.file(file)).unwrap();
    let t0 = Instant::now();
    home.run(add).ok();
    let run_time = t0.elapsed();
    let after = std::fs::read(home.file(file)).unwrap();
    home.run(remove).ok();
    assert_eq!(std::fs::read(home.file(file)).unwrap(), before, "{file}: remove undoes add");
    assert_ne!(before, after);
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    Target { file, add: owned(add), remove: owned(remove), versions: [before, after], run_time }
}

fn spawn(home: &Home, args: &[String]) -> std::process::Child {
    Command::new(assert_cmd::cargo::cargo_bin("peerup"))
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with(".peerup-") && name.ends_with(".tmp")
        })
        .count()
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::from(nanos.subsec_nanos()) | 1
}

/// xorshift64: enough randomness for kill delays without another dependency.
struct Rng(u64);

impl Rng {
    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
