//! Proptests of the core's parsers: authorized_keys, identity.key, invite codes, pairing and
//! bulk-path messages, relay addresses. Random bytes first, then structured inputs near the valid
//! ones (where a parser's edge cases are).

use peerup_core::PeerId;
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::identity;
use peerup_core::pairing::wire::Message;
use peerup_core::tunnel::bulk;
use proptest::prelude::*;

use crate::checks;

/// A peer ID from 32 bytes: the identity multihash of an Ed25519 public key's protobuf encoding.
fn peer(seed: [u8; 32]) -> PeerId {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend(seed);
    PeerId::from_bytes(&bytes).unwrap()
}

fn peers() -> impl Strategy<Value = PeerId> {
    any::<[u8; 32]>().prop_map(peer)
}

fn hex(n: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9a-f]{{{n}}}")).unwrap()
}

/// An authorized_keys line: a valid entry (attributes and comment), a comment, a blank, or junk.
fn key_line() -> impl Strategy<Value = String> {
    let attr = prop_oneof![
        hex(8).prop_map(|h| format!("group={h}")),
        hex(8).prop_map(|h| format!("verified=sha256:{h}")),
        (0i64..4_000_000_000)
            .prop_map(|s| format!("expires={}", jiff::Timestamp::from_second(s).unwrap())),
        "[a-z_]{1,8}=[!-\"$-~]{1,12}",
        // Near misses: bad hex, bad time, no value.
        "(group|verified|expires|hmac_proof)=[ -~&&[^#]]{0,10}",
    ];
    let entry = (peers(), proptest::collection::vec(attr, 0..4), proptest::option::of(".{0,20}"))
        .prop_map(|(p, attrs, comment)| {
            let mut line = p.to_string();
            for a in attrs {
                line.push_str("  ");
                line.push_str(&a);
            }
            if let Some(c) = comment {
                line.push_str(" # ");
                line.push_str(&c);
            }
            line
        });
    prop_oneof![
        4 => entry,
        1 => "#.{0,20}",
        1 => "[ \t]{0,3}",
        1 => "12D3KooW[1-9A-HJ-NP-Za-km-z]{0,50}.{0,10}",
        1 => ".{0,40}",
    ]
}

fn messages() -> impl Strategy<Value = Message> {
    let name = ".{0,20}";
    let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
    let nonempty = |n| proptest::collection::vec(any::<u8>(), 1..n);
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(slot, ttl_secs)| Message::Register { slot, ttl_secs }),
        any::<u32>().prop_map(|slot| Message::Join { slot }),
        (any::<u32>(), peers()).prop_map(|(slot, peer)| Message::Admit { slot, peer }),
        any::<u32>().prop_map(|slot| Message::Release { slot }),
        Just(Message::Registered),
        Just(Message::Matched),
        Just(Message::Ok),
        Just(Message::Done),
        name.prop_map(Message::Error),
        // A hello carries a SPAKE2 message and a public key: empty ones are refused as truncated.
        (0u8..2, nonempty(64), nonempty(64)).prop_map(|(role, spake, public_key)| Message::Hello {
            role,
            spake,
            public_key
        }),
        (any::<[u8; 32]>(), bytes(80), name).prop_map(|(mac, signature, name)| Message::Confirm {
            mac,
            signature,
            name
        }),
        (any::<u32>(), proptest::collection::vec((peers(), name), 0..4))
            .prop_map(|(group, peers)| Message::Members { group, peers }),
        (any::<u32>(), proptest::collection::vec((peers(), name), 0..4))
            .prop_map(|(group, peers)| Message::Introduce { group, peers }),
    ]
}

/// A valid input with a few bytes changed, dropped or added.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, value) in edits {
        let at = if bytes.is_empty() { 0 } else { at % (bytes.len() + 1) };
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = value,
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, value),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec(any::<(usize, u8, u8)>(), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_check_holds_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for (_, check) in checks::TARGETS {
            check(&bytes);
        }
    }

    #[test]
    fn authorized_keys_files_round_trip(lines in proptest::collection::vec(key_line(), 0..12)) {
        let text = lines.join("\n");
        checks::authorized_keys(text.as_bytes());
        let keys = AuthorizedKeys::parse(&text);
        // Each line is an entry, an error, or blank/comment; nothing is lost.
        let blank = text.lines().filter(|l| l.split('#').next().unwrap().trim().is_empty()).count();
        prop_assert_eq!(keys.entries().count() + keys.errors().len() + blank, text.lines().count());
    }

    #[test]
    fn pairing_messages_round_trip_and_near_misses_fail_cleanly(m in messages(), e in edits()) {
        prop_assert_eq!(Message::decode(&m.encode()), Ok(m.clone()));
        checks::pairing_wire(&mutate(m.encode(), &e));
    }

    #[test]
    fn bulk_requests_round_trip(name in ".{0,80}", e in edits()) {
        let bytes = bulk::encode_request(&name).unwrap();
        prop_assert_eq!(bulk::decode_request(&bytes).unwrap(), name);
        checks::bulk_request(&mutate(bytes, &e));
    }

    #[test]
    fn key_files_with_changed_bytes_fail_cleanly(e in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = identity::load_or_generate(&dir.path().join("identity.key")).unwrap();
        let bytes = key.to_protobuf_encoding().unwrap();
        checks::identity_key(&bytes);
        checks::identity_key(&mutate(bytes, &e));
    }

    #[test]
    fn invite_codes_with_typos_fail_cleanly(slot: u32, pw: u64, e in edits()) {
        let (s, p) = (slot, peerup_core::pairing::code::Password::from_bits(pw));
        let code = peerup_core::pairing::code::InviteCode { relay: None, slot: s, password: p };
        checks::invite_code(&mutate(code.encode().into_bytes(), &e));
    }

    #[test]
    fn relay_addresses_near_valid_ones_fail_cleanly(
        ip in any::<std::net::Ipv4Addr>(),
        port: u16,
        p in peers(),
        e in edits(),
    ) {
        for text in [format!("{ip}:{port}"), format!("/ip4/{ip}/tcp/{port}/p2p/{p}")] {
            checks::relay_addr(text.as_bytes());
            checks::relay_addr(&mutate(text.into_bytes(), &e));
        }
    }
}
