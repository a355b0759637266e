//! Prometheus metrics of a node: what the tunnel carries, over which paths, and whom it refused.
//! The binary registers them (with its own API metrics) and serves `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `service`, `role` and `direction` (`rx`: received from the peer, `tx`: sent to it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceDirection {
    /// The service name.
    pub service: String,
    /// `server` (we expose the service) or `client` (a proxy to a peer's service).
    pub role: String,
    /// `rx` or `tx`.
    pub direction: String,
}

/// `service` and `role`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// The service name.
    pub service: String,
    /// `server` (we expose the service) or `client` (a proxy to a peer's service).
    pub role: String,
}

/// Which end of a proxied connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We expose the service: streams come in from peers.
    Server,
    /// A local proxy listener: we open streams to a peer's service.
    Client,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// One proxied connection being carried: counted as active until dropped.
pub struct ActiveProxy {
    metrics: Metrics,
    label: ServiceLabel,
}

impl ActiveProxy {
    /// Counts the bytes the connection moved (`rx` from the peer, `tx` to it).
    pub fn bytes(&self, rx: u64, tx: u64) {
        for (direction, n) in [("rx", rx), ("tx", tx)] {
            let labels = ServiceDirection {
                service: self.label.service.clone(),
                role: self.label.role.clone(),
                direction: direction.into(),
            };
            self.metrics.proxy_bytes.get_or_create(&labels).inc_by(n);
        }
    }
}

impl Drop for ActiveProxy {
    fn drop(&mut self) {
        self.metrics.proxy_active.get_or_create(&self.label).dec();
    }
}

/// `path_type`: `DIRECT` or `RELAYED`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// The path.
    pub path_type: String,
}

/// `result`: `success` or `failure`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The outcome.
    pub result: String,
}

/// `kind`: `reservation` or `circuit`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What was refused.
    pub kind: String,
}

/// `direction`: `rx` or `tx`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `rx` (received) or `tx` (sent).
    pub direction: String,
}

/// The node's metrics. Cloning shares them.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Bytes carried by service streams.
    pub proxy_bytes: Family<ServiceDirection, Counter>,
    /// Service streams being served.
    pub proxy_active: Family<ServiceLabel, Gauge>,
    /// Service streams served in total.
    pub proxy_streams: Family<ServiceLabel, Counter>,
    /// Open connections by path.
    pub connections: Family<PathLabel, Gauge>,
    /// Hole punching outcomes.
    pub holepunch: Family<ResultLabel, Counter>,
    /// Inbound connections and streams refused for lack of authorization.
    pub auth_denials: Counter,
    /// Proxied connections served on the bulk path (beside yamux).
    pub bulk_connections: Counter,
    /// Leg pairs a relay joined ([`crate::tunnel::legs`]).
    pub relay_legs: Counter,
    /// Reservations a relay server holds now.
    pub relay_reservations: Gauge,
    /// Reservations a relay server accepted (renewals not counted).
    pub relay_reservations_accepted: Counter,
    /// Circuits a relay server carries now.
    pub relay_circuits: Gauge,
    /// Circuits a relay server accepted.
    pub relay_circuits_accepted: Counter,
    /// Reservation and circuit requests a relay server refused, by `kind`.
    pub relay_denials: Family<KindLabel, Counter>,
    /// Bytes a relay server's libp2p connections received (`rx`) and sent (`tx`).
    pub relay_bytes: Family<DirectionLabel, Counter>,
    /// rust-libp2p's own metrics (connections, bandwidth per protocol, identify, kad, ping, relay,
    /// DCUtR), set once the metrics are registered.
    libp2p: std::sync::Arc<std::sync::OnceLock<libp2p::metrics::Metrics>>,
}

impl Metrics {
    /// Registers every metric under `peerup_…`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "peerup_proxy_bytes",
            "Bytes carried by service streams",
            self.proxy_bytes.clone(),
        );
        registry.register(
            "peerup_proxy_active_streams",
            "Proxied connections being carried, by service and role",
            self.proxy_active.clone(),
        );
        registry.register(
            "peerup_proxy_streams",
            "Proxied connections carried, by service and role",
            self.proxy_streams.clone(),
        );
        registry.register(
            "peerup_connections",
            "Open connections by path type",
            self.connections.clone(),
        );
        registry.register("peerup_holepunch", "Hole punching outcomes", self.holepunch.clone());
        registry.register(
            "peerup_bulk_connections",
            "Proxied connections served on the bulk path (own TLS connection beside yamux)",
            self.bulk_connections.clone(),
        );
        registry.register(
            "peerup_relay_legs",
            "Relayed bulk connections joined as two TCP legs (relay servers)",
            self.relay_legs.clone(),
        );
        registry.register(
            "peerup_relay_reservations",
            "Reservations this relay server holds now",
            self.relay_reservations.clone(),
        );
        registry.register(
            "peerup_relay_reservations_accepted",
            "Reservations this relay server accepted (renewals not counted)",
            self.relay_reservations_accepted.clone(),
        );
        registry.register(
            "peerup_relay_circuits",
            "Circuits this relay server carries now",
            self.relay_circuits.clone(),
        );
        registry.register(
            "peerup_relay_circuits_accepted",
            "Circuits this relay server accepted",
            self.relay_circuits_accepted.clone(),
        );
        registry.register(
            "peerup_relay_denials",
            "Reservation and circuit requests this relay server refused, by kind",
            self.relay_denials.clone(),
        );
        registry.register(
            "peerup_relay_bytes",
            "Bytes a relay server's libp2p connections received (rx) and sent (tx): its circuits \
             and its own protocols (relay legs not included)",
            self.relay_bytes.clone(),
        );
        registry.register(
            "peerup_auth_denials",
            "Connections and streams refused (not authorized)",
            self.auth_denials.clone(),
        );
        let _ = self
            .libp2p
            .set(libp2p::metrics::Metrics::new(registry.sub_registry_with_prefix("libp2p")));
    }

    /// rust-libp2p's recorder, once registered.
    pub(crate) fn libp2p(&self) -> Option<&libp2p::metrics::Metrics> {
        self.libp2p.get()
    }

    /// Counts a proxied connection of `service` starting; it counts as active until the returned
    /// guard is dropped.
    pub fn proxy(&self, service: &str, role: Role) -> ActiveProxy {
        let label = ServiceLabel { service: service.to_string(), role: role.as_str().to_string() };
        self.proxy_streams.get_or_create(&label).inc();
        self.proxy_active.get_or_create(&label).inc();
        ActiveProxy { metrics: self.clone(), label }
    }

    /// Counts a connection opening (`up`) or closing on its path.
    pub(crate) fn connection(&self, relayed: bool, up: bool) {
        let path_type = if relayed { "RELAYED" } else { "DIRECT" }.to_string();
        let gauge = self.connections.get_or_create(&PathLabel { path_type });
        if up {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    /// The counters of a relay server's bytes.
    pub(crate) fn relay_bytes(&self) -> crate::transport::counted::Bytes {
        let get = |d: &str| {
            self.relay_bytes.get_or_create(&DirectionLabel { direction: d.into() }).clone()
        };
        crate::transport::counted::Bytes { rx: get("rx"), tx: get("tx") }
    }

    /// Counts what the relay server did.
    pub(crate) fn relay_event(&self, event: &libp2p::relay::Event) {
        use libp2p::relay::Event;
        let denied = |kind: &str| {
            self.relay_denials.get_or_create(&KindLabel { kind: kind.into() }).inc();
        };
        match event {
            Event::ReservationReqAccepted { renewed: false, .. } => {
                self.relay_reservations.inc();
                self.relay_reservations_accepted.inc();
            }
            Event::ReservationClosed { .. } | Event::ReservationTimedOut { .. } => {
                self.relay_reservations.dec();
            }
            Event::ReservationReqDenied { .. } => denied("reservation"),
            Event::CircuitReqAccepted { .. } => {
                self.relay_circuits.inc();
                self.relay_circuits_accepted.inc();
            }
            Event::CircuitClosed { .. } => {
                self.relay_circuits.dec();
            }
            Event::CircuitReqDenied { .. } => denied("circuit"),
            _ => {}
        }
    }

    /// Counts a hole punching outcome.
    pub(crate) fn holepunch(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" }.to_string();
        self.holepunch.get_or_create(&ResultLabel { result }).inc();
    }
}
