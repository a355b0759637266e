//! Invite codes: short, case-insensitive Crockford base32 that can be read aloud.
//!
//! A code carries a version, the rendezvous slot at the relay, the PAKE password and a checksum;
//! the long form also carries the relay's IPv4 address and TCP port, so that a joiner with no config
//! can find the relay. Layouts (bits, most significant first):
//!
//! - long (version 1, 30 characters): version 5 ‖ IPv4 32 ‖ port 16 ‖ slot 32 ‖ password 50 ‖ check 15
//! - short (version 2, 20 characters): version 5 ‖ slot 32 ‖ password 50 ‖ check 13
//!
//! The check is the top bits of SHA-256 over the preceding bits, so a mistyped character is caught
//! before anything reaches the network. Decoding ignores dashes and spaces, accepts lower case, and
//! reads `O` as `0` and `I`/`L` as `1`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use sha2::{Digest, Sha256};

/// The 32 symbols: digits and letters without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Password bits (over 10^15 values).
pub const PASSWORD_BITS: u32 = 50;
const LONG_VERSION: u64 = 1;
const SHORT_VERSION: u64 = 2;
const LONG_CHARS: usize = 30;
const SHORT_CHARS: usize = 20;
const LONG_CHECK_BITS: u32 = 15;
const SHORT_CHECK_BITS: u32 = 13;

/// A rendezvous slot at the relay.
pub type Slot = u32;

/// The PAKE password inside a code. Its `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Password(u64);

impl Password {
    /// A password from its 50 bits (higher bits are dropped).
    pub fn from_bits(bits: u64) -> Self {
        Self(bits & ((1 << PASSWORD_BITS) - 1))
    }

    /// The password as bytes for the PAKE.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A decoded invite code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteCode {
    /// The relay's IPv4 TCP address, in the long form.
    pub relay: Option<SocketAddrV4>,
    /// The rendezvous slot.
    pub slot: Slot,
    /// The PAKE password.
    pub password: Password,
}

/// Why a code could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// A character outside the alphabet.
    #[error("invalid character {0:?} in the code (codes use 0-9 and A-Z without U)")]
    BadChar(char),
    /// Not 20 or 30 characters.
    #[error("the code has {0} characters; expected 20 or 30 (dashes and spaces do not count)")]
    BadLength(usize),
    /// A version this peerup does not know.
    #[error("unsupported code version {0} (is it from a newer peerup?)")]
    BadVersion(u64),
    /// The checksum does not match: a typo.
    #[error("the code is mistyped (its checksum does not match)")]
    BadChecksum,
}

struct Bits {
    bytes: Vec<u8>,
    len: u32,
}

impl Bits {
    fn new() -> Self {
        Self { bytes: Vec::new(), len: 0 }
    }

    fn push(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            let bit = (value >> i) & 1;
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if bit == 1
                && let Some(last) = self.bytes.last_mut()
            {
                *last |= 0x80 >> (self.len % 8);
            }
            self.len += 1;
        }
    }

    fn get(&self, at: u32, n: u32) -> u64 {
        (at..at + n).fold(0, |acc, i| {
            let byte = self.bytes.get((i / 8) as usize).copied().unwrap_or(0);
            (acc << 1) | u64::from((byte >> (7 - i % 8)) & 1)
        })
    }

    /// The top `n` bits of SHA-256 over the first `len` bits (trailing bits of the last byte zero).
    fn check(&self, n: u32) -> u64 {
        let mut prefix = Bits::new();
        prefix.push_bits(self, self.len);
        let digest = Sha256::digest(&prefix.bytes);
        let top = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]);
        top >> (64 - n)
    }

    fn push_bits(&mut self, other: &Bits, n: u32) {
        for i in 0..n {
            self.push(other.get(i, 1), 1);
        }
    }
}

impl InviteCode {
    /// Renders the code in groups of five characters.
    pub fn encode(&self) -> String {
        let mut bits = Bits::new();
        match self.relay {
            Some(addr) => {
                bits.push(LONG_VERSION, 5);
                bits.push(u64::from(u32::from(*addr.ip())), 32);
                bits.push(u64::from(addr.port()), 16);
            }
            None => bits.push(SHORT_VERSION, 5),
        }
        bits.push(u64::from(self.slot), 32);
        bits.push(self.password.0, PASSWORD_BITS);
        let (chars, check) = match self.relay {
            Some(_) => (LONG_CHARS, LONG_CHECK_BITS),
            None => (SHORT_CHARS, SHORT_CHECK_BITS),
        };
        let sum = bits.check(check);
        bits.push(sum, check);
        let symbols: Vec<u8> =
            (0..chars).map(|i| ALPHABET[bits.get(i as u32 * 5, 5) as usize]).collect();
        symbols
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Reads a code typed by a person.
    pub fn decode(text: &str) -> Result<Self, CodeError> {
        let mut bits = Bits::new();
        let mut count = 0usize;
        for c in text.chars().filter(|c| !matches!(c, '-' | ' ' | '\t' | '\n' | '\r')) {
            bits.push(u64::from(symbol(c)?), 5);
            count += 1;
        }
        let (long, check_bits) = match count {
            LONG_CHARS => (true, LONG_CHECK_BITS),
            SHORT_CHARS => (false, SHORT_CHECK_BITS),
            n => return Err(CodeError::BadLength(n)),
        };
        let version = bits.get(0, 5);
        match (version, long) {
            (LONG_VERSION, true) | (SHORT_VERSION, false) => {}
            (LONG_VERSION | SHORT_VERSION, _) => return Err(CodeError::BadLength(count)),
            (v, _) => return Err(CodeError::BadVersion(v)),
        }
        let payload_bits = count as u32 * 5 - check_bits;
        let mut payload = Bits::new();
        payload.push_bits(&bits, payload_bits);
        if payload.check(check_bits) != bits.get(payload_bits, check_bits) {
            return Err(CodeError::BadChecksum);
        }
        let mut at = 5;
        let relay = long.then(|| {
            let ip = Ipv4Addr::from(bits.get(5, 32) as u32);
            let port = bits.get(37, 16) as u16;
            at = 53;
            SocketAddrV4::new(ip, port)
        });
        let slot = bits.get(at, 32) as u32;
        let password = Password::from_bits(bits.get(at + 32, PASSWORD_BITS));
        Ok(Self { relay, slot, password })
    }
}

fn symbol(c: char) -> Result<u8, CodeError> {
    let up = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        u => u,
    };
    ALPHABET.iter().position(|&a| char::from(a) == up).map(|i| i as u8).ok_or(CodeError::BadChar(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn long() -> InviteCode {
        InviteCode {
            relay: Some("203.0.113.50:7777".parse().unwrap()),
            slot: 0xdead_beef,
            password: Password::from_bits(0x3_1234_5678_9abc),
        }
    }

    #[test]
    fn round_trips_long_and_short() {
        let code = long();
        let text = code.encode();
        assert_eq!(text.replace('-', "").len(), 30, "{text}");
        assert_eq!(InviteCode::decode(&text).unwrap(), code);
        let short = InviteCode { relay: None, ..code };
        let text = short.encode();
        assert_eq!(text.replace('-', "").len(), 20, "{text}");
        assert_eq!(InviteCode::decode(&text).unwrap(), short);
    }

    #[test]
    fn decoding_is_forgiving_about_case_and_lookalikes() {
        let text = long().encode();
        let sloppy = text.to_lowercase().replace('0', "o").replace('1', "l").replace('-', " ");
        assert_eq!(InviteCode::decode(&sloppy).unwrap(), long());
    }

    #[test]
    fn bad_codes_give_clear_errors() {
        let text = long().encode();
        assert_eq!(InviteCode::decode(""), Err(CodeError::BadLength(0)));
        assert_eq!(InviteCode::decode(&text[..20]), Err(CodeError::BadLength(17)));
        assert_eq!(InviteCode::decode("U").unwrap_err(), CodeError::BadChar('U'));
        assert!(matches!(InviteCode::decode("*").unwrap_err(), CodeError::BadChar('*')));
        // One changed character is caught by the checksum.
        let mut chars: Vec<char> = text.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(InviteCode::decode(&typo), Err(CodeError::BadChecksum));
        // A version nobody knows.
        let mut v: Vec<char> = text.chars().collect();
        v[0] = 'Z';
        assert_eq!(
            InviteCode::decode(&v.into_iter().collect::<String>()),
            Err(CodeError::BadVersion(31))
        );
    }

    #[test]
    fn decodes_the_example_in_docs_pairing_md() {
        let code = InviteCode::decode("1SC07-2CGYC-5FET4-HMN5Y-F0VKM-3YG63").unwrap();
        assert_eq!(code.relay, Some("203.0.113.50:7777".parse().unwrap()));
        assert_eq!(code.slot, 0x5eed_1234);
        assert_eq!(code.password, Password::from_bits(0x2_a5f3_c1b9_d07e));
    }

    #[test]
    fn password_debug_is_redacted() {
        assert!(!format!("{:?}", long()).contains("1234"));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(s in ".{0,80}") {
            let _ = InviteCode::decode(&s);
        }

        #[test]
        fn decoder_never_panics_on_alphabet(s in "[0-9A-Za-z-]{0,40}") {
            let _ = InviteCode::decode(&s);
        }

        #[test]
        fn every_code_round_trips(ip: u32, port: u16, slot: u32, pw: u64, long: bool) {
            let code = InviteCode {
                relay: long.then(|| SocketAddrV4::new(Ipv4Addr::from(ip), port)),
                slot,
                password: Password::from_bits(pw),
            };
            prop_assert_eq!(InviteCode::decode(&code.encode()).unwrap(), code);
        }
    }
}
