//! Short authentication strings for `peerup verify`, compatible with the Go original: both sides
//! compute 4 emoji and a `NNN-NNN` number from the two peer IDs and compare them out of band.
//!
//! `h = SHA-256(lower ‖ higher)` over the raw multihash bytes of the two IDs sorted bytewise; the
//! emoji are `table[h[0]] table[h[2]] table[h[4]] table[h[6]]`, the number is
//! `(h[8] << 16 | h[9] << 8 | h[10]) mod 10^6`, and the stored marker is `sha256:<hex of h[0..4]>`.

use libp2p::PeerId;
use sha2::{Digest, Sha256};

/// The short authentication string of a pair of peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sas {
    /// Four emoji, separated by spaces.
    pub emoji: String,
    /// `NNN-NNN`.
    pub number: String,
    /// The `verified=` value: `sha256:` and 8 hex digits.
    pub marker: String,
}

/// The SAS of `a` and `b` (the order does not matter).
pub fn sas(a: &PeerId, b: &PeerId) -> Sas {
    let (a, b) = (a.to_bytes(), b.to_bytes());
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h: [u8; 32] = Sha256::new().chain_update(&lo).chain_update(&hi).finalize().into();
    let table: Vec<&str> = EMOJI.split_whitespace().collect();
    let emoji = [0, 2, 4, 6]
        .iter()
        .map(|&i| table.get(usize::from(h[i])).copied().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(" ");
    let n = ((u32::from(h[8]) << 16) | (u32::from(h[9]) << 8) | u32::from(h[10])) % 1_000_000;
    let marker = format!("sha256:{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3]);
    Sas { emoji, number: format!("{:03}-{:03}", n / 1000, n % 1000), marker }
}

/// The Go original's table of 256 emoji (some with U+FE0F), in index order.
const EMOJI: &str = "\
🐶 🐱 🐭 🐹 🐰 🦊 🐻 🐼 🐨 🐯 🦁 🐮 🐷 🐸 🐵 🐔 \
🐧 🐦 🐤 🦆 🦅 🦉 🦇 🐺 🐗 🐴 🦄 🐝 🐛 🦋 🐌 🐞 \
🐙 🦑 🦐 🦀 🐡 🐠 🐟 🐬 🐳 🐋 🦈 🐊 🐅 🐆 🦓 🦍 \
🐘 🦛 🦏 🐪 🐫 🦒 🦘 🐃 🐂 🐄 🐎 🐖 🐏 🐑 🦙 🐐 \
🌵 🎄 🌲 🌳 🌴 🌱 🌿 🍀 🍁 🍂 🍃 🌺 🌻 🌹 🥀 🌷 \
🌼 🌸 💐 🍄 🌰 🎃 🌑 🌒 🌓 🌔 🌕 🌖 🌗 🌘 🌙 🌚 \
⭐ 🌟 💫 ✨ ☄️ 🌤️ ⛅ 🌥️ 🌦️ 🌧️ ⛈️ 🌩️ 🌪️ 🌈 ☀️ 🌊 \
🍎 🍊 🍋 🍌 🍉 🍇 🍓 🍈 🍒 🍑 🥭 🍍 🥥 🥝 🍅 🥑 \
🌶️ 🥕 🥔 🧅 🌽 🥦 🥒 🥬 🍆 🥜 🫘 🍞 🥐 🥖 🧀 🥚 \
🔑 🗝️ 🔒 🔓 🔨 🪓 ⛏️ 🔧 🔩 ⚙️ 🧲 🔫 💣 🧨 🪚 🔪 \
🗡️ 🛡️ 🏹 🎯 🪃 🧰 🔬 🔭 📡 💉 🩸 💊 🩹 🧬 🦠 🧫 \
🎸 🎹 🥁 🎺 🎷 🪗 🎻 🪕 🎵 🎶 🎼 🎤 🎧 📻 🎙️ 📯 \
🚀 🛸 🚁 ⛵ 🚂 🚗 🚕 🏎️ 🚌 🚎 🚑 🚒 🛻 🚜 🛵 🏍️ \
⚽ 🏀 🏈 ⚾ 🥎 🎾 🏐 🏉 🎱 🏓 🏸 🥊 🎿 ⛷️ 🏂 🪂 \
❤️ 🧡 💛 💚 💙 💜 🤎 🖤 💎 🔥 💧 🌀 🎪 🎭 🎨 🧩 \
♟️ 🎲 🧸 🪆 🪄 🎩 👑 💍 🏆 🥇 🥈 🥉 🏅 🎖️ 🏵️ 🎗️";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_256_entries_and_24_with_fe0f() {
        let t: Vec<&str> = EMOJI.split_whitespace().collect();
        assert_eq!(t.len(), 256);
        let with: Vec<usize> =
            t.iter().enumerate().filter(|(_, e)| e.contains('\u{fe0f}')).map(|(i, _)| i).collect();
        assert_eq!(
            with,
            [
                100, 101, 103, 104, 105, 106, 107, 108, 110, 128, 145, 150, 153, 160, 161, 190,
                199, 207, 221, 224, 240, 253, 254, 255
            ]
        );
    }

    #[test]
    fn matches_the_go_vector_in_either_order() {
        let a: PeerId = "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt".parse().unwrap();
        let b: PeerId = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6".parse().unwrap();
        let s = sas(&a, &b);
        assert_eq!(s, sas(&b, &a));
        assert_eq!(s.emoji, "✨ ⛷️ 💉 🌧️");
        assert_eq!(s.number, "952-268");
        assert_eq!(s.marker, "sha256:63dcdd01");
    }
}
