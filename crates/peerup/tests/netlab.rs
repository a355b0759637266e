//! NAT-lab tests of the `peerup` binary: relay, daemon and proxy run inside the network namespaces
//! of `shared/netlab` (a public relay, peers behind cone, symmetric and double NATs) and carry
//! random payloads, checked by SHA-256, between Python echo servers and clients.
//!
//! Needs root, netlab and its packages (iproute2, nftables, python3), and openssh-server/-client
//! for the SSH test. Without them a test is skipped with a message on stderr, unless `CI` is set:
//! then it fails. Labs run one at a time (see `lab.rs`); each test uses its own prefix `pu<N>`.
//! Every process's output is kept in `target/tmp/netlab-logs/<prefix>/` and printed when a test
//! fails.
//!
//! ```sh
//! cargo test -p peerup --test netlab -- --nocapture        # as root
//! ```
#![cfg(target_os = "linux")]

#[macro_use]
#[path = "netlab/say.rs"]
mod say;

#[path = "netlab/config_apply.rs"]
mod config_apply;
#[path = "netlab/doctor.rs"]
mod doctor;
#[path = "netlab/harness.rs"]
mod harness;
#[path = "netlab/lab.rs"]
mod lab;
#[path = "netlab/network.rs"]
mod network;
#[path = "netlab/node.rs"]
mod node;
#[path = "netlab/pairing.rs"]
mod pairing;
#[path = "netlab/paths.rs"]
mod paths;
#[path = "netlab/proc.rs"]
mod proc;
#[path = "netlab/py.rs"]
mod py;
#[path = "netlab/security.rs"]
mod security;
#[path = "netlab/ssh.rs"]
mod ssh;

/// The lab and this harness work without peerup's networking (lab up/down, echo, capture, sshd).
#[test]
fn nat_lab_harness_selfcheck() {
    harness::harness_selfcheck();
}

/// bob (cone) -> alice (cone): byte-exact, and DIRECT within 10 s of the first connection.
#[test]
fn nat_cone_x_cone_direct() {
    paths::cone_x_cone_direct();
}

/// carol (symmetric) -> alice (cone): byte-exact over the relay.
#[test]
fn nat_symmetric_x_cone_relayed() {
    paths::symmetric_x_cone_relayed();
}

/// bob (cone) -> dave (double NAT behind CGNAT): byte-exact, path reported.
#[test]
fn nat_cgnat_x_cone() {
    paths::cgnat_x_cone();
}

/// OpenSSH through bob's proxy to sshd on alice.
#[test]
fn nat_cone_ssh() {
    security::cone_ssh();
}

/// Unauthorized peers, and peers outside a service's allowed_peers, are refused.
#[test]
fn nat_unauthorized_refused() {
    security::unauthorized_refused();
}

/// A capture on the relay host never sees the tunnel's plaintext.
#[test]
fn nat_relay_sees_only_ciphertext() {
    security::relay_sees_only_ciphertext();
}

/// Revoking a peer on a running daemon cuts its tunnel; adding it back needs no restart.
#[test]
fn nat_auth_remove_cuts_tunnel() {
    security::auth_remove_cuts_tunnel();
}

/// alice (cone NAT) invites, bob (another cone NAT, no config) joins, then reaches alice's service.
#[test]
fn nat_cone_x_cone_pairing() {
    pairing::invite_join_then_proxy();
}

/// `relay pair --count 3`: alice, bob (cone NATs) and dave (double NAT, CGNAT) join with no prior
/// config, run their daemons, and all ping each other.
#[test]
fn nat_group_of_three_pairing() {
    pairing::group_of_three();
}

/// alice's LAN is renumbered under her running daemon: tunnels work again within 15 s.
#[test]
fn nat_address_change_recovers() {
    network::address_change_recovers();
}

/// alice (cone NAT) applies a config with a broken relay and does not confirm it: her daemon reverts
/// by itself, reserves on the relay again, and bob and carol reach her service again.
#[test]
fn nat_unconfirmed_broken_relay_reverts() {
    config_apply::broken_relay_reverts();
}

/// `doctor --json`: alice (cone) endpoint-independent, carol (symmetric) endpoint-dependent, dave
/// double NAT behind CGNAT, pubpeer public; each with the grade that follows.
#[test]
fn nat_doctor_four_hosts() {
    doctor::four_hosts();
}
