//! The pairing messages and their framing: every message is a frame `u16 BE length ‖ payload`, at
//! most [`MAX_FRAME`] bytes, whose first payload byte is the message type. Parsers return a
//! [`WireError`] on anything unexpected; they never panic.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;

use super::code::Slot;

/// The largest frame payload.
pub const MAX_FRAME: usize = 1024;
/// The longest error text a relay sends.
pub const MAX_ERROR: usize = 200;
/// The longest name a peer announces, in bytes.
pub const MAX_NAME: usize = 64;

/// A malformed or unexpected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Empty payload.
    #[error("empty message")]
    Empty,
    /// A frame over [`MAX_FRAME`].
    #[error("message too long ({0} bytes)")]
    TooLong(usize),
    /// An unknown type byte.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// Shorter than its type needs.
    #[error("truncated {0} message")]
    Truncated(&'static str),
    /// Longer than its type allows.
    #[error("trailing bytes after a {0} message")]
    Trailing(&'static str),
    /// A field's value is not acceptable.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Reading or writing failed, or the other side hung up.
    #[error("connection: {0}")]
    Io(String),
}

/// A pairing message: rendezvous requests to the relay and its answers, and the end-to-end PAKE
/// messages that travel through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Inviter → relay: hold `slot` open for `ttl_secs`.
    Register {
        /// The slot.
        slot: Slot,
        /// Seconds the slot lives (the relay caps it).
        ttl_secs: u32,
    },
    /// Joiner → relay: connect me to the inviter waiting on `slot`.
    Join {
        /// The slot.
        slot: Slot,
    },
    /// Inviter → relay: `peer` paired with me through `slot`; authorize it on the relay.
    Admit {
        /// The slot.
        slot: Slot,
        /// The joiner.
        peer: PeerId,
    },
    /// Inviter → relay: close `slot` (used or burnt).
    Release {
        /// The slot.
        slot: Slot,
    },
    /// Relay → inviter: the slot is held.
    Registered,
    /// Relay → both: the other side is on the line; from here on bytes are relayed unchanged.
    Matched,
    /// Relay → inviter: done.
    Ok,
    /// Relay or peer → the other side: refused, with why.
    Error(String),
    /// PAKE, both ways: the SPAKE2 message and the sender's public key (protobuf encoding).
    Hello {
        /// 0 = inviter, 1 = joiner.
        role: u8,
        /// The SPAKE2 message.
        spake: Vec<u8>,
        /// The sender's libp2p public key.
        public_key: Vec<u8>,
    },
    /// PAKE, both ways: key confirmation, proof of the identity key, and the announced name.
    Confirm {
        /// HMAC-SHA256 over the transcript and the name.
        mac: [u8; 32],
        /// Ed25519 signature over the transcript and the name.
        signature: Vec<u8>,
        /// The sender's name for itself (may be empty).
        name: String,
    },
    /// Inviter → joiner: the inviter saved the pairing (and the relay admitted the joiner).
    Done,
    /// Relay → joiner of a group, after the handshake: the members so far (not the joiner).
    Members {
        /// The group.
        group: u32,
        /// Its members: peer ID and name.
        peers: Vec<(PeerId, String)>,
    },
    /// Relay → member, on `/peerup/group-intro/1.0.0`: the other members of its group.
    Introduce {
        /// The group.
        group: u32,
        /// The other members: peer ID and name.
        peers: Vec<(PeerId, String)>,
    },
}

const REGISTER: u8 = 0x01;
const JOIN: u8 = 0x02;
const ADMIT: u8 = 0x03;
const RELEASE: u8 = 0x04;
const REGISTERED: u8 = 0x10;
const MATCHED: u8 = 0x11;
const OK: u8 = 0x12;
const ERROR: u8 = 0x1f;
const HELLO: u8 = 0x20;
const CONFIRM: u8 = 0x21;
const DONE: u8 = 0x22;
const MEMBERS: u8 = 0x30;
const INTRODUCE: u8 = 0x31;

fn encode_peers(out: &mut Vec<u8>, group: u32, peers: &[(PeerId, String)]) {
    out.extend(group.to_be_bytes());
    out.push(peers.len().min(255) as u8);
    for (peer, name) in peers.iter().take(255) {
        let id = peer.to_bytes();
        out.push(id.len().min(255) as u8);
        out.extend(&id[..id.len().min(255)]);
        let name = &name.as_bytes()[..name.len().min(MAX_NAME)];
        out.push(name.len() as u8);
        out.extend(name);
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated(self.what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn short_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn end(self) -> Result<(), WireError> {
        if self.rest.is_empty() { Ok(()) } else { Err(WireError::Trailing(self.what)) }
    }
}

/// A peer ID in its one canonical encoding: the multihash parser also takes a ten-byte varint
/// whose last byte overflows 64 bits (the overflow is dropped), so one peer would have many byte
/// strings, and a message would not re-encode to itself.
fn peer_id(bytes: &[u8]) -> Result<PeerId, WireError> {
    match PeerId::from_bytes(bytes) {
        Ok(peer) if peer.to_bytes() == bytes => Ok(peer),
        _ => Err(WireError::Invalid("peer ID")),
    }
}

fn text(bytes: &[u8], max: usize, what: &'static str) -> Result<String, WireError> {
    if bytes.len() > max {
        return Err(WireError::Invalid(what));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Invalid(what))
}

impl Message {
    /// The payload bytes (without the frame length).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::Register { slot, ttl_secs } => {
                out.push(REGISTER);
                out.extend(slot.to_be_bytes());
                out.extend(ttl_secs.to_be_bytes());
            }
            Message::Join { slot } => {
                out.push(JOIN);
                out.extend(slot.to_be_bytes());
            }
            Message::Admit { slot, peer } => {
                out.push(ADMIT);
                out.extend(slot.to_be_bytes());
                out.extend(peer.to_bytes());
            }
            Message::Release { slot } => {
                out.push(RELEASE);
                out.extend(slot.to_be_bytes());
            }
            Message::Registered => out.push(REGISTERED),
            Message::Matched => out.push(MATCHED),
            Message::Ok => out.push(OK),
            Message::Error(e) => {
                out.push(ERROR);
                let mut end = e.len().min(MAX_ERROR);
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend(&e.as_bytes()[..end]);
            }
            Message::Hello { role, spake, public_key } => {
                out.push(HELLO);
                out.push(*role);
                out.push(spake.len().min(255) as u8);
                out.extend(&spake[..spake.len().min(255)]);
                out.extend(public_key);
            }
            Message::Confirm { mac, signature, name } => {
                out.push(CONFIRM);
                out.extend(mac);
                out.push(signature.len().min(255) as u8);
                out.extend(&signature[..signature.len().min(255)]);
                out.extend(name.as_bytes());
            }
            Message::Done => out.push(DONE),
            Message::Members { group, peers } => {
                out.push(MEMBERS);
                encode_peers(&mut out, *group, peers);
            }
            Message::Introduce { group, peers } => {
                out.push(INTRODUCE);
                encode_peers(&mut out, *group, peers);
            }
        }
        out
    }

    /// Parses one payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let (&kind, body) = payload.split_first().ok_or(WireError::Empty)?;
        if payload.len() > MAX_FRAME {
            return Err(WireError::TooLong(payload.len()));
        }
        let what = match kind {
            REGISTER => "register",
            JOIN => "join",
            ADMIT => "admit",
            RELEASE => "release",
            REGISTERED => "registered",
            MATCHED => "matched",
            OK => "ok",
            ERROR => "error",
            HELLO => "hello",
            CONFIRM => "confirm",
            DONE => "done",
            MEMBERS => "members",
            INTRODUCE => "introduce",
            other => return Err(WireError::UnknownType(other)),
        };
        let mut r = Reader { rest: body, what };
        let msg = match kind {
            REGISTER => Message::Register { slot: r.u32()?, ttl_secs: r.u32()? },
            JOIN => Message::Join { slot: r.u32()? },
            ADMIT => {
                let slot = r.u32()?;
                Message::Admit { slot, peer: peer_id(r.rest())? }
            }
            RELEASE => Message::Release { slot: r.u32()? },
            REGISTERED => Message::Registered,
            MATCHED => Message::Matched,
            OK => Message::Ok,
            ERROR => Message::Error(text(r.rest(), MAX_ERROR, "error text")?),
            HELLO => {
                let role = r.u8()?;
                if role > 1 {
                    return Err(WireError::Invalid("role"));
                }
                let spake = r.short_bytes()?.to_vec();
                let public_key = r.rest().to_vec();
                if spake.is_empty() || public_key.is_empty() {
                    return Err(WireError::Truncated(what));
                }
                Message::Hello { role, spake, public_key }
            }
            CONFIRM => {
                let mut mac = [0u8; 32];
                mac.copy_from_slice(r.take(32)?);
                let signature = r.short_bytes()?.to_vec();
                let name = text(r.rest(), MAX_NAME, "name")?;
                Message::Confirm { mac, signature, name }
            }
            MEMBERS | INTRODUCE => {
                let group = r.u32()?;
                let n = r.u8()?;
                let mut peers = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let peer = peer_id(r.short_bytes()?)?;
                    peers.push((peer, text(r.short_bytes()?, MAX_NAME, "name")?));
                }
                match kind {
                    MEMBERS => Message::Members { group, peers },
                    _ => Message::Introduce { group, peers },
                }
            }
            _ => Message::Done,
        };
        r.end()?;
        Ok(msg)
    }
}

/// Writes one message as a frame.
pub async fn write<S: AsyncWrite + Unpin>(io: &mut S, msg: &Message) -> Result<(), WireError> {
    let payload = msg.encode();
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLong(payload.len()));
    }
    let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
    frame.extend(payload);
    io.write_all(&frame).await.map_err(|e| WireError::Io(e.to_string()))?;
    io.flush().await.map_err(|e| WireError::Io(e.to_string()))
}

/// Reads one frame and parses it. Not cancel-safe: a partly read frame is lost.
pub async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<Message, WireError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Io("closed by the other side".into()),
        _ => WireError::Io(e.to_string()),
    })?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.map_err(|e| WireError::Io(e.to_string()))?;
    Message::decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Register { slot: 7, ttl_secs: 600 },
            Message::Join { slot: u32::MAX },
            Message::Admit { slot: 1, peer: PeerId::random() },
            Message::Release { slot: 2 },
            Message::Registered,
            Message::Matched,
            Message::Ok,
            Message::Error("no invite waiting".into()),
            Message::Hello { role: 1, spake: vec![1; 33], public_key: vec![2; 36] },
            Message::Confirm { mac: [3; 32], signature: vec![4; 64], name: "bob".into() },
            Message::Done,
            Message::Members { group: 5, peers: vec![(PeerId::random(), "alice".into())] },
            Message::Introduce { group: 5, peers: vec![] },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn garbage_gives_clear_errors() {
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[0x7e]), Err(WireError::UnknownType(0x7e)));
        assert_eq!(Message::decode(&[REGISTER, 0, 0]), Err(WireError::Truncated("register")));
        assert_eq!(Message::decode(&[MATCHED, 0]), Err(WireError::Trailing("matched")));
        assert_eq!(Message::decode(&[ADMIT, 0, 0, 0, 1, 9, 9]), Err(WireError::Invalid("peer ID")));
        // A peer ID whose multihash varint is padded with empty continuation bytes (found by the
        // pairing_wire fuzz target): the same peer in another encoding is refused.
        let padded = [
            ADMIT, 0x26, 1, 0xb3, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x12, 0,
        ];
        assert_eq!(Message::decode(&padded), Err(WireError::Invalid("peer ID")));
        let peer = PeerId::random();
        let mut padded_member = vec![MEMBERS, 0, 0, 0, 1, 1];
        let mut id = peer.to_bytes();
        // The multihash code (identity, 0) as ten bytes whose last one overflows 64 bits.
        assert_eq!(id[0], 0);
        id.splice(0..1, [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x12]);
        padded_member.push(id.len() as u8);
        padded_member.extend(&id);
        padded_member.push(0);
        assert_eq!(Message::decode(&padded_member), Err(WireError::Invalid("peer ID")));
        assert_eq!(Message::decode(&[HELLO, 5, 1, 1, 1]), Err(WireError::Invalid("role")));
        assert_eq!(Message::decode(&[HELLO, 0, 40, 1]), Err(WireError::Truncated("hello")));
        assert_eq!(Message::decode(&[ERROR, 0xff, 0xfe]), Err(WireError::Invalid("error text")));
        let mut long_name = vec![CONFIRM];
        long_name.extend([0; 32]);
        long_name.push(0);
        long_name.extend([b'a'; MAX_NAME + 1]);
        assert_eq!(Message::decode(&long_name), Err(WireError::Invalid("name")));
        assert_eq!(
            Message::decode(&vec![OK; MAX_FRAME + 1]),
            Err(WireError::TooLong(MAX_FRAME + 1))
        );
    }

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            let all = samples();
            for m in &all {
                write(&mut buf, m).await.unwrap();
            }
            let mut r = futures::io::Cursor::new(buf);
            for m in all {
                assert_eq!(read(&mut r).await.unwrap(), m);
            }
            assert!(matches!(read(&mut r).await, Err(WireError::Io(_))));
            let mut big = futures::io::Cursor::new(vec![0xff, 0xff, 0]);
            assert_eq!(read(&mut big).await, Err(WireError::TooLong(0xffff)));
        });
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn parser_never_panics_on_known_types(kind in 0u8..0x40, rest in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut bytes = vec![kind];
            bytes.extend(rest);
            let _ = Message::decode(&bytes);
        }
    }
}
