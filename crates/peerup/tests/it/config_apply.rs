//! Safe config changes: last-known-good archives on every daemon start, `config rollback`, and
//! commit-confirmed `config apply` / `config confirm` with the daemon's own revert.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon_api::{Daemon, call};
use crate::util::Home;

/// Bound on every wait for something the daemon does by itself.
const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
#[track_caller]
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn archives(home: &Home) -> Vec<Value> {
    let out = home.run(&["config", "rollback", "--list", "--json"]).ok();
    serde_json::from_str::<Value>(&out).unwrap().as_array().cloned().unwrap_or_default()
}

fn services(home: &Home) -> Vec<String> {
    let cookie = home.read(".daemon-cookie");
    let (code, v) = call(home, Some(&cookie), "GET", "/v1/services", "");
    assert_eq!(code, 200, "{v}");
    v["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// Writes a new config next to the current one: the current one plus service `web`.
fn new_config(home: &Home, name: &str) -> String {
    let path = home.file(name);
    std::fs::copy(home.file("config.yaml"), &path).unwrap();
    let path = path.to_str().unwrap().to_string();
    home.run(&["service", "add", "web", "127.0.0.1:8080", "--config", &path]).ok();
    path
}

#[test]
fn every_start_archives_five_kept_and_rollback_restores_bytes() {
    let home = Home::initialized();
    assert!(home.run(&["config", "rollback", "--list"]).ok().contains("No archives"));
    let err = home.fails_leaving(&["config", "rollback"], &["config.yaml"]);
    assert!(err.contains("no last-known-good archive"), "{err}");
    let base = home.read("config.yaml");
    let mut versions = Vec::new();
    for i in 0..6 {
        let text = format!("{base}# start {i}\n");
        std::fs::write(home.file("config.yaml"), &text).unwrap();
        let _d = Daemon::start(&home);
        wait_for("the start's archive", WAIT, || {
            let a = archives(&home);
            (a.len() == (i + 1).min(5)
                && std::fs::read_to_string(a[0]["path"].as_str().unwrap()).ok()? == text)
                .then_some(())
        });
        versions.push(text);
    }
    let list = archives(&home);
    assert_eq!(list.len(), 5, "{list:?}");
    for (n, a) in list.iter().enumerate() {
        assert_eq!(a["n"], n + 1);
        let text = std::fs::read_to_string(a["path"].as_str().unwrap()).unwrap();
        assert_eq!(text, versions[5 - n], "archive {} is start {}", n + 1, 5 - n);
    }
    assert_eq!(home.read(".config.last-good.yaml"), versions[5], "Go's file is the newest");
    assert_eq!(home.mode(".config.last-good.yaml"), 0o600);

    // A restart with the same config adds nothing.
    drop(Daemon::start(&home));
    assert_eq!(archives(&home).len(), 5);

    std::fs::write(home.file("config.yaml"), "relay: [broken\n").unwrap();
    assert!(home.run(&["status"]).code != 0, "the broken config does not load");
    let out = home.run(&["config", "rollback"]).ok();
    assert!(out.contains("Restored archive 1"), "{out}");
    assert_eq!(home.read("config.yaml"), versions[5], "byte for byte");
    assert_eq!(home.mode("config.yaml"), 0o600);
    assert_eq!(home.read(".config.before-rollback.yaml"), "relay: [broken\n");
    home.run(&["config", "rollback", "--to", "4"]).ok();
    assert_eq!(home.read("config.yaml"), versions[2]);
    let err = home.run(&["config", "rollback", "--to", "6"]);
    assert_eq!(err.code, 2, "N is 1 to 5: {}", err.stderr);
}

#[test]
fn apply_checks_first_refuses_a_second_and_confirm_needs_a_pending_apply() {
    let home = Home::initialized();
    let err = home.fails_leaving(&["config", "confirm"], &["config.yaml"]);
    assert!(err.contains("no config apply pending"), "{err}");

    let missing_key = home.read("config.yaml").replace("identity.key", "missing.key");
    for (bad, says) in [
        ("relay:\n  addresses: [\"not a multiaddr\"]\n", "relay.addresses"),
        ("security: [\n", "invalid config"),
        (missing_key.as_str(), "missing.key"),
    ] {
        std::fs::write(home.file("bad.yaml"), bad).unwrap();
        let bad = home.file("bad.yaml");
        let err = home.fails_leaving(&["config", "apply", bad.to_str().unwrap()], &["config.yaml"]);
        assert!(err.contains("is invalid") && err.contains(says), "{err}");
        assert!(
            !home.file(".config.pending").exists()
                && !home.file(".config.pre-confirmed.yaml").exists()
        );
    }
    let err = home.run(&["config", "apply", "/nonexistent.yaml"]).fails();
    assert!(err.contains("cannot read new config /nonexistent.yaml"), "{err}");

    let before = home.read("config.yaml");
    let new = new_config(&home, "new.yaml");
    // Flags before the file, and --config after the subcommand.
    let cfg = home.file("config.yaml");
    let out = home
        .run(&[
            "config",
            "apply",
            "--confirm-timeout",
            "1h",
            &new,
            "--config",
            cfg.to_str().unwrap(),
        ])
        .ok();
    assert!(out.contains("Applied") && out.contains("Auto-revert in 1h"), "{out}");
    assert!(out.contains("No daemon running"), "{out}");
    assert_eq!(home.read("config.yaml"), home.read("new.yaml"));
    assert_eq!(home.read(".config.pre-confirmed.yaml"), before);
    assert_eq!(home.mode(".config.pending"), 0o600);
    let marker: Value = serde_json::from_str(&home.read(".config.pending")).unwrap();
    assert_eq!(marker["backup"], ".config.pre-confirmed.yaml");
    assert!(marker["deadline"].as_str().unwrap().ends_with('Z'));

    let show = home.run(&["config", "show"]).ok();
    assert!(show.contains("# Commit-confirmed pending: 59m"), "{show}");
    let err = home.fails_leaving(
        &["config", "apply", &new, "--confirm-timeout", "1m"],
        &["config.yaml", ".config.pending"],
    );
    assert!(err.contains("already pending"), "{err}");
    let err = home.fails_leaving(&["config", "rollback"], &["config.yaml"]);
    assert!(err.contains("apply is pending"), "{err}");

    home.run(&["config", "confirm"]).ok();
    assert!(
        !home.file(".config.pending").exists() && !home.file(".config.pre-confirmed.yaml").exists()
    );
    assert_eq!(home.read("config.yaml"), home.read("new.yaml"));
    assert_eq!(archives(&home).len(), 1, "a confirmed config is archived");
    let err = home.run(&["config", "confirm"]).fails();
    assert!(err.contains("no config apply pending"), "{err}");

    // A broken marker is reported, not a panic.
    std::fs::write(home.file(".config.pending"), "{not json").unwrap();
    let show = home.run(&["config", "show"]).ok();
    assert!(show.contains("# WARNING: malformed pending-apply marker"), "{show}");
}

#[test]
fn unconfirmed_apply_is_live_then_reverts_by_itself() {
    let home = Home::initialized();
    let before = home.read("config.yaml");
    let _d = Daemon::start(&home);
    assert!(services(&home).is_empty());
    let new = new_config(&home, "new.yaml");
    let out = home.run(&["config", "apply", &new, "--confirm-timeout", "2s"]).ok();
    assert!(out.contains("Daemon applied live: services.web exposed"), "{out}");
    assert_eq!(services(&home), vec!["web".to_string()], "visible without a restart");
    let deadline = Instant::now() + Duration::from_secs(2);
    wait_for("the revert", WAIT, || (home.read("config.yaml") == before).then_some(()));
    assert!(Instant::now() >= deadline - Duration::from_millis(100), "not before the deadline");
    assert!(
        !home.file(".config.pending").exists() && !home.file(".config.pre-confirmed.yaml").exists()
    );
    wait_for("the old services back", WAIT, || services(&home).is_empty().then_some(()));
}

#[test]
fn confirmed_apply_survives_its_deadline() {
    let home = Home::initialized();
    let mut d = Daemon::start(&home);
    let new = new_config(&home, "new.yaml");
    home.run(&["config", "apply", &new, "--confirm-timeout", "2s"]).ok();
    home.run(&["config", "confirm"]).ok();
    let past = Instant::now() + Duration::from_secs(4);
    // Until well past the old deadline: the config stays, the daemon keeps running and serving it.
    wait_for("the old deadline to be long gone", WAIT, || {
        assert_eq!(home.read("config.yaml"), home.read("new.yaml"), "a confirmed apply reverted");
        assert_eq!(services(&home), vec!["web".to_string()]);
        assert!(d.is_running(), "the daemon exited at the old deadline");
        (Instant::now() > past).then_some(())
    });
}

#[test]
fn daemon_killed_during_a_pending_apply_reverts_on_start() {
    let home = Home::initialized();
    let before = home.read("config.yaml");
    let new = new_config(&home, "new.yaml");

    // Killed, and the deadline passes while it is down: reverted before the next start.
    let d = Daemon::start(&home);
    home.run(&["config", "apply", &new, "--confirm-timeout", "1s"]).ok();
    drop(d); // SIGKILL
    wait_for("the deadline to pass", WAIT, || {
        home.run(&["config", "show"]).ok().contains("Commit-confirmed expired").then_some(())
    });
    assert_eq!(home.read("config.yaml"), home.read("new.yaml"), "nobody reverted yet");
    let _d = Daemon::start(&home);
    assert_eq!(home.read("config.yaml"), before, "reverted before the start");
    assert!(services(&home).is_empty());
    assert!(!home.file(".config.pending").exists());
    drop(_d);

    // Killed and restarted before the deadline: the restarted daemon keeps the timer.
    let d = Daemon::start(&home);
    home.run(&["config", "apply", &new, "--confirm-timeout", "3s"]).ok();
    drop(d);
    let _d = Daemon::start(&home);
    assert_eq!(services(&home), vec!["web".to_string()], "still pending: the new config runs");
    wait_for("the revert by the restarted daemon", WAIT, || {
        (home.read("config.yaml") == before).then_some(())
    });
    wait_for("the old services back", WAIT, || services(&home).is_empty().then_some(()));
}

#[test]
fn relay_config_is_archived_and_an_unconfirmed_apply_reverts() {
    let home = Home::new();
    let cfg = crate::util::loopback_relay_config(&home, true);
    let c = cfg.to_str().unwrap();
    let list = |home: &Home| -> Vec<Value> {
        let out =
            home.run(&["relay", "config", "rollback", "--list", "--json", "--config", c]).ok();
        serde_json::from_str::<Value>(&out).unwrap().as_array().cloned().unwrap_or_default()
    };
    let mut relay = Daemon::spawn(&home, &["relay", "serve", "--config", c], &[], "Relay ready:");
    // The archive is written first, then its last-good mirror: wait for both.
    let last_good = cfg.with_file_name(".relay-server.last-good.yaml");
    wait_for("the relay's archive and last-good copy", WAIT, || {
        (list(&home).len() == 1 && last_good.exists()).then_some(())
    });

    let before = std::fs::read_to_string(&cfg).unwrap();
    let new = cfg.with_file_name("new.yaml");
    std::fs::write(&new, before.replace("max_reservations: ", "max_reservations: 1")).unwrap();
    let bad = cfg.with_file_name("bad.yaml");
    std::fs::write(&bad, "resources:\n  reservation_ttl: soon\n").unwrap();
    let err = home.run(&["relay", "config", "apply", bad.to_str().unwrap(), "--config", c]).fails();
    assert!(err.contains("is invalid") && err.contains("reservation_ttl"), "{err}");
    let n = new.to_str().unwrap();
    home.run(&["relay", "config", "apply", "--config", c, n, "--confirm-timeout", "1s"]).ok();
    assert_ne!(std::fs::read_to_string(&cfg).unwrap(), before);
    wait_for("the relay's revert", WAIT, || {
        (std::fs::read_to_string(&cfg).unwrap() == before).then_some(())
    });
    assert!(relay.is_running(), "a revert to the config it runs needs no restart");
    let err = home.run(&["relay", "config", "confirm", "--config", c]).fails();
    assert!(err.contains("no config apply pending"), "{err}");
}
