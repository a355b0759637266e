//! Pairing through a gated relay on loopback: the rendezvous, probation for unknown joiners (who
//! still get no reservation and no circuit), a wrong code and the burn after three.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::gate::{AccessList, Probation};
use peerup_core::node::{Node, NodeConfig, NodeEvent};
use peerup_core::pairing::GROUP_INTRO;
use peerup_core::pairing::code::Password;
use peerup_core::pairing::group::{GroupError, GroupSpec};
use peerup_core::pairing::rendezvous::{self, RendezvousConfig};
use peerup_core::pairing::session::{self, Invite, InviteProgress, Join, PairError};
use peerup_core::pairing::wire::{self, Message};
use peerup_core::relay::RelayLimits;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/events.rs"]
mod events;
use events::{WAIT, wait_for};

struct Lab {
    cancel: CancellationToken,
    tracker: TaskTracker,
    relay: PeerId,
    relay_addr: Multiaddr,
    relay_access: AccessList,
    rendezvous: rendezvous::Rendezvous,
    probation: Probation,
    admitted: Arc<Mutex<Vec<PeerId>>>,
}

impl Lab {
    /// A gated relay that authorizes `members`, with probation and the rendezvous.
    async fn start(members: &[PeerId]) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut keys = AuthorizedKeys::default();
        for p in members {
            keys.add(Entry::new(*p, None)).unwrap();
        }
        let access = AccessList::from_keys(&keys);
        let probation = Probation::new(4, Duration::from_secs(30));
        let relay_key = Keypair::generate_ed25519();
        let mut cfg = NodeConfig::new(relay_key.clone());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.relay_server = Some(RelayLimits::default());
        cfg.listen_addrs_are_external = true;
        cfg.enable_dht = false;
        cfg.access = access.clone();
        cfg.probation = Some(probation.clone());
        let (relay, mut ev) = Node::spawn(cfg, cancel.clone(), &tracker).unwrap();
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let (list, seen) = (access.clone(), admitted.clone());
        let keys = Arc::new(Mutex::new(keys));
        let hook: rendezvous::AdmitHook = Arc::new(move |a: rendezvous::Admission| {
            let joiner = a.joiner;
            seen.lock().unwrap().push(joiner);
            let mut k = keys.lock().unwrap();
            k.add(Entry::new(joiner, Some("paired"))).map_err(|e| e.to_string())?;
            list.replace(&k);
            Ok(())
        });
        let rv = RendezvousConfig {
            keypair: relay_key,
            access: access.clone(),
            probation: Some(probation.clone()),
            admit: Some(hook),
        };
        let rendezvous = rendezvous::serve(&relay, rv, cancel.clone(), &tracker);
        let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(_))).await {
            NodeEvent::Listening(a) => a,
            _ => unreachable!(),
        };
        Self {
            relay: relay.peer_id(),
            relay_addr: addr.with(Protocol::P2p(relay.peer_id())),
            relay_access: access,
            rendezvous,
            probation,
            admitted,
            cancel,
            tracker,
        }
    }

    fn node(&self, key: Keypair, reserve: bool) -> (Node, broadcast::Receiver<NodeEvent>) {
        let mut cfg = NodeConfig::new(key);
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.relays = vec![self.relay_addr.clone()];
        cfg.enable_dht = false;
        cfg.reserve = reserve;
        Node::spawn(cfg, self.cancel.clone(), &self.tracker).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn invite(lab: &Lab, key: Keypair, pw: u64, ttl: Duration) -> Invite {
    Invite {
        relay: lab.relay,
        slot: 77,
        password: Password::from_bits(pw),
        keypair: key,
        name: "alice".into(),
        expires: tokio::time::Instant::now() + ttl,
    }
}

fn join(lab: &Lab, key: Keypair, pw: u64) -> Join {
    Join {
        relay: lab.relay,
        slot: 77,
        password: Password::from_bits(pw),
        keypair: key,
        name: "bob".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_and_join_through_the_relay_then_bob_may_use_it() {
    let (alice_key, bob_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (alice_id, bob_id) = (alice_key.public().to_peer_id(), bob_key.public().to_peer_id());
    let lab = Lab::start(&[alice_id]).await;
    let (alice, _) = lab.node(alice_key.clone(), false);
    let (bob, _) = lab.node(bob_key.clone(), false);
    let inv = invite(&lab, alice_key, 1234, WAIT);
    let (waiting_tx, mut waiting_rx) = tokio::sync::mpsc::channel(4);
    let inviter = tokio::spawn(async move {
        session::invite(
            &alice,
            &inv,
            |p| {
                if p == InviteProgress::Waiting {
                    let _ = waiting_tx.try_send(());
                }
            },
            |_| Ok(()),
        )
        .await
    });
    if waiting_rx.recv().await.is_none() {
        panic!("invite ended: {:?}", inviter.await);
    }
    let joined = session::join(&bob, join(&lab, bob_key, 1234), |_| Ok(())).await.unwrap();
    assert_eq!((joined.paired.peer, joined.paired.name.as_str()), (alice_id, "alice"));
    assert!(joined.group.is_none());
    let invited = inviter.await.unwrap().unwrap();
    assert_eq!((invited.paired.peer, invited.paired.name.as_str()), (bob_id, "bob"));
    assert_eq!(invited.admitted, Ok(()));
    assert_eq!(*lab.admitted.lock().unwrap(), vec![bob_id]);
    assert!(lab.relay_access.is_allowed(&bob_id), "the relay now authorizes bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_peer_on_probation_gets_no_reservation_and_no_circuit() {
    let member_key = Keypair::generate_ed25519();
    let member = member_key.public().to_peer_id();
    let lab = Lab::start(&[member]).await;
    let (_m, mut mev) = lab.node(member_key, true);
    wait_for(&mut mev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;

    // No slot open: an unknown peer cannot even connect.
    let (stranger, mut sev) = lab.node(Keypair::generate_ed25519(), true);
    wait_for(&mut sev, |e| matches!(e, NodeEvent::ReservationLost { .. })).await;

    // With a slot open it is admitted on probation, but the reservation is refused...
    lab.probation.set_open_slots(1);
    let (stranger2, mut sev2) = lab.node(Keypair::generate_ed25519(), true);
    let relay = lab.relay;
    wait_for(&mut sev2, |e| matches!(e, NodeEvent::Identified { peer, .. } if *peer == relay))
        .await;
    match wait_for(&mut sev2, |e| {
        matches!(e, NodeEvent::ReservationLost { .. } | NodeEvent::ReservationAccepted { .. })
    })
    .await
    {
        NodeEvent::ReservationLost { reason, .. } => {
            assert!(!reason.is_empty());
        }
        other => panic!("an unknown peer got a reservation: {other:?}"),
    }
    // ...and so is a circuit to the member.
    let err = stranger2
        .open_stream(member, libp2p::StreamProtocol::new("/pingpong/1.0.0"))
        .await
        .expect_err("an unknown peer opened a circuit");
    assert!(!err.to_string().is_empty());
    drop(stranger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_fail_and_the_third_burns_the_invite() {
    let alice_key = Keypair::generate_ed25519();
    let lab = Lab::start(&[alice_key.public().to_peer_id()]).await;
    let (alice, _) = lab.node(alice_key.clone(), false);
    let inv = invite(&lab, alice_key, 1234, WAIT);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let inviter = tokio::spawn(async move {
        session::invite(&alice, &inv, |p| drop(tx.try_send(p)), |_| Ok(())).await
    });
    let bob_key = Keypair::generate_ed25519();
    let (bob, _) = lab.node(bob_key.clone(), false);
    for n in 1..=3 {
        while rx.recv().await.unwrap() != InviteProgress::Waiting {}
        let err = session::join(&bob, join(&lab, bob_key.clone(), 999), |_| Ok(()))
            .await
            .expect_err("a wrong code paired");
        assert!(err.to_string().contains("does not match"), "attempt {n}: {err}");
    }
    assert!(matches!(inviter.await.unwrap(), Err(PairError::Burnt)));
    // The right code no longer works.
    let err = session::join(&bob, join(&lab, bob_key, 1234), |_| Ok(())).await.unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    assert!(lab.admitted.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_ends_mutually_introduced() {
    let lab = Lab::start(&[]).await;
    let group = lab
        .rendezvous
        .create_group(GroupSpec { count: 3, ttl: WAIT, member_expires: None })
        .unwrap();
    let mut intros = Vec::new();
    let mut ids = Vec::new();
    for (i, (slot, password)) in group.codes.iter().enumerate() {
        let key = Keypair::generate_ed25519();
        ids.push(key.public().to_peer_id());
        let (node, _) = lab.node(key.clone(), false);
        intros.push(node.accept(libp2p::StreamProtocol::new(GROUP_INTRO)));
        let j = Join {
            relay: lab.relay,
            slot: *slot,
            password: *password,
            keypair: key,
            name: format!("m{i}"),
        };
        let joined = session::join(&node, j, |_| Ok(())).await;
        let joined = joined.unwrap_or_else(|e| panic!("member {i}: {e}"));
        assert_eq!(joined.paired.peer, lab.relay, "the relay is the PAKE peer");
        let (id, members) = joined.group.unwrap();
        assert_eq!(id, group.id);
        let got: Vec<PeerId> = members.iter().map(|(p, _)| *p).collect();
        assert_eq!(got, ids[..i], "member {i} learns the earlier members");
        std::mem::forget(node); // keep it connected for the introductions
    }
    // The first member hears of both later ones, the second of the third.
    for (i, rx) in intros.iter_mut().enumerate().take(2) {
        let mut heard = std::collections::HashSet::new();
        while heard.len() < 2 {
            let mut s = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
            assert_eq!(s.peer, lab.relay);
            match wire::read(&mut s.stream).await.unwrap() {
                Message::Introduce { group: g, peers } => {
                    assert_eq!(g, group.id);
                    heard.extend(peers.into_iter().map(|(p, _)| p));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let others: std::collections::HashSet<PeerId> =
            ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
        assert_eq!(heard, others, "member {i}");
    }
    assert_eq!(lab.admitted.lock().unwrap().len(), 3);
    let info = lab.rendezvous.groups();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].members.len(), 3);
    assert!(lab.rendezvous.revoke(group.id));
    assert!(lab.rendezvous.groups().is_empty());
}

/// Waits until an invite is registered and waiting for its joiner.
async fn invite_waiting(
    node: Node,
    inv: Invite,
) -> tokio::task::JoinHandle<Result<session::Invited, PairError>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let inviter = tokio::spawn(async move {
        session::invite(
            &node,
            &inv,
            |p| {
                if p == InviteProgress::Waiting {
                    let _ = tx.try_send(());
                }
            },
            |_| Ok(()),
        )
        .await
    });
    if tokio::time::timeout(WAIT, rx.recv()).await.ok().flatten().is_none() {
        panic!("invite ended: {:?}", inviter.await);
    }
    inviter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inviter_removed_after_inviting_admits_no_one() {
    let (alice_key, bob_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let bob_id = bob_key.public().to_peer_id();
    let lab = Lab::start(&[alice_key.public().to_peer_id()]).await;
    let (alice, _) = lab.node(alice_key.clone(), false);
    let (bob, _) = lab.node(bob_key.clone(), false);
    let inviter = invite_waiting(alice, invite(&lab, alice_key, 1234, WAIT)).await;
    // The operator removes alice while her invite is open (her connection stays up).
    lab.relay_access.replace(&AuthorizedKeys::default());
    session::join(&bob, join(&lab, bob_key, 1234), |_| Ok(())).await.unwrap();
    let invited = inviter.await.unwrap().unwrap();
    let refused = invited.admitted.expect_err("the relay admitted bob on a removed inviter's word");
    assert!(refused.contains("no longer authorized"), "{refused}");
    assert!(lab.admitted.lock().unwrap().is_empty(), "the admit hook was not called");
    assert!(!lab.relay_access.is_allowed(&bob_id));
}

/// One request on its own rendezvous stream, and the answer.
async fn request(node: &Node, relay: PeerId, msg: &Message) -> Result<Message, String> {
    let (mut s, _) = node
        .open_stream(relay, libp2p::StreamProtocol::new(peerup_core::pairing::PAIR_RENDEZVOUS))
        .await
        .map_err(|e| e.to_string())?;
    wire::write(&mut s, msg).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(WAIT, wire::read(&mut s)).await.map_err(|e| e.to_string())?;
    answer.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_rendezvous_stream() {
    use peerup_core::pairing::rendezvous::MAX_STREAMS_PER_PEER;
    let alice_key = Keypair::generate_ed25519();
    let lab = Lab::start(&[alice_key.public().to_peer_id()]).await;
    let (alice, _) = lab.node(alice_key, false);
    // Registered slots hold their streams open: the relay has counted each of them.
    let mut held = Vec::new();
    for slot in 0..MAX_STREAMS_PER_PEER as u32 {
        let (mut s, _) = alice
            .open_stream(
                lab.relay,
                libp2p::StreamProtocol::new(peerup_core::pairing::PAIR_RENDEZVOUS),
            )
            .await
            .unwrap();
        wire::write(&mut s, &Message::Register { slot: 1000 + slot, ttl_secs: 60 }).await.unwrap();
        assert_eq!(wire::read(&mut s).await.unwrap(), Message::Registered, "slot {slot}");
        held.push(s);
    }
    let release = Message::Release { slot: 1 };
    let over = request(&alice, lab.relay, &release).await;
    assert!(over.is_err(), "one stream over the per-peer cap was served: {over:?}");
    // Someone else is still served: the global limit is far from used up.
    let (bob, _) = lab.node(Keypair::generate_ed25519(), false);
    assert_eq!(request(&bob, lab.relay, &release).await, Ok(Message::Ok));
    // Once alice's streams end, her count goes back down.
    drop(held);
    let served = tokio::time::timeout(WAIT, async {
        loop {
            if request(&alice, lab.relay, &release).await == Ok(Message::Ok) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "alice was never served again");
}

/// Joins `lab`'s group with `code`, announcing `name`; returns the node (kept connected), its
/// introductions and what it was told.
async fn join_group(
    lab: &Lab,
    code: (u32, Password),
    name: &str,
) -> (Node, tokio::sync::mpsc::Receiver<peerup_core::streams::IncomingStream>, session::Joined) {
    let key = Keypair::generate_ed25519();
    let (node, _) = lab.node(key.clone(), false);
    let intros = node.accept(libp2p::StreamProtocol::new(GROUP_INTRO));
    let j =
        Join { relay: lab.relay, slot: code.0, password: code.1, keypair: key, name: name.into() };
    let joined = session::join(&node, j, |_| Ok(())).await.unwrap();
    (node, intros, joined)
}

async fn next_intro(
    rx: &mut tokio::sync::mpsc::Receiver<peerup_core::streams::IncomingStream>,
) -> Vec<(PeerId, String)> {
    let mut s = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    match wire::read(&mut s.stream).await.unwrap() {
        Message::Introduce { peers, .. } => peers,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_do_not_share_a_name_and_the_group_outlives_its_codes() {
    let lab = Lab::start(&[]).await;
    let ttl = Duration::from_secs(4);
    let absurd = Some(Duration::from_secs(10_000 * 365 * 24 * 3600));
    let refused = lab.rendezvous.create_group(GroupSpec { count: 1, ttl, member_expires: absurd });
    assert_eq!(refused.err(), Some(GroupError::BadExpires), "no membership beyond 3650 days");
    let group =
        lab.rendezvous.create_group(GroupSpec { count: 3, ttl, member_expires: None }).unwrap();
    let (first, mut first_intros, _) = join_group(&lab, group.codes[0], "alice").await;
    let (second, _, joined) = join_group(&lab, group.codes[1], "alice").await;
    let second_id = second.peer_id();
    // The second "alice" is told of the first under the name it has; the first hears of the
    // second under a distinct one.
    assert_eq!(joined.group.unwrap().1, vec![(first.peer_id(), "alice".to_string())]);
    assert_eq!(next_intro(&mut first_intros).await, vec![(second_id, "alice-2".to_string())]);

    // The codes expire (the third is never used); the group stays for its members.
    let expired = tokio::time::timeout(WAIT, async {
        while lab.rendezvous.groups().iter().any(|g| !g.expires_in.is_zero()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(expired.is_ok(), "the codes never expired");
    let info = lab.rendezvous.groups();
    assert_eq!(info.len(), 1, "the group was dropped with its codes");
    let names: Vec<&str> = info[0].members.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["alice", "alice-2"]);
    // A member reconnecting after that still hears of the others.
    lab.rendezvous.member_connected(first.peer_id());
    assert_eq!(next_intro(&mut first_intros).await, vec![(second_id, "alice-2".to_string())]);
    let err = session::join(
        &second,
        Join {
            relay: lab.relay,
            slot: group.codes[2].0,
            password: group.codes[2].1,
            keypair: Keypair::generate_ed25519(),
            name: "late".into(),
        },
        |_| Ok(()),
    )
    .await
    .expect_err("an expired code worked");
    assert!(err.to_string().contains("no invite is waiting"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_names_from_a_relay_are_sanitized_on_receipt() {
    use peerup_core::pairing::pake::{Handshake, Role};
    // A hostile relay: the PAKE peer of a group code, sending whatever names it likes.
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let relay_key = Keypair::generate_ed25519();
    let relay_id = relay_key.public().to_peer_id();
    let mut cfg = NodeConfig::new(relay_key.clone());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.enable_dht = false;
    let (relay, mut ev) = Node::spawn(cfg, cancel.clone(), &tracker).unwrap();
    let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(_))).await {
        NodeEvent::Listening(a) => a.with(Protocol::P2p(relay_id)),
        _ => unreachable!(),
    };
    let mut incoming =
        relay.accept(libp2p::StreamProtocol::new(peerup_core::pairing::PAIR_RENDEZVOUS));
    let (member, victim) = (PeerId::random(), PeerId::random());
    let bob_key = Keypair::generate_ed25519();
    let bob_id = bob_key.public().to_peer_id();
    let password = Password::from_bits(77);
    tokio::spawn(async move {
        let mut s = incoming.recv().await.unwrap();
        let Message::Join { slot } = wire::read(&mut s.stream).await.unwrap() else { panic!() };
        wire::write(&mut s.stream, &Message::Matched).await.unwrap();
        let (hs, hello) = Handshake::start(Role::Inviter, password, &relay_id, slot, relay_key);
        wire::write(&mut s.stream, &hello).await.unwrap();
        let keyed = hs.receive_hello(&wire::read(&mut s.stream).await.unwrap()).unwrap();
        wire::write(&mut s.stream, &keyed.confirm("relay")).await.unwrap();
        keyed.verify(&wire::read(&mut s.stream).await.unwrap()).unwrap();
        let peers = vec![
            (member, "a b".to_string()),
            (victim, victim.to_string()),
            (bob_id, "bob".to_string()),
        ];
        wire::write(&mut s.stream, &Message::Members { group: 5, peers }).await.unwrap();
        wire::write(&mut s.stream, &Message::Done).await.unwrap();
        let mut rest = Vec::new();
        let _ = futures::AsyncReadExt::read_to_end(&mut s.stream, &mut rest).await;
        drop(relay);
    });
    let mut cfg = NodeConfig::new(bob_key.clone());
    cfg.enable_dht = false;
    let (bob, _) = Node::spawn(cfg, cancel.clone(), &tracker).unwrap();
    assert_eq!(bob.connect(addr).await.unwrap(), relay_id);
    let j = Join { relay: relay_id, slot: 3, password, keypair: bob_key, name: "bob".into() };
    let joined = session::join(&bob, j, |_| Ok(())).await.unwrap();
    let (group, members) = joined.group.unwrap();
    assert_eq!(group, 5);
    assert_eq!(members, vec![(member, "ab".to_string()), (victim, String::new())]);
    cancel.cancel();
}
