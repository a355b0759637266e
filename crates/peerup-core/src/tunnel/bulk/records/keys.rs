//! The record layer's keys: one direction's AEAD key, nonce base and sequence number, and the move
//! to the next key every [`super::REKEY_EVERY`] records.

use std::io;

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use rustls::ConnectionTrafficSecrets;
use zeroize::Zeroizing;

use super::bad;

/// One direction's key, nonce base and sequence number.
pub(super) struct Keys {
    alg: &'static Algorithm,
    pub(super) key: LessSafeKey,
    secret: Zeroizing<Vec<u8>>,
    iv: Zeroizing<[u8; 12]>,
    pub(super) seq: u64,
    pub(super) rekey_every: u64,
}

impl Keys {
    pub(super) fn new(
        seq: u64,
        secrets: ConnectionTrafficSecrets,
        rekey_every: u64,
    ) -> io::Result<Self> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(bad("unsupported cipher suite")),
        };
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| bad("bad IV length"))?;
        Self::from_parts(alg, Zeroizing::new(key.as_ref().to_vec()), iv, seq, rekey_every)
    }

    fn from_parts(
        alg: &'static Algorithm,
        secret: Zeroizing<Vec<u8>>,
        iv: [u8; 12],
        seq: u64,
        rekey_every: u64,
    ) -> io::Result<Self> {
        let key = UnboundKey::new(alg, &secret).map_err(|_| bad("bad key length"))?;
        Ok(Self {
            alg,
            key: LessSafeKey::new(key),
            secret,
            iv: Zeroizing::new(iv),
            seq,
            rekey_every,
        })
    }

    pub(super) fn nonce(&self) -> Nonce {
        let mut n = *self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Moves past one record; after `rekey_every`, to the next key.
    pub(super) fn advance(&mut self) -> io::Result<()> {
        self.seq += 1;
        if self.seq >= self.rekey_every {
            let hk =
                hkdf::Hkdf::<sha2::Sha256>::new(None, &[&self.secret[..], &self.iv[..]].concat());
            let mut okm = Zeroizing::new(vec![0u8; self.secret.len() + 12]);
            hk.expand(b"peerup bulk key update", &mut okm).map_err(|_| bad("key update"))?;
            let (key, iv) = okm.split_at(self.secret.len());
            let iv: [u8; 12] = iv.try_into().map_err(|_| bad("key update"))?;
            *self =
                Self::from_parts(self.alg, Zeroizing::new(key.to_vec()), iv, 0, self.rekey_every)?;
        }
        Ok(())
    }
}
