//! `peerup doctor [--json]`: explains this machine's connectivity, one finding per line with a fix.
//!
//! Local checks (file modes, clock, expired authorized_keys entries) are in [`checks`]; the
//! network measurements come from [`peerup_core::doctor`], bounded by [`TIMEOUT`]. When a daemon
//! runs, its reservations are read from `/v1/status` instead of making one of our own.

mod checks;

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use jiff::Timestamp;
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::doctor::{self, DoctorConfig, Reach, RelayReport, Report, Reservation, Upnp};
use peerup_core::identity;
use serde::Serialize;
use serde_json::Value;

use self::checks::{Finding, Status};
use super::Ctx;
use crate::cli::DoctorArgs;
use crate::config::load::load_node_unchecked;
use crate::outln;
use crate::output::{self, bad, faint, ok, warn};

/// The whole network probe ends by then.
const TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Serialize)]
struct NatView {
    mapping: &'static str,
    basis: &'static str,
    observations: Vec<ObservationView>,
}

#[derive(Serialize)]
struct ObservationView {
    relay: String,
    observed: String,
}

#[derive(Serialize)]
struct ReachView {
    status: &'static str,
    address: Option<String>,
    connect_ms: Option<u64>,
    observed: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
struct ReservationView {
    status: &'static str,
    /// `daemon` (the running daemon's) or `probe` (made and released by the doctor).
    source: &'static str,
    circuit_duration_secs: Option<u64>,
    circuit_bytes: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct RelayView {
    peer_id: String,
    address: String,
    agent: Option<String>,
    tcp: ReachView,
    quic: ReachView,
    quic_second: ReachView,
    reservation: ReservationView,
}

#[derive(Serialize)]
struct HopView {
    ttl: u8,
    address: String,
}

#[derive(Serialize)]
struct GradeView {
    grade: String,
    label: &'static str,
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct DoctorView {
    peer_id: String,
    findings: Vec<Finding>,
    nat_mapping: NatView,
    cgnat: bool,
    double_nat: bool,
    hops: Vec<HopView>,
    public_ipv4: Vec<String>,
    public_ipv6: Vec<String>,
    upnp: &'static str,
    relays: Vec<RelayView>,
    grade: GradeView,
    elapsed_ms: u64,
}

pub(super) fn run(args: &DoctorArgs, ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    let loaded = load_node_unchecked(ctx.config_path())?;
    let c = &loaded.config;
    let mut findings = vec![checks::permissions("config_permissions", "config", &loaded.path)];
    findings.push(checks::permissions("key_permissions", "identity key", &c.identity.key_file));
    let keys_file = &c.security.authorized_keys_file;
    if keys_file.exists() {
        findings.push(checks::permissions(
            "authorized_keys_permissions",
            "authorized_keys",
            keys_file,
        ));
    }
    let binary_time = std::env::current_exe().and_then(|p| p.metadata()?.modified()).ok();
    findings.push(checks::clock(SystemTime::now(), binary_time));
    let text = std::fs::read_to_string(keys_file).unwrap_or_default();
    findings.extend(checks::expired_entries(&AuthorizedKeys::parse(&text), Timestamp::now()));

    // Read the key even if its mode is wrong: that is reported above, the probe still runs.
    let key_file = &c.identity.key_file;
    let bytes = std::fs::read(key_file)
        .with_context(|| format!("cannot read the identity key {}", key_file.display()))?;
    let keypair = identity::decode(key_file, &bytes)?;
    let peer_id = identity::peer_id(&keypair).to_string();
    let relays = crate::core_config::node_config_relays(&loaded)?;
    let daemon = crate::daemon::client::call_if_running(
        loaded.dir(),
        hyper::Method::GET,
        "/v1/status",
        None,
    )
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot ask the running daemon; probing without it");
        None
    });
    let config = DoctorConfig {
        keypair,
        relays,
        reserve: daemon.is_none(),
        upnp: !args.no_upnp,
        timeout: TIMEOUT,
    };
    let spinner = (!args.json.json).then(spinner);
    let report = crate::runtime::block_on_value(async { Ok(doctor::run(&config).await?) });
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let report = report?;
    let held = |r: &RelayReport| daemon.as_ref().map(|v| daemon_holds(v, r));
    findings.extend(checks::network(&report, &held));
    let view = view(peer_id, findings, &report, &held, started.elapsed());
    if args.json.json {
        return output::json(&view);
    }
    print_text(&view)
}

fn spinner() -> indicatif::ProgressBar {
    let s = indicatif::ProgressBar::new_spinner();
    s.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    s.set_message("probing relays, NAT and the path out…");
    s.enable_steady_tick(Duration::from_millis(100));
    s
}

/// Whether the daemon's `/v1/status` lists a circuit address through this relay.
fn daemon_holds(status: &Value, relay: &RelayReport) -> bool {
    let through = format!("/p2p/{}/p2p-circuit", relay.peer);
    status["relay_addresses"]
        .as_array()
        .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|s| s.contains(&through)))
}

fn reach_view(r: &Reach) -> ReachView {
    let (status, address, connect_ms, observed, error) = match r {
        Reach::Ok { addr, rtt, observed } => (
            "ok",
            Some(addr.to_string()),
            Some(rtt.as_millis() as u64),
            observed.as_ref().map(ToString::to_string),
            None,
        ),
        Reach::Failed { addr, reason } => {
            ("failed", Some(addr.to_string()), None, None, Some(reason.clone()))
        }
        Reach::NoEndpoint => ("no_endpoint", None, None, None, None),
        Reach::NotTried => ("not_tried", None, None, None, None),
    };
    ReachView { status, address, connect_ms, observed, error }
}

fn reservation_view(r: &RelayReport, held: Option<bool>) -> ReservationView {
    let mut v = ReservationView {
        status: "not_tried",
        source: "probe",
        circuit_duration_secs: None,
        circuit_bytes: None,
        error: None,
    };
    if let Reservation::NotAuthorized { node } = &r.reservation {
        v.status = "not_authorized";
        v.error = Some(peerup_core::relay::refusal_message(&r.peer, node));
        return v;
    }
    if let Some(held) = held {
        v.source = "daemon";
        v.status = if held { "accepted" } else { "none" };
        return v;
    }
    match &r.reservation {
        Reservation::Accepted { circuit_duration, circuit_bytes } => {
            v.status = "accepted";
            v.circuit_duration_secs = circuit_duration.map(|d| d.as_secs());
            v.circuit_bytes = *circuit_bytes;
        }
        Reservation::Refused(e) => {
            v.status = "refused";
            v.error = Some(e.clone());
        }
        Reservation::Unreachable => v.status = "unreachable",
        Reservation::TimedOut => v.status = "timed_out",
        Reservation::Pending | Reservation::NotTried | Reservation::NotAuthorized { .. } => {}
    }
    v
}

fn view(
    peer_id: String,
    findings: Vec<Finding>,
    report: &Report,
    held: &dyn Fn(&RelayReport) -> Option<bool>,
    elapsed: Duration,
) -> DoctorView {
    let grade = report.findings.grade();
    let m = &report.mapping;
    DoctorView {
        peer_id,
        findings,
        nat_mapping: NatView {
            mapping: m.mapping.as_str(),
            basis: match m.basis {
                doctor::Basis::TwoAddresses => "two_addresses",
                doctor::Basis::TwoPorts => "two_ports",
                doctor::Basis::OneEndpoint => "one_endpoint",
                doctor::Basis::Nothing => "none",
            },
            observations: m
                .observations
                .iter()
                .map(|o| ObservationView {
                    relay: o.relay.to_string(),
                    observed: o.observed.to_string(),
                })
                .collect(),
        },
        cgnat: report.findings.behind_cgnat(),
        double_nat: report.upstream.double_nat(),
        hops: report
            .hops
            .iter()
            .map(|h| HopView { ttl: h.ttl, address: h.addr.to_string() })
            .collect(),
        public_ipv4: checks::public(report, true),
        public_ipv6: checks::public(report, false),
        upnp: match report.upnp {
            Upnp::Found { .. } => "found",
            Upnp::NotFound => "not_found",
            Upnp::Skipped => "skipped",
        },
        relays: report
            .relays
            .iter()
            .map(|r| RelayView {
                peer_id: r.peer.to_string(),
                address: r.addr.to_string(),
                agent: r.agent.clone(),
                tcp: reach_view(&r.tcp),
                quic: reach_view(&r.quic),
                quic_second: reach_view(&r.quic_second),
                reservation: reservation_view(r, held(r)),
            })
            .collect(),
        grade: GradeView {
            grade: grade.grade.to_string(),
            label: grade.label,
            reasons: report.findings.reasons(),
        },
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

fn print_text(v: &DoctorView) -> Result<()> {
    outln!("peerup doctor for {}", v.peer_id)?;
    for f in &v.findings {
        let mark = match f.status {
            Status::Ok => ok("  ok "),
            Status::Info => faint(" info"),
            Status::Warn => warn(" warn"),
            Status::Fail => bad(" FAIL"),
        };
        let hint = f.hint.as_deref().map(|h| faint(format!("  (fix: {h})"))).unwrap_or_default();
        outln!("{mark}  {}{hint}", f.summary)?;
    }
    let g = &v.grade;
    let paint = match g.grade.as_str() {
        "A" | "B" => ok,
        "C" => warn,
        _ => bad,
    };
    outln!()?;
    outln!(
        "Reachability: {} ({})",
        paint(format!("{} {}", g.grade, g.label)),
        g.reasons.join("; ")
    )?;
    Ok(())
}
