//! The daemon API over its real Unix socket: cookie auth, the envelope, 4xx for bad input, hot
//! reload of authorized_keys, one daemon per config, and a clean stop.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Home, PEER_A, PEER_B, Proc};

const WAIT: Duration = Duration::from_secs(20);

/// Starting a daemon (or a relay) in a test home: each returns the running [`Proc`] once it is ready.
pub(crate) struct Daemon;

impl Daemon {
    pub(crate) fn start(home: &Home) -> Proc {
        Self::start_with(home, &[])
    }

    fn start_with(home: &Home, env: &[(&str, &str)]) -> Proc {
        Self::spawn(home, &["daemon"], env, "API: ")
    }

    /// Starts `peerup <args>` in `home` and waits for a stdout line starting with `ready`.
    pub(crate) fn spawn(home: &Home, args: &[&str], env: &[(&str, &str)], ready: &str) -> Proc {
        let mut p = Proc::spawn_with(home, args, env);
        p.wait_line(ready);
        p
    }
}

/// One HTTP/1.1 request over the socket; returns the status and the parsed JSON body.
pub(crate) fn call(
    home: &Home,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let (status, text) = call_raw(home, token, method, path, body);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}")))
}

/// One HTTP/1.1 request over the socket; returns the status and the body as text.
fn call_raw(
    home: &Home,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut s = UnixStream::connect(home.file("peerup.sock")).expect("connect to the API socket");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: daemon\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status: u16 =
        raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    (status, raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("").to_string())
}

#[test]
fn api_endpoints_auth_and_envelope() {
    let home = Home::initialized();
    home.run(&["service", "add", "ssh", "localhost:22"]).ok();
    let _d = Daemon::start(&home);
    let cookie = home.read(".daemon-cookie");
    assert_eq!(cookie.len(), 64);
    assert_eq!(home.mode(".daemon-cookie"), 0o600);
    assert_eq!(home.mode("peerup.sock") & 0o077, 0, "the socket is owner-only");
    let t = Some(cookie.as_str());

    let (code, v) = call(&home, t, "GET", "/v1/status", "");
    assert_eq!(code, 200);
    assert_eq!(v["data"]["peer_id"], home.run(&["whoami"]).ok().trim());
    assert!(v["data"]["relay_addresses"].is_array(), "empty lists are [], not null: {v}");
    let grade = v["data"]["reachability"]["grade"].as_str().unwrap_or_default();
    assert!(["A", "B", "C", "D", "F"].contains(&grade), "{v}");
    assert!(v["data"]["reachability"]["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(v["data"]["has_global_ipv4"].is_boolean() && v["data"]["has_global_ipv6"].is_boolean());
    assert_eq!(v["data"]["is_relaying"], false, "{v}");
    assert!(v["data"]["nat_type"].is_string(), "{v}");

    // Text format negotiation.
    let (code, text) = call_raw(&home, t, "GET", "/v1/status?format=text", "");
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!("peer_id: {}", v["data"]["peer_id"].as_str().unwrap())),
        "{text}"
    );
    assert!(text.contains(&format!("reachability: [{grade}] ")), "{text}");

    for (token, what) in [(None, "missing"), (Some("0".repeat(64)), "wrong")] {
        let (code, v) = call(&home, token.as_deref(), "GET", "/v1/status", "");
        assert_eq!(code, 401, "{what} cookie");
        assert!(v["error"].as_str().unwrap().contains("unauthorized"));
    }

    let (code, v) = call(&home, t, "GET", "/v1/services", "");
    assert_eq!((code, v["data"][0]["protocol"].as_str()), (200, Some("/peerup/ssh/1.0.0")));
    let (code, v) = call(&home, t, "GET", "/v1/auth", "");
    assert_eq!((code, v["data"].as_array().map(Vec::len)), (200, Some(0)));

    // Malformed and invalid input is a 4xx with a clear message, never a 500.
    let (code, v) = call(&home, t, "POST", "/v1/auth", "{not json");
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().starts_with("invalid JSON body"), "{v}");
    let (code, v) = call(&home, t, "POST", "/v1/auth", r#"{"peer_id":"garbage"}"#);
    assert_eq!(code, 400, "{v}");
    let (code, _) = call(&home, t, "POST", "/v1/resolve", r#"{"name":"nobody"}"#);
    assert_eq!(code, 404);
    let (code, v) = call(&home, t, "POST", "/v1/ping", r#"{"peer":"nobody"}"#);
    assert_eq!(code, 400, "{v}");
    let (code, _) = call(&home, t, "GET", "/v1/nope", "");
    assert_eq!(code, 404);

    // Auth changes go to the file and take effect without a restart.
    let add = format!(r#"{{"peer_id":"{PEER_A}","comment":"laptop"}}"#);
    let (code, v) = call(&home, t, "POST", "/v1/auth", &add);
    assert_eq!((code, v["data"]["status"].as_str()), (200, Some("added")));
    assert!(home.read("authorized_keys").contains(&format!("{PEER_A}  # laptop")));
    let (code, _) = call(&home, t, "POST", "/v1/auth", &add);
    assert_eq!(code, 409, "a duplicate is a conflict");
    let (code, v) = call(&home, t, "GET", "/v1/auth", "");
    assert_eq!((code, v["data"][0]["peer_id"].as_str()), (200, Some(PEER_A)));
    let (code, _) = call(&home, t, "DELETE", &format!("/v1/auth/{PEER_A}"), "");
    assert_eq!(code, 200);
    let (code, _) = call(&home, t, "DELETE", &format!("/v1/auth/{PEER_B}"), "");
    assert_eq!(code, 404);
    assert!(!home.read("authorized_keys").contains(PEER_A));

    // Runtime exposure.
    let web = r#"{"name":"web","local_address":"127.0.0.1:8080"}"#;
    assert_eq!(call(&home, t, "POST", "/v1/expose", web).0, 200);
    assert_eq!(call(&home, t, "POST", "/v1/expose", web).0, 409);
    assert_eq!(
        call(&home, t, "POST", "/v1/expose", r#"{"name":"Bad_Name","local_address":"a:1"}"#).0,
        400
    );
    assert_eq!(
        call(&home, t, "POST", "/v1/expose", r#"{"name":"x","local_address":"nope"}"#).0,
        400
    );
    let (_, v) = call(&home, t, "GET", "/v1/services", "");
    assert!(v["data"].as_array().unwrap().iter().any(|s| s["name"] == "web"), "{v}");
    assert_eq!(call(&home, t, "DELETE", "/v1/expose/web", "").0, 200);
    assert_eq!(call(&home, t, "DELETE", "/v1/expose/web", "").0, 404);
    let bad_peers = r#"{"name":"web","local_address":"127.0.0.1:8080","allowed_peers":["home"]}"#;
    let (code, v) = call(&home, t, "POST", "/v1/expose", bad_peers);
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("allowed_peers[0]: invalid peer ID"), "{v}");
    assert_eq!(
        call(
            &home,
            t,
            "POST",
            "/v1/connect",
            r#"{"peer":"nobody","service":"x","listen":"127.0.0.1:0"}"#
        )
        .0,
        400
    );

    // A proxy listens on loopback unless a wider address is asked for explicitly: it hands the
    // peer's service, as this node, to whoever can connect.
    for listen in ["0.0.0.0:0", "[::]:0", "198.18.0.7:0"] {
        let req = format!(r#"{{"peer":"{PEER_A}","service":"ssh","listen":"{listen}"}}"#);
        let (code, v) = call(&home, t, "POST", "/v1/connect", &req);
        assert_eq!(code, 400, "{listen}: {v}");
        assert!(v["error"].as_str().unwrap().contains("allow_non_loopback: true"), "{v}");
    }
    let err = home
        .run(&["daemon", "connect", "--peer", PEER_A, "--service", "ssh", "--listen", "0.0.0.0:0"])
        .fails();
    assert!(err.contains("is not loopback"), "{err}");
    let wide = format!(
        r#"{{"peer":"{PEER_A}","service":"ssh","listen":"0.0.0.0:0","allow_non_loopback":true}}"#
    );
    let (code, v) = call(&home, t, "POST", "/v1/connect", &wide);
    assert_eq!(code, 200, "{v}");
    assert!(v["data"]["listen_address"].as_str().unwrap().starts_with("0.0.0.0:"), "{v}");
    let id = v["data"]["id"].as_str().unwrap();
    assert_eq!(call(&home, t, "DELETE", &format!("/v1/connect/{id}"), "").0, 200);
    let out = home
        .run(&[
            "daemon",
            "connect",
            "--peer",
            PEER_A,
            "--service",
            "ssh",
            "--listen",
            "0.0.0.0:0",
            "--allow-non-loopback",
        ])
        .ok();
    assert!(out.contains("(listen: 0.0.0.0:"), "{out}");
}

#[test]
fn one_daemon_per_config_and_a_clean_stop() {
    let home = Home::initialized();
    let mut d = Daemon::start(&home);
    let err = home.run(&["daemon"]).fails();
    assert!(err.contains("a daemon is already running"), "{err}");
    let json: Value =
        serde_json::from_str(&home.run(&["daemon", "status", "--json"]).ok()).unwrap();
    assert!(json["uptime_seconds"].is_u64(), "{json}");
    assert!(home.run(&["daemon", "stop"]).ok().contains("Shutdown requested."));
    assert!(d.wait_exit(), "the daemon exits after stop");
    assert!(!home.file("peerup.sock").exists(), "socket removed");
    assert!(!home.file(".daemon-cookie").exists(), "cookie removed");
    let err = home.run(&["daemon", "status"]).fails();
    assert!(err.contains("daemon not running"), "{err}");
    let err = home.run(&["daemon", "ping", PEER_A]).fails();
    assert!(err.contains("daemon not running"), "{err}");
}

/// `DELETE /v1/auth/X` racing other writers of authorized_keys (here `peerup auth add` processes,
/// as a group introduction would be) never brings X back and never loses an add: the daemon holds
/// the same file lock as every other writer.
#[test]
fn api_auth_changes_racing_the_cli_lose_nothing() {
    const EACH: usize = 8;
    let home = Home::initialized();
    let (old, new): (Vec<String>, Vec<String>) = (0..EACH)
        .map(|_| {
            (peerup_core::PeerId::random().to_string(), peerup_core::PeerId::random().to_string())
        })
        .unzip();
    for p in &old {
        home.run(&["auth", "add", p]).ok();
    }
    let _d = Daemon::start(&home);
    let cookie = home.read(".daemon-cookie");
    std::thread::scope(|s| {
        for (o, n) in old.iter().zip(&new) {
            let (home, cookie) = (&home, &cookie);
            s.spawn(move || {
                let (code, v) = call(home, Some(cookie), "DELETE", &format!("/v1/auth/{o}"), "");
                assert_eq!(code, 200, "{v}");
            });
            s.spawn(move || home.run(&["auth", "add", n]).ok());
        }
    });
    let keys = home.read("authorized_keys");
    let kept: Vec<&String> = old.iter().filter(|p| keys.contains(p.as_str())).collect();
    let added = new.iter().filter(|p| keys.contains(p.as_str())).count();
    assert!(
        kept.is_empty() && added == EACH,
        "{} removed peers came back, {added} of {EACH} adds kept:\n{keys}",
        kept.len()
    );
}

/// The API socket (and the relay's admin socket) live only in a folder private to the user: in
/// one that others may enter, the daemon and the relay refuse to start, with the fix in one line,
/// and leave no socket behind.
#[test]
fn sockets_are_served_only_from_a_private_folder() {
    use std::os::unix::fs::PermissionsExt;
    let open = std::fs::Permissions::from_mode(0o755);
    let home = Home::initialized();
    let relay_cfg = crate::util::loopback_relay_config(&home, false);
    let relay_dir = relay_cfg.parent().unwrap().to_path_buf();
    let relay_args = ["relay", "serve", "--config", relay_cfg.to_str().unwrap()];
    std::fs::set_permissions(home.config_dir(), open.clone()).unwrap();
    std::fs::set_permissions(&relay_dir, open).unwrap();

    for (args, dir, sock) in [
        (&["daemon"][..], home.config_dir(), home.file("peerup.sock")),
        (&relay_args[..], relay_dir.clone(), relay_dir.join(".relay-admin.sock")),
    ] {
        let (code, out) = Proc::spawn(&home, args).finish();
        assert_eq!(code, 1, "{args:?} refuses to start: {out}");
        let err = out.lines().find(|l| l.starts_with("Error: ")).unwrap_or_default();
        assert!(
            err.contains("its folder must be private")
                && err.contains("mode 0755")
                && err.contains(&format!("chmod 700 {}", dir.display())),
            "{args:?}: {out}"
        );
        assert!(!sock.exists(), "{args:?} left a socket behind");
    }
}

#[test]
fn systemd_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let home = Home::initialized();
    let sock_path = home.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut d = Daemon::start_with(
        &home,
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen = Vec::new();
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    while !seen.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        seen.push(next());
    }
    assert!(seen[0].contains("READY=1"), "READY first: {seen:?}");
    home.run(&["daemon", "stop"]).ok();
    let mut stopping = false;
    for _ in 0..20 {
        if next().contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 is sent at shutdown");
    assert!(d.wait_exit());
}

/// A TCP echo server on 127.0.0.1:0, in a thread.
fn echo_server() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut sock in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = sock.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut sock);
                let _ = sock.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn connect_carries_bytes_and_disconnect_closes_the_listener() {
    // A relay on loopback (gating off, so no authorization round-trip is needed).
    let relay_home = Home::new();
    let cfg = crate::util::loopback_relay_config(&relay_home, false);
    let mut relay = Daemon::spawn(
        &relay_home,
        &["relay", "serve", "--config", cfg.to_str().unwrap()],
        &[],
        "Relay ready: ",
    );
    let relay_addr = relay.wait_line("  /ip4/127.0.0.1/tcp/").trim().to_string();

    let (a, b) = (Home::new(), Home::new());
    for h in [&a, &b] {
        h.run(&["init", "--non-interactive", "--relay", &relay_addr]).ok();
    }
    let id = |h: &Home| h.run(&["whoami"]).ok().trim().to_string();
    let (a_id, b_id) = (id(&a), id(&b));
    a.run(&["auth", "add", &b_id]).ok();
    b.run(&["auth", "add", &a_id]).ok();
    a.run(&["service", "add", "echo", &echo_server()]).ok();
    let mut da = Daemon::start(&a);
    da.wait_line("Reservation accepted by relay");
    enable_metrics(&b);
    // Info logs from peerup itself, to see the proxies' connections logged (at the end).
    let mut db = Daemon::spawn(&b, &["daemon"], &[("RUST_LOG", "peerup=info")], "Peer ID: ");
    let metrics = db.wait_line("Metrics: http://");
    let metrics = metrics.trim_start_matches("Metrics: http://").trim_end_matches("/metrics");
    db.wait_line("API: ");

    let cookie = b.read(".daemon-cookie");
    let req = format!(r#"{{"peer":"{a_id}","service":"echo","listen":"127.0.0.1:0"}}"#);
    let (code, v) = call(&b, Some(&cookie), "POST", "/v1/connect", &req);
    assert_eq!(code, 200, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let listen = v["data"]["listen_address"].as_str().unwrap().to_string();

    let mut sock = std::net::TcpStream::connect(&listen).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(b"through the daemon").unwrap();
    let mut echoed = [0u8; 18];
    sock.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"through the daemon");
    // While the connection is open the daemon counts it as an active client proxy.
    let client = [("service", "echo"), ("role", "client")];
    let (m, body) = scrape(metrics);
    assert_eq!(sample(&m, "peerup_proxy_active_streams", &client), Some(1.0), "{body}");
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    sock.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    let counted = (0..100).any(|_| {
        let (m, _) = scrape(metrics);
        let rx = [("service", "echo"), ("role", "client"), ("direction", "rx")];
        let done = sample(&m, "peerup_proxy_active_streams", &client) == Some(0.0)
            && sample(&m, "peerup_proxy_bytes_total", &rx) == Some(18.0);
        if !done {
            std::thread::sleep(Duration::from_millis(20));
        }
        done
    });
    assert!(counted, "the closed proxy is no longer active and its bytes are counted");

    // `peerup ping` goes through the running daemon.
    let out = b.run(&["ping", &a_id, "-c", "2", "--interval", "100ms"]).ok();
    assert!(out.contains("via the daemon") && out.contains("2 received"), "{out}");
    let peers: Value = serde_json::from_str(&b.run(&["daemon", "peers", "--json"]).ok()).unwrap();
    let pa = peers.as_array().unwrap().iter().find(|p| p["id"] == a_id.as_str());
    let agent = pa.and_then(|p| p["agent_version"].as_str()).unwrap_or_default();
    assert!(agent.starts_with("peerup/"), "{peers}");
    // Paths say when each connection opened and, once libp2p's ping has run, its RTT.
    let with_rtt = (0..100).find_map(|_| {
        let (_, v) = call(&b, Some(&cookie), "GET", "/v1/paths", "");
        let found = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peer_id"] == a_id.as_str() && p["last_rtt_ms"].is_f64())
            .cloned();
        if found.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    });
    let path = with_rtt.expect("a path to alice with an RTT");
    let at = path["connected_at"].as_str().unwrap();
    assert!(at.parse::<jiff::Timestamp>().is_ok(), "{path}");
    // `daemon paths` shows what the API says: Go's columns, then the address and connected_at.
    let text = b.run(&["daemon", "paths"]).ok();
    let ip = path["ip_version"].as_str().unwrap();
    let shown = text.lines().any(|l| {
        l.starts_with(&a_id[..16])
            && l.contains(&format!("\t{ip}\trtt="))
            && l.ends_with(&format!("\t{at}"))
    });
    assert!(shown, "{text}");
    let out = b.run(&["daemon", "ping", &a_id, "-c", "1", "--json"]).ok();
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(first["rtt_ms"].as_f64().is_some(), "{out}");
    let resolved: Value = serde_json::from_str(&b.run(&["resolve", &a_id, "--json"]).ok()).unwrap();
    assert_eq!(
        (resolved["peer_id"].as_str(), resolved["source"].as_str()),
        (Some(a_id.as_str()), Some("peer_id"))
    );
    let trace: Value = serde_json::from_str(&b.run(&["traceroute", &a_id, "--json"]).ok()).unwrap();
    let hops = trace["hops"].as_array().unwrap();
    assert_eq!(hops.last().unwrap()["peer_id"], a_id.as_str(), "{trace}");
    assert!(hops.last().unwrap()["rtt_ms"].as_f64().is_some(), "{trace}");
    assert_eq!(hops.len(), if trace["path"] == "RELAYED" { 2 } else { 1 }, "{trace}");

    let (code, _) = call(&b, Some(&cookie), "DELETE", &format!("/v1/connect/{id}"), "");
    assert_eq!(code, 200);
    let (code, _) = call(&b, Some(&cookie), "DELETE", &format!("/v1/connect/{id}"), "");
    assert_eq!(code, 404);
    let closed = (0..100).any(|_| {
        let refused = std::net::TcpStream::connect(&listen).is_err();
        if !refused {
            std::thread::sleep(Duration::from_millis(20));
        }
        refused
    });
    assert!(closed, "the listener closes after disconnect");

    // The same through the CLI.
    let made: Value = serde_json::from_str(
        &b.run(&["daemon", "connect", "--peer", &a_id, "--service", "echo", "--json"]).ok(),
    )
    .unwrap();
    let listen = made["listen_address"].as_str().unwrap();
    let mut sock = std::net::TcpStream::connect(listen).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(b"cli").unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = String::new();
    sock.read_to_string(&mut back).unwrap();
    assert_eq!(back, "cli");
    let id = made["id"].as_str().unwrap();
    assert!(b.run(&["daemon", "disconnect", id]).ok().contains("Proxy disconnected."));
    let err = b.run(&["daemon", "disconnect", id]).fails();
    assert!(err.contains("proxy not found"), "{err}");

    // A service exposed through the API with allowed_peers serves only those peers.
    let a_cookie = a.read(".daemon-cookie");
    let echo = echo_server();
    for (name, allowed, serves) in [("only-other", PEER_A, false), ("only-b", b_id.as_str(), true)]
    {
        let req = format!(
            r#"{{"name":"{name}","local_address":"{echo}","allowed_peers":["{allowed}"]}}"#
        );
        assert_eq!(call(&a, Some(&a_cookie), "POST", "/v1/expose", &req).0, 200);
        let req = format!(r#"{{"peer":"{a_id}","service":"{name}","listen":"127.0.0.1:0"}}"#);
        let (code, v) = call(&b, Some(&cookie), "POST", "/v1/connect", &req);
        assert_eq!(code, 200, "{v}");
        let listen = v["data"]["listen_address"].as_str().unwrap();
        let mut sock = std::net::TcpStream::connect(listen).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let _ = sock.write_all(b"allowed?");
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let mut back = Vec::new();
        let _ = sock.read_to_end(&mut back);
        assert_eq!(back == b"allowed?", serves, "{name}: got {back:?}");
    }

    // The daemon's proxies carried bytes (above) and refused one, and printed none of it on the
    // daemon's stdout (`peerup proxy`'s `Connection <n>: …` lines): they log it instead.
    b.run(&["daemon", "stop"]).ok();
    let (code, out, err) = db.finish_split();
    assert_eq!(code, 0, "{out:#?}\n{err:#?}");
    let printed: Vec<&String> = out.iter().filter(|l| l.contains("Connection ")).collect();
    assert!(printed.is_empty(), "proxy lines on the daemon's stdout: {printed:#?}");
    let logged = |what: &str| err.iter().any(|l| l.contains(what) && l.contains("proxy=proxy-"));
    assert!(logged("proxy connection opened"), "{err:#?}");
    assert!(logged("proxy connection failed"), "{err:#?}");
    let _ = &mut relay;
}

/// Enables the metrics endpoint on a loopback port in `home`'s config.
fn enable_metrics(home: &Home) {
    let text = home.read("config.yaml")
        + "\ntelemetry:\n  metrics:\n    enabled: true\n    listen_address: \"127.0.0.1:0\"\n";
    std::fs::write(home.file("config.yaml"), text).unwrap();
}

/// Scrapes `/metrics` at `addr`; the parse fails unless it is valid exposition format.
pub(crate) fn scrape(addr: &str) -> (prometheus_parse::Scrape, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_string();
    let lines = body.lines().map(|l| Ok(l.to_string()));
    (prometheus_parse::Scrape::parse(lines).expect("valid exposition format"), body)
}

/// The value of the sample `metric` with `labels`, if any.
pub(crate) fn sample(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(n)
            | prometheus_parse::Value::Gauge(n)
            | prometheus_parse::Value::Untyped(n) => n,
            _ => f64::NAN,
        })
}

/// Every path and method in docs/daemon-api.yaml exists, and odd bodies never get a 5xx.
#[test]
fn documented_endpoints_exist_and_bad_bodies_are_4xx() {
    let doc_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/daemon-api.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(doc_path).unwrap()).unwrap();
    let home = Home::initialized();
    let _d = Daemon::start(&home);
    let cookie = home.read(".daemon-cookie");
    let t = Some(cookie.as_str());
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if path == "/v1/shutdown" {
                continue;
            }
            let concrete = path
                .replace("{peer_id}", "not-a-peer")
                .replace("{id}", "proxy-0")
                .replace("{name}", "nope");
            let bodies: &[&str] = if method == "post" {
                &["{}", "[]", "null", "{\"peer_id\":5,\"name\":[],\"peer\":{}}", "\u{0}\u{1}"]
            } else {
                &[""]
            };
            for body in bodies {
                let (code, v) = call(&home, t, &method.to_uppercase(), &concrete, body);
                assert!(code < 500, "{method} {concrete} {body:?}: {code} {v}");
                assert_ne!(code, 405, "{method} {path} is documented but not routed");
                assert!(
                    !(code == 404 && v["error"] == "no such endpoint"),
                    "{method} {path} is documented but not routed"
                );
                if code >= 400 {
                    assert!(v["error"].is_string(), "{method} {concrete}: error envelope: {v}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked, 15,
        "documented operations besides shutdown (the original 15, and config/reload)"
    );
    let (code, v) = call(&home, t, "POST", "/v1/shutdown", "");
    assert_eq!((code, v["data"]["status"].as_str()), (200, Some("shutting down")));
}

#[test]
fn metrics_endpoint_serves_valid_exposition() {
    let home = Home::initialized();
    enable_metrics(&home);
    let mut d = Daemon::spawn(&home, &["daemon"], &[], "Peer ID: ");
    let line = d.wait_line("Metrics: http://");
    d.wait_line("API: ");
    let addr = line.trim_start_matches("Metrics: http://").trim_end_matches("/metrics").to_string();
    let cookie = home.read(".daemon-cookie");
    assert_eq!(call(&home, Some(&cookie), "GET", "/v1/status", "").0, 200);

    let (scrape, body) = scrape(&addr);
    let status_requests = scrape.samples.iter().find(|s| {
        s.metric == "peerup_daemon_requests_total"
            && s.labels.get("path") == Some("/v1/status")
            && s.labels.get("status") == Some("200")
    });
    match status_requests.map(|s| &s.value) {
        // OpenMetrics names counter samples `<family>_total`, which the parser files as untyped.
        Some(prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n)) => {
            assert!(*n >= 1.0)
        }
        other => panic!("no counted /v1/status request: {other:?}\n{body}"),
    }
    assert!(scrape.samples.iter().any(|s| s.metric == "peerup_auth_denials_total"), "{body}");
    assert!(
        scrape.samples.iter().any(|s| s.metric.starts_with("libp2p_")),
        "rust-libp2p's own metrics: {body}"
    );
}
