//! A fixed-length set of piece indices in the wire's bit order.
//!
//! Stored exactly as BEP 3 sends it (high bit of byte 0 = piece 0), so a
//! peer's `bitfield` message is adopted and ours is sent without conversion.

use thiserror::Error;

/// A `bitfield` payload that does not fit the torrent: the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BitfieldError {
    /// The payload is not `ceil(piece_count / 8)` bytes long.
    #[error("peer sent a bitfield of {got} bytes, expected {expected} for {pieces} pieces")]
    WrongLength {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        expected: usize,
        /// The torrent's piece count.
        pieces: u32,
    },
    /// A bit past the last piece is set (BEP 3 says spare bits are zero).
    #[error("peer sent a bitfield with spare bits set")]
    SpareBitsSet,
}

/// A set of pieces out of `len`, one bit each.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; byte_len(len)],
            len,
            ones: 0,
        }
    }

    /// The full set over `len` pieces.
    pub fn full(len: u32) -> Self {
        let mut bits = Self::new(len);
        for i in 0..len {
            bits.set(i);
        }
        bits
    }

    /// Adopts a peer's `bitfield` payload for a torrent of `len` pieces.
    pub fn from_wire(payload: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let expected = byte_len(len);
        if payload.len() != expected {
            return Err(BitfieldError::WrongLength {
                got: payload.len(),
                expected,
                pieces: len,
            });
        }
        let spare = (expected * 8) as u64 - u64::from(len);
        if let Some(&last) = payload.last()
            && spare > 0
            && last & ((1u8 << spare) - 1) != 0
        {
            return Err(BitfieldError::SpareBitsSet);
        }
        let ones = payload.iter().map(|b| b.count_ones()).sum();
        Ok(Self {
            bytes: payload.to_vec(),
            len,
            ones,
        })
    }

    /// The payload of our own `bitfield` message.
    pub fn as_wire(&self) -> &[u8] {
        &self.bytes
    }

    /// How many pieces the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pieces are in the set.
    pub fn count_ones(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is in the set; `false` when out of range.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & mask(i) != 0
    }

    /// Adds piece `i`; returns whether it was newly added. Out of range is a
    /// no-op returning `false`.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= mask(i);
        self.ones += 1;
        true
    }

    /// Removes piece `i`; returns whether it was present.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] &= !mask(i);
        self.ones -= 1;
        true
    }

    /// The pieces in the set, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .flat_map(|(at, b)| {
                (0..8u32)
                    .filter(move |bit| b & (0x80 >> bit) != 0)
                    .map(move |bit| at as u32 * 8 + bit)
            })
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

fn byte_len(len: u32) -> usize {
    len.div_ceil(8) as usize
}

fn mask(i: u32) -> u8 {
    0x80 >> (i % 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_order_is_high_bit_first() {
        let mut bits = Bitfield::new(10);
        bits.set(0);
        bits.set(9);
        assert_eq!(bits.as_wire(), &[0x80, 0x40]);
        assert_eq!(bits.count_ones(), 2);
        assert!(!bits.get(10));
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(
            Bitfield::from_wire(&[0xff], 10),
            Err(BitfieldError::WrongLength {
                got: 1,
                expected: 2,
                pieces: 10
            })
        );
        assert_eq!(
            Bitfield::from_wire(&[0xff, 0xe0], 10),
            Err(BitfieldError::SpareBitsSet)
        );
        let ok = Bitfield::from_wire(&[0xff, 0xc0], 10);
        assert!(ok.is_ok_and(|b| b.is_full()));
    }

    proptest! {
        #[test]
        fn set_clear_iter_agree(len in 0u32..200, ops in proptest::collection::vec((0u32..220, any::<bool>()), 0..100)) {
            let mut bits = Bitfield::new(len);
            let mut model = std::collections::BTreeSet::new();
            for (i, add) in ops {
                if add {
                    prop_assert_eq!(bits.set(i), i < len && model.insert(i));
                } else {
                    prop_assert_eq!(bits.clear(i), model.remove(&i));
                }
            }
            prop_assert_eq!(bits.iter_ones().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(bits.count_ones() as usize, model.len());
            let back = Bitfield::from_wire(bits.as_wire(), len);
            prop_assert_eq!(back, Ok(bits));
        }
    }
}
