//! 20-byte identifiers: [`InfoHash`], [`NodeId`] and [`PeerId`].
//!
//! All three are 160-bit values, but mixing them up is always a bug (a node id
//! passed where an infohash belongs silently breaks a lookup), so each is its
//! own type made by one macro.

use std::fmt;
use std::str::FromStr;

/// Why a textual id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The text had the wrong number of characters for any accepted encoding.
    #[error("{what} must be {expected}, got {got} characters")]
    Length {
        /// Which kind of id was being parsed.
        what: &'static str,
        /// The accepted lengths, in words.
        expected: &'static str,
        /// How many characters were given.
        got: usize,
    },
    /// The text had the right length but a character outside the alphabet.
    #[error("{what} contains a character that is not {alphabet}")]
    Alphabet {
        /// Which kind of id was being parsed.
        what: &'static str,
        /// The alphabet that was expected.
        alphabet: &'static str,
    },
}

/// Decodes RFC 4648 base32 (upper or lower case, no padding) of exactly 32 characters.
fn decode_base32(text: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut pos = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(pos)? = (acc >> bits) as u8;
            pos += 1;
        }
    }
    (pos == 20).then_some(out)
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 20]);

        impl $name {
            /// Number of bytes in the id.
            pub const LEN: usize = 20;

            /// Wraps 20 raw bytes.
            pub const fn new(bytes: [u8; 20]) -> Self {
                Self(bytes)
            }

            /// Takes the id from a slice that must be exactly 20 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 20]>::try_from(bytes).ok().map(Self)
            }

            /// The raw bytes, as they travel on the wire.
            pub const fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }

            /// Parses 40 hexadecimal characters (either case).
            pub fn from_hex(text: &str) -> Result<Self, IdParseError> {
                if text.len() != 40 {
                    return Err(IdParseError::Length {
                        what: $what,
                        expected: "40 hex characters",
                        got: text.chars().count(),
                    });
                }
                let mut out = [0u8; 20];
                hex::decode_to_slice(text, &mut out).map_err(|_| IdParseError::Alphabet {
                    what: $what,
                    alphabet: "hexadecimal",
                })?;
                Ok(Self(out))
            }

            /// Lowercase hexadecimal, 40 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The XOR distance to `other`, the Kademlia metric.
            pub fn distance(&self, other: &Self) -> Distance {
                let mut d = [0u8; 20];
                for (out, (a, b)) in d.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
                    *out = a ^ b;
                }
                Distance(d)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl From<[u8; 20]> for $name {
            fn from(bytes: [u8; 20]) -> Self {
                Self(bytes)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
    };
}

id_type!(
    /// The SHA-1 of a torrent's bencoded `info` dictionary: the name of a swarm.
    InfoHash,
    "infohash"
);
id_type!(
    /// A DHT node's identity in the 160-bit Kademlia keyspace.
    NodeId,
    "node id"
);
id_type!(
    /// The id a peer announces in the BitTorrent handshake.
    PeerId,
    "peer id"
);

impl InfoHash {
    /// Parses the 40-hex or 32-base32 forms used in magnet links.
    pub fn parse(text: &str) -> Result<Self, IdParseError> {
        match text.len() {
            40 => Self::from_hex(text),
            32 => decode_base32(text).map(Self).ok_or(IdParseError::Alphabet {
                what: "infohash",
                alphabet: "base32",
            }),
            _ => Err(IdParseError::Length {
                what: "infohash",
                expected: "40 hex or 32 base32 characters",
                got: text.chars().count(),
            }),
        }
    }

    /// The node id at the same point of the keyspace, for DHT lookups of this swarm.
    pub const fn as_node_id(&self) -> NodeId {
        NodeId(self.0)
    }
}

impl FromStr for InfoHash {
    type Err = IdParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl FromStr for NodeId {
    type Err = IdParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

impl NodeId {
    /// Index (0..=159) of the highest bit in which `self` and `other` differ,
    /// counted from the least significant bit; `None` when they are equal.
    /// This is the routing-table bucket `other` belongs to from `self`'s view.
    pub fn bucket_index(&self, other: &NodeId) -> Option<usize> {
        self.distance(other).leading_zeros().map(|z| 159 - z)
    }
}

/// The XOR of two ids; compares as a big-endian 160-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Distance(pub [u8; 20]);

impl Distance {
    /// Number of leading zero bits, or `None` for the zero distance.
    pub fn leading_zeros(&self) -> Option<usize> {
        let first = self.0.iter().position(|&b| b != 0)?;
        Some(first * 8 + self.0[first].leading_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base32_agree() {
        let hex = InfoHash::parse("c12fe1c06bba254a9dc9f519b335aa7c1367a88a").unwrap();
        let b32 = InfoHash::parse("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(hex, b32);
        assert_eq!(hex.to_string(), "c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
    }

    #[test]
    fn wrong_length_is_named() {
        let err = InfoHash::parse(&"a".repeat(39)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "infohash must be 40 hex or 32 base32 characters, got 39 characters"
        );
    }

    #[test]
    fn bad_alphabet_is_refused() {
        assert!(InfoHash::parse(&"g".repeat(40)).is_err());
        assert!(InfoHash::parse(&"1".repeat(32)).is_err());
        assert!(NodeId::from_hex("é".repeat(20).as_str()).is_err());
    }

    #[test]
    fn bucket_index_is_highest_differing_bit() {
        let a = NodeId([0; 20]);
        let mut b = [0; 20];
        b[19] = 1;
        assert_eq!(a.bucket_index(&NodeId(b)), Some(0));
        b[0] = 0x80;
        assert_eq!(a.bucket_index(&NodeId(b)), Some(159));
        assert_eq!(a.bucket_index(&a), None);
    }
}
