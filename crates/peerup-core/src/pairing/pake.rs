//! The pairing handshake: SPAKE2 (Ed25519 group, symmetric) keyed by the code's password, then key
//! confirmation and proof of each side's identity key.
//!
//! 1. Both sides send [`Message::Hello`]: role, SPAKE2 message, libp2p public key.
//! 2. The transcript hash `th` = SHA-256 over the protocol label, the relay's peer ID, the slot and
//!    both Hellos (inviter's first). Each side derives a confirmation key per role from the SPAKE2
//!    key with HKDF-SHA256 (salt `th`).
//! 3. Both sides send [`Message::Confirm`]: an HMAC-SHA256 over `th` and the announced name, and an
//!    Ed25519 signature by the identity key over the role, `th` and the name.
//!
//! Anyone who changes a Hello (say, a relay substituting its own public key) changes `th` on one
//! side only, so the MACs fail; anyone without the password cannot produce a valid MAC at all, and
//! learns from a failed attempt only that one guessed password was wrong.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password as SpakePassword, Spake2};

use super::code::{Password, Slot};
use super::wire::{MAX_NAME, Message};

const LABEL: &[u8] = b"peerup-pair/1";

/// Which side of a pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Made the code.
    Inviter,
    /// Typed the code.
    Joiner,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Inviter => 0,
            Role::Joiner => 1,
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Inviter => Role::Joiner,
            Role::Joiner => Role::Inviter,
        }
    }
}

/// The handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PakeError {
    /// The other side's message was not what this step expects.
    #[error("unexpected message from the other side: {0}")]
    Unexpected(&'static str),
    /// The other side's public key is not a usable Ed25519 key.
    #[error("the other side sent an invalid public key")]
    BadKey,
    /// The SPAKE2 message was malformed.
    #[error("the other side sent an invalid key exchange message")]
    BadSpake,
    /// Key confirmation failed: a wrong code, or someone tampered with the exchange.
    #[error("the code does not match (key confirmation failed)")]
    WrongCode,
    /// The MAC was right but the identity signature was not.
    #[error("the other side did not prove its identity key")]
    BadSignature,
}

/// The result of a pairing: who the other side is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// Its peer ID, proven by the handshake.
    pub peer: PeerId,
    /// The name it announced for itself (sanitized; may be empty).
    pub name: String,
}

/// A handshake after our Hello was sent.
pub struct Handshake {
    role: Role,
    keypair: Keypair,
    spake: Spake2<Ed25519Group>,
    context: Vec<u8>,
    hello: Message,
}

/// A handshake after both Hellos: ready to confirm.
pub struct Keyed {
    role: Role,
    keypair: Keypair,
    th: [u8; 32],
    mine: [u8; 32],
    theirs: [u8; 32],
    their_key: PublicKey,
}

fn spake_identity(relay: &PeerId, slot: Slot) -> Vec<u8> {
    let mut id = LABEL.to_vec();
    id.extend(relay.to_bytes());
    id.extend(slot.to_be_bytes());
    id
}

fn signed_bytes(role: Role, th: &[u8; 32], name: &str) -> Vec<u8> {
    let mut m = LABEL.to_vec();
    m.extend(b" identity");
    m.push(role.byte());
    m.extend(th);
    m.extend(name.as_bytes());
    m
}

fn mac(key: &[u8; 32], th: &[u8; 32], name: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; 32 bytes cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(th);
    m.update(name.as_bytes());
    m
}

/// Keeps `[A-Za-z0-9._-]`, at most [`MAX_NAME`] bytes. A name that would parse as a peer ID
/// becomes empty (no name): as a `names:` key it would stand in for the peer it spells, so a peer
/// announcing `12D3KooW<victim>` would receive what is meant for the victim.
pub fn sanitize_name(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_NAME)
        .collect();
    if is_peer_id(&name) { String::new() } else { name }
}

/// Whether `text` parses as a peer ID (such text is never a name).
pub fn is_peer_id(text: &str) -> bool {
    text.parse::<PeerId>().is_ok()
}

impl Handshake {
    /// Starts a handshake; the returned Hello goes to the other side.
    pub fn start(
        role: Role,
        password: Password,
        relay: &PeerId,
        slot: Slot,
        keypair: Keypair,
    ) -> (Self, Message) {
        let context = spake_identity(relay, slot);
        let mut pw = context.clone();
        pw.extend(password.to_bytes());
        let (spake, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &SpakePassword::new(&pw),
            &Identity::new(&context),
        );
        let hello = Message::Hello {
            role: role.byte(),
            spake: msg,
            public_key: keypair.public().encode_protobuf(),
        };
        (Self { role, keypair, spake, context, hello: hello.clone() }, hello)
    }

    /// Takes the other side's Hello.
    pub fn receive_hello(self, theirs: &Message) -> Result<Keyed, PakeError> {
        let Message::Hello { role, spake, public_key } = theirs else {
            return Err(PakeError::Unexpected("expected hello"));
        };
        if *role != self.role.other().byte() {
            return Err(PakeError::Unexpected("hello from the wrong role"));
        }
        let their_key =
            PublicKey::try_decode_protobuf(public_key).map_err(|_| PakeError::BadKey)?;
        if their_key.clone().try_into_ed25519().is_err() {
            return Err(PakeError::BadKey);
        }
        let key = self.spake.finish(spake).map_err(|_| PakeError::BadSpake)?;
        let (first, second) = match self.role {
            Role::Inviter => (&self.hello, theirs),
            Role::Joiner => (theirs, &self.hello),
        };
        let mut h = Sha256::new();
        h.update(LABEL);
        h.update(&self.context);
        for m in [first, second] {
            let bytes = m.encode();
            h.update((bytes.len() as u32).to_be_bytes());
            h.update(&bytes);
        }
        let th: [u8; 32] = h.finalize().into();
        let hk = Hkdf::<Sha256>::new(Some(&th), &key);
        let derive = |role: Role| {
            let mut k = [0u8; 32];
            let info = [LABEL, b" confirm", &[role.byte()]].concat();
            // 32 bytes is far below HKDF-SHA256's limit.
            hk.expand(&info, &mut k).unwrap_or_else(|_| unreachable!("32-byte HKDF output"));
            k
        };
        Ok(Keyed {
            role: self.role,
            keypair: self.keypair,
            th,
            mine: derive(self.role),
            theirs: derive(self.role.other()),
            their_key,
        })
    }
}

impl Keyed {
    /// Our Confirm, announcing `name`.
    pub fn confirm(&self, name: &str) -> Message {
        self.confirm_raw(&sanitize_name(name))
    }

    /// A Confirm for `name` as given.
    fn confirm_raw(&self, name: &str) -> Message {
        let name = name.to_string();
        let mac: [u8; 32] = mac(&self.mine, &self.th, &name).finalize().into_bytes().into();
        let signature =
            self.keypair.sign(&signed_bytes(self.role, &self.th, &name)).unwrap_or_default();
        Message::Confirm { mac, signature, name }
    }

    /// Checks the other side's Confirm.
    pub fn verify(&self, theirs: &Message) -> Result<Paired, PakeError> {
        let Message::Confirm { mac: their_mac, signature, name } = theirs else {
            return Err(PakeError::Unexpected("expected confirm"));
        };
        mac(&self.theirs, &self.th, name)
            .verify_slice(their_mac)
            .map_err(|_| PakeError::WrongCode)?;
        if !self.their_key.verify(&signed_bytes(self.role.other(), &self.th, name), signature) {
            return Err(PakeError::BadSignature);
        }
        Ok(Paired { peer: self.their_key.to_peer_id(), name: sanitize_name(name) })
    }

    /// The transcript hash (both sides agree on it after a successful handshake).
    pub fn transcript(&self) -> [u8; 32] {
        self.th
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        pw_i: u64,
        pw_j: u64,
        tamper: impl FnOnce(&mut Message),
    ) -> (Result<Paired, PakeError>, Result<Paired, PakeError>, PeerId, PeerId) {
        let relay = PeerId::random();
        let (ki, kj) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (idi, idj) = (ki.public().to_peer_id(), kj.public().to_peer_id());
        let (i, hi) = Handshake::start(Role::Inviter, Password::from_bits(pw_i), &relay, 9, ki);
        let (j, mut hj) = Handshake::start(Role::Joiner, Password::from_bits(pw_j), &relay, 9, kj);
        tamper(&mut hj);
        let i = i.receive_hello(&hj).unwrap();
        let j = j.receive_hello(&hi).unwrap();
        let (ci, cj) = (i.confirm("alice"), j.confirm("bob laptop!"));
        (i.verify(&cj), j.verify(&ci), idi, idj)
    }

    #[test]
    fn same_password_pairs_with_proven_ids() {
        let (at_inviter, at_joiner, idi, idj) = run(42, 42, |_| {});
        assert_eq!(at_inviter.unwrap(), Paired { peer: idj, name: "boblaptop".into() });
        assert_eq!(at_joiner.unwrap(), Paired { peer: idi, name: "alice".into() });
    }

    #[test]
    fn a_name_shaped_like_a_peer_id_is_dropped() {
        let victim = PeerId::random().to_string();
        assert_eq!(sanitize_name(&victim), "");
        assert_eq!(sanitize_name(&format!(" {victim}\n")), "", "after filtering too");
        let legacy = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
        assert!(is_peer_id(legacy));
        assert_eq!(sanitize_name(legacy), "");
        assert_eq!(sanitize_name("12D3KooW"), "12D3KooW", "a prefix is a name");
        assert_eq!(sanitize_name("bob laptop"), "boblaptop");

        // Through the handshake: the spoofed name does not arrive.
        let relay = PeerId::random();
        let pw = Password::from_bits(5);
        let (i, hi) = Handshake::start(Role::Inviter, pw, &relay, 1, Keypair::generate_ed25519());
        let (j, hj) = Handshake::start(Role::Joiner, pw, &relay, 1, Keypair::generate_ed25519());
        let (i, j) = (i.receive_hello(&hj).unwrap(), j.receive_hello(&hi).unwrap());
        // A joiner that MACs and signs the raw name (a hostile one skips sanitizing).
        let forged = j.confirm_raw(&victim);
        assert_eq!(i.verify(&forged).unwrap().name, "");
    }

    #[test]
    fn wrong_password_fails_on_both_sides() {
        let (a, b, _, _) = run(42, 43, |_| {});
        assert_eq!(a, Err(PakeError::WrongCode));
        assert_eq!(b, Err(PakeError::WrongCode));
    }

    #[test]
    fn a_substituted_public_key_fails_confirmation() {
        // A man in the middle (the relay) swaps the joiner's key for its own.
        let mallory = Keypair::generate_ed25519().public().encode_protobuf();
        let (a, b, _, _) = run(42, 42, |m| {
            if let Message::Hello { public_key, .. } = m {
                *public_key = mallory;
            }
        });
        assert_eq!(a, Err(PakeError::WrongCode));
        assert_eq!(b, Err(PakeError::WrongCode));
    }

    #[test]
    fn a_confirm_signed_by_another_key_fails() {
        let relay = PeerId::random();
        let pw = Password::from_bits(5);
        let (i, hi) = Handshake::start(Role::Inviter, pw, &relay, 1, Keypair::generate_ed25519());
        let (j, hj) = Handshake::start(Role::Joiner, pw, &relay, 1, Keypair::generate_ed25519());
        let (i, j) = (i.receive_hello(&hj).unwrap(), j.receive_hello(&hi).unwrap());
        let Message::Confirm { mac, name, .. } = j.confirm("bob") else { unreachable!() };
        let forged = Message::Confirm { mac, signature: vec![0; 64], name };
        assert_eq!(i.verify(&forged), Err(PakeError::BadSignature));
    }

    #[test]
    fn other_slot_or_relay_or_reflected_hello_fails() {
        let pw = Password::from_bits(5);
        let (r1, r2) = (PeerId::random(), PeerId::random());
        let (i, hi) = Handshake::start(Role::Inviter, pw, &r1, 1, Keypair::generate_ed25519());
        let (j, hj) = Handshake::start(Role::Joiner, pw, &r2, 1, Keypair::generate_ed25519());
        let (i, j) = (i.receive_hello(&hj).unwrap(), j.receive_hello(&hi).unwrap());
        assert_eq!(i.verify(&j.confirm("b")), Err(PakeError::WrongCode));
        let (i, hi) = Handshake::start(Role::Inviter, pw, &r1, 1, Keypair::generate_ed25519());
        assert_eq!(
            i.receive_hello(&hi).err(),
            Some(PakeError::Unexpected("hello from the wrong role"))
        );
        let (i, _) = Handshake::start(Role::Inviter, pw, &r1, 1, Keypair::generate_ed25519());
        let bad = Message::Hello { role: 1, spake: vec![1; 33], public_key: vec![1, 2, 3] };
        assert_eq!(i.receive_hello(&bad).err(), Some(PakeError::BadKey));
    }
}
