//! `peerup invite` / `join` / `verify` end to end on loopback: a gated relay on 127.0.0.1, alice
//! (authorized on it) invites, bob (no config at all) joins. Checks both sides' files, that alice's
//! running daemon lets bob in at once, wrong codes and the burn after three, expiry, reuse, SAS.

use peerup_core::pairing::code::{InviteCode, Password};

use crate::util::{Home, PEER_A, Proc};

/// A gated relay on 127.0.0.1 and alice, initialized with it and authorized on it.
struct Setup {
    relay_home: Home,
    relay_cfg: String,
    _relay: Proc,
    alice: Home,
    alice_id: String,
}

fn setup() -> Setup {
    setup_with("")
}

/// [`setup`], with `attrs` (`key=value …`) on alice's line in the relay's authorized_keys.
fn setup_with(attrs: &str) -> Setup {
    let relay_home = Home::new();
    let cfg = crate::util::loopback_relay_config(&relay_home, true);
    let alice = Home::new();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut relay = Proc::spawn(&relay_home, &["relay", "serve", "--config", &cfg]);
    let addr = relay.wait_out("the relay's address", |l| l.starts_with("  /ip4/127.0.0.1/tcp/"));
    alice.run(&["init", "--non-interactive", "--relay", addr.trim()]).ok();
    let alice_id = alice.run(&["whoami"]).ok().trim().to_string();
    relay_home.run(&["relay", "authorize", &alice_id, "--config", &cfg]).ok();
    if !attrs.is_empty() {
        let keys = relay_keys_path(&cfg);
        let text = std::fs::read_to_string(&keys).unwrap();
        let line = format!("\n{alice_id}\n");
        assert!(text.contains(&line), "{text}");
        std::fs::write(&keys, text.replace(&line, &format!("\n{alice_id}  {attrs}\n"))).unwrap();
    }
    // The relay reads its authorized_keys at start.
    drop(relay);
    let mut relay = Proc::spawn(&relay_home, &["relay", "serve", "--config", &cfg]);
    let again = relay.wait_out("the relay's address", |l| l.starts_with("  /ip4/127.0.0.1/tcp/"));
    if again.trim() != addr.trim() {
        // A new port: point alice at it.
        let c = alice.read("config.yaml").replace(addr.trim(), again.trim());
        std::fs::write(alice.file("config.yaml"), c).unwrap();
    }
    Setup { relay_home, relay_cfg: cfg, _relay: relay, alice, alice_id }
}

fn relay_keys_path(relay_cfg: &str) -> std::path::PathBuf {
    std::path::Path::new(relay_cfg).parent().unwrap().join("relay_authorized_keys")
}

fn invite(s: &Setup, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["invite", "--non-interactive"];
    args.extend(extra);
    let mut p = Proc::spawn(&s.alice, &args);
    let code = p.wait_out("the code", |l| !l.trim().is_empty());
    (p, code.trim().to_string())
}

/// Asserts exit 1 with progress lines allowed before exactly one final `Error: …` line.
#[track_caller]
fn fails(run: crate::util::Run) -> String {
    assert_eq!(run.code, 1, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains("Error:")).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert_eq!(run.stderr.lines().last(), Some(errors[0]), "{}", run.stderr);
    errors[0].to_string()
}

fn wrong_password(code: &str) -> String {
    let mut c = InviteCode::decode(code).unwrap();
    c.password = Password::from_bits(u64::from_be_bytes(c.password.to_bytes()) ^ 1);
    c.encode()
}

#[test]
fn invite_join_authorizes_both_sides_and_a_running_daemon_lets_the_joiner_in() {
    let s = setup();
    let mut daemon = Proc::spawn(&s.alice, &["daemon"]);
    daemon.wait_out("the reservation", |l| l.starts_with("Reservation accepted by relay"));

    // As in Go peer-up, each side offers its own name with --name and stores the other under the
    // name the other offered; --save-as picks a local name of one's own instead.
    let (inv, code) = invite(&s, &["--name", "alice-server"]);
    assert!(code.replace('-', "").len() <= 32, "{code}");
    assert!(InviteCode::decode(&code).is_ok(), "stdout carries only the code: {code:?}");

    let bob = Home::new();
    let out = bob.run(&["join", &code, "--name", "bob", "--save-as", "alice"]).ok();
    assert!(out.contains("Paired with \"alice\""), "{out}");
    let bob_id = bob.run(&["whoami"]).ok().trim().to_string();
    let (status, log) = inv.finish();
    assert_eq!(status, 0, "{log}");
    assert!(log.contains("joined and is authorized"), "{log}");

    assert!(s.alice.read("authorized_keys").contains(&bob_id));
    let alice_cfg = s.alice.read("config.yaml");
    assert!(
        alice_cfg.contains(&format!("\"bob\": \"{bob_id}\"")),
        "the name bob offered: {alice_cfg}"
    );
    assert!(bob.read("authorized_keys").contains(&s.alice_id));
    let bob_cfg = bob.read("config.yaml");
    assert!(bob_cfg.contains(&format!("\"alice\": \"{}\"", s.alice_id)), "--save-as: {bob_cfg}");
    assert!(!bob_cfg.contains("alice-server"), "--save-as wins over the offered name: {bob_cfg}");
    assert!(bob_cfg.contains("/ip4/127.0.0.1/tcp/"), "bob got the relay: {bob_cfg}");
    assert_eq!(bob.mode("config.yaml"), 0o600);

    // alice's daemon (started before the pairing) lets bob in; the relay admitted bob too.
    let ping = bob.run(&["ping", "alice", "-c", "1", "--json"]).ok();
    assert!(ping.contains("\"seq\""), "{ping}");

    // The same code does not work twice.
    let carol = Home::new();
    let err = fails(carol.run(&["join", &code]));
    assert!(err.contains("used code"), "{err}");

    // SAS: both sides compute the same; bob marks alice verified.
    let sas = |h: &Home, peer: &str| -> serde_json::Value {
        serde_json::from_str(&h.run(&["verify", peer, "--json"]).ok()).unwrap()
    };
    let (a, b) = (sas(&s.alice, "bob"), sas(&bob, "alice"));
    assert_eq!((&a["emoji"], &a["number"]), (&b["emoji"], &b["number"]));
    assert_eq!(a["verified"], false);
    assert!(bob.run(&["auth", "list"]).ok().contains("[UNVERIFIED]"));
    let out = bob.run(&["verify", "alice", "--yes"]).ok();
    assert!(out.contains("[VERIFIED]"), "{out}");
    assert!(bob.read("authorized_keys").contains("verified=sha256:"));
    assert!(bob.run(&["auth", "list"]).ok().contains("[VERIFIED]"));
    assert!(bob.run(&["status"]).ok().contains("[VERIFIED]"));
    let out = s.alice.run_with_stdin(&["verify", "bob"], "n\n").ok();
    assert!(out.contains("remains unverified"), "{out}");
}

#[test]
fn wrong_codes_fail_clearly_and_the_third_burns_the_invite() {
    let s = setup();
    let (inv, code) = invite(&s, &[]);
    let bob = Home::new();
    let wrong = wrong_password(&code);
    for n in 1..=3 {
        let err = fails(bob.run(&["join", &wrong]));
        assert!(err.contains("the code does not match"), "attempt {n}: {err}");
    }
    let (status, log) = inv.finish();
    assert_eq!(status, 1, "{log}");
    assert!(log.contains("burnt"), "{log}");
    let err = fails(bob.run(&["join", &code]));
    assert!(err.contains("no invite is open there"), "{err}");
    assert!(!s.alice.read("authorized_keys").contains("12D3"), "nobody was authorized");
}

#[test]
fn an_expired_code_fails() {
    let s = setup();
    let (inv, code) = invite(&s, &["--ttl", "1s"]);
    let (status, log) = inv.finish();
    assert_eq!(status, 1, "{log}");
    assert!(log.contains("expired"), "{log}");
    let err = fails(Home::new().run(&["join", &code]));
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn malformed_codes_and_bad_flags_are_refused_offline() {
    let h = Home::new();
    let err = fails(h.run(&["join", "ABC"]));
    assert!(err.contains("invalid invite code") && err.contains("3 characters"), "{err}");
    let err = fails(h.run(&["join", "UUUUU-UUUUU-UUUUU-UUUUU"]));
    assert!(err.contains("invalid character"), "{err}");
    let err = h.run_with_stdin(&["join", "--non-interactive"], "").fails();
    assert!(err.contains("no invite code"), "{err}");
    let code = InviteCode { relay: None, slot: 1, password: Password::from_bits(2) }.encode();
    let err = h.command().args(["join"]).env("PEERUP_INVITE_CODE", &code).output().unwrap();
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("short code names no relay"), "{err}");
    // An inviter the relay does not know is told what to do.
    let s = setup();
    let stranger = Home::new();
    let cfg = s.alice.read("config.yaml");
    let relay = cfg.lines().find(|l| l.contains("/ip4/127.0.0.1/tcp/")).unwrap().trim();
    let relay = relay.trim_start_matches("- ").trim_matches('"');
    stranger.run(&["init", "--non-interactive", "--relay", relay]).ok();
    let err = fails(stranger.run(&["invite", "--non-interactive"]));
    assert!(err.contains("peerup relay authorize"), "{err}");
    let a = Home::initialized();
    let err = a.run(&["invite", "--ttl", "2h"]).fails();
    assert!(err.contains("at most"), "{err}");
    assert!(!h.file("config.yaml").exists(), "a failed join leaves no config");
}

#[test]
fn relay_pair_makes_group_codes_lists_and_revokes_them() {
    let s = setup();
    let pair = |args: &[&str]| {
        let mut all = vec!["relay", "pair", "--config", &s.relay_cfg];
        all.extend(args);
        s.relay_home.run(&all)
    };
    let v: serde_json::Value =
        serde_json::from_str(&pair(&["--count", "2", "--json"]).ok()).unwrap();
    let codes: Vec<&str> =
        v["codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let group = v["group_id"].as_str().unwrap().to_string();
    assert_eq!(codes.len(), 2);
    assert!(codes.iter().all(|c| c.replace('-', "").len() <= 32));

    let bob = Home::new();
    let out = bob.run(&["join", codes[0]]).ok();
    assert!(out.contains(&format!("Joined group {group}")), "{out}");
    assert!(bob.read("groups").contains(&group));
    let listed: serde_json::Value =
        serde_json::from_str(&pair(&["--list", "--json"]).ok()).unwrap();
    assert_eq!(listed[0]["used"], 1, "{listed}");
    assert!(pair(&["--list"]).ok().contains("1/2 used"));

    // The relay authorized bob with the group attribute.
    let relay_keys = std::fs::read_to_string(
        std::path::Path::new(&s.relay_cfg).parent().unwrap().join("relay_authorized_keys"),
    )
    .unwrap();
    let bob_id = bob.run(&["whoami"]).ok().trim().to_string();
    assert!(
        relay_keys.lines().any(|l| l.contains(&bob_id) && l.contains(&format!("group={group}")))
    );

    assert!(pair(&["--revoke", &group]).ok().contains("revoked"));
    let err = fails(Home::new().run(&["join", codes[1]]));
    assert!(err.contains("no invite is open there"), "{err}");
    let err = pair(&["--revoke", &group]).fails();
    assert!(err.contains("group not found"), "{err}");
    let err = pair(&["--count", "9"]).code;
    assert_eq!(err, 2, "clap refuses more than 8");

    // With a wrong cookie the relay refuses; with no relay running the CLI says so.
    let cookie = std::path::Path::new(&s.relay_cfg).parent().unwrap().join(".relay-admin.cookie");
    let real = std::fs::read_to_string(&cookie).unwrap();
    std::fs::write(&cookie, "00").unwrap();
    assert!(pair(&["--list"]).fails().contains("unauthorized"));
    std::fs::write(&cookie, real).unwrap();
    let lone = Home::new();
    let dir = lone.path().join("relay");
    lone.run(&["relay", "setup", "--dir", dir.to_str().unwrap()]).ok();
    let cfg = dir.join("relay-server.yaml");
    let err = lone.run(&["relay", "pair", "--config", cfg.to_str().unwrap()]).fails();
    assert!(err.contains("relay is not running"), "{err}");
}

#[test]
fn a_relay_admission_follows_its_inviter() {
    let s = setup_with("expires=2099-01-01T00:00:00Z");
    let keys = relay_keys_path(&s.relay_cfg);
    let pair = |who: &Home| {
        let (inv, code) = invite(&s, &[]);
        who.run(&["join", &code]).ok();
        let (status, log) = inv.finish();
        assert_eq!(status, 0, "{log}");
        (who.run(&["whoami"]).ok().trim().to_string(), log)
    };
    // The joiner's relay entry ends when alice's does, and alice answers for it.
    let (bob, _) = pair(&Home::new());
    let text = std::fs::read_to_string(&keys).unwrap();
    let line = text.lines().find(|l| l.starts_with(&bob)).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("expires=2099-01-01T00:00:00Z"), "{line}");
    assert!(line.contains(&format!("sponsor={}", s.alice_id)), "{line}");

    // alice has brought in as many as a sponsor may (bob and 15 more): the next is not admitted.
    let mut text = text;
    for _ in 0..15 {
        text.push_str(&format!("{}  sponsor={}\n", peerup_core::PeerId::random(), s.alice_id));
    }
    std::fs::write(&keys, &text).unwrap();
    let (carol, log) = pair(&Home::new());
    assert!(log.contains("the relay did not authorize") && log.contains("(16)"), "{log}");
    assert!(!std::fs::read_to_string(&keys).unwrap().contains(&carol));

    // The operator removes alice: the running relay drops her at once (within its 250 ms file
    // watch), so no one gets in on her word any more; she cannot even invite through it: she is
    // refused, or, when she registered just before the change applied, loses her slot as the
    // relay drops her. (An inviter deauthorized while her pairing runs is refused by the
    // admission itself: `admit.rs`.)
    s.relay_home.run(&["relay", "deauthorize", &s.alice_id, "--config", &s.relay_cfg]).ok();
    let err = fails(s.alice.run(&["invite", "--non-interactive"]));
    assert!(err.contains("the relay refused this node") || err.contains("lost the slot"), "{err}");

    // Absurd memberships are refused up front (they overflowed a timestamp on the next join).
    let err = s
        .relay_home
        .run(&["relay", "pair", "--expires", "10000y", "--config", &s.relay_cfg])
        .fails();
    assert!(err.contains("--expires may be at most 3650 days"), "{err}");
    // A name that is a peer ID is refused too.
    let err = s.alice.run(&["invite", "--name", PEER_A]).fails();
    assert!(err.contains("is a peer ID"), "{err}");
    let err = Home::new().run(&["join", "ABC", "--name", PEER_A]).fails();
    assert!(err.contains("is a peer ID"), "{err}");
    let err = Home::new().run(&["join", "ABC", "--save-as", PEER_A]).fails();
    assert!(err.contains("--save-as") && err.contains("is a peer ID"), "{err}");
}
