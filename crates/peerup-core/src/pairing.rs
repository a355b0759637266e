//! Pairing two nodes with a short code: `peerup invite` / `peerup join`, and `peerup verify`.
//!
//! - [`code`]: the invite code (relay address, rendezvous slot, password, checksum).
//! - [`wire`]: the framed messages and their parsers.
//! - [`pake`]: SPAKE2, key confirmation over a transcript that binds both keys, identity proofs.
//! - [`session`]: the inviter's and the joiner's side, over a node.
//! - [`rendezvous`]: the relay's side: slots and the splice between inviter and joiner.
//! - [`group`]: group pairing, where the relay is the PAKE peer and introduces members.
//! - [`sas`]: short authentication strings for out-of-band verification.
//!
//! The design and its threat model are in `docs/pairing.md`.

pub mod code;
pub mod group;
pub mod pake;
pub mod rendezvous;
pub mod sas;
pub mod session;
pub mod wire;

use std::time::Duration;

pub use crate::protocols::{GROUP_INTRO, PAIR_RENDEZVOUS};

/// The longest an invite may live.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Failed attempts after which an invite's code is burnt.
pub const MAX_FAILURES: u32 = 3;

/// A fresh random slot and password.
pub fn new_secret() -> Result<(code::Slot, code::Password), getrandom::Error> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b)?;
    let slot = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let pw = u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
    Ok((slot, code::Password::from_bits(pw)))
}
