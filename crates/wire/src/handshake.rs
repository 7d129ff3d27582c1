//! The 68-byte BitTorrent handshake (BEP 3) and its reserved bits.
//!
//! Layout: `\x13BitTorrent protocol`, 8 reserved bytes, the 20-byte infohash,
//! the 20-byte peer id. The first [`HANDSHAKE_PREFIX_LEN`] bytes are decoded
//! on their own by [`HandshakePrefix`], because a listener serving several
//! torrents must learn the infohash (and answer with its own handshake)
//! before the remote's peer id arrives.

use lodestone_core::{InfoHash, PeerId};

/// The protocol header: a length byte (19) and the protocol name.
pub const PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";

/// Length of a whole handshake in bytes.
pub const HANDSHAKE_LEN: usize = 68;

/// Length of the part before the peer id: header, reserved bytes, infohash.
pub const HANDSHAKE_PREFIX_LEN: usize = 48;

/// Why a handshake was refused. Every variant is the remote's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first 20 bytes are not `\x13BitTorrent protocol` (another protocol,
    /// or an encrypted stream we do not speak).
    #[error("peer does not speak the BitTorrent protocol")]
    BadProtocol,
    /// The peer offered a different torrent than the one we asked for.
    #[error("peer sent infohash {got}, expected {expected}")]
    InfoHashMismatch {
        /// The infohash we asked for.
        expected: InfoHash,
        /// The infohash the peer sent.
        got: InfoHash,
    },
    /// Fewer bytes than the handshake needs.
    #[error("handshake truncated: {len} bytes, need {need}")]
    Truncated {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// The 8 reserved bytes of the handshake, where peers advertise extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// The bits lodestone advertises: the extension protocol (BEP 10), the
    /// fast extension (BEP 6) and DHT (BEP 5).
    pub const LODESTONE: Reserved = Reserved([0, 0, 0, 0, 0, 0x10, 0, 0x05]);

    /// Whether the BEP 10 extension protocol bit (`reserved[5] & 0x10`) is set.
    pub fn supports_extensions(&self) -> bool {
        self.0[5] & 0x10 != 0
    }

    /// Whether the BEP 5 DHT bit (`reserved[7] & 0x01`) is set: the peer
    /// accepts a `port` message.
    pub fn supports_dht(&self) -> bool {
        self.0[7] & 0x01 != 0
    }

    /// Whether the BEP 6 fast extension bit (`reserved[7] & 0x04`) is set.
    /// Fast messages are allowed only when both sides set it.
    pub fn supports_fast(&self) -> bool {
        self.0[7] & 0x04 != 0
    }

    /// Sets or clears the extension protocol bit.
    pub fn set_extensions(&mut self, on: bool) {
        set_bit(&mut self.0[5], 0x10, on);
    }

    /// Sets or clears the DHT bit.
    pub fn set_dht(&mut self, on: bool) {
        set_bit(&mut self.0[7], 0x01, on);
    }

    /// Sets or clears the fast extension bit.
    pub fn set_fast(&mut self, on: bool) {
        set_bit(&mut self.0[7], 0x04, on);
    }
}

fn set_bit(byte: &mut u8, mask: u8, on: bool) {
    if on {
        *byte |= mask;
    } else {
        *byte &= !mask;
    }
}

/// A decoded handshake: ours to send, or the remote's as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Extension bits.
    pub reserved: Reserved,
    /// The torrent this connection is for.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

impl Handshake {
    /// A handshake for `info_hash` from `peer_id` with the given bits.
    pub fn new(reserved: Reserved, info_hash: InfoHash, peer_id: PeerId) -> Self {
        Self {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// The 68 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..HANDSHAKE_PREFIX_LEN].copy_from_slice(&self.prefix().to_bytes());
        out[HANDSHAKE_PREFIX_LEN..].copy_from_slice(self.peer_id.as_bytes());
        out
    }

    /// Decodes the first [`HANDSHAKE_LEN`] bytes of `bytes`; anything after
    /// them (the first messages, often in the same segment) is left to the
    /// caller.
    pub fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let prefix = HandshakePrefix::decode(bytes)?;
        prefix.complete(&bytes[HANDSHAKE_PREFIX_LEN..])
    }

    /// Checks that the peer is talking about the torrent we expect.
    pub fn check_info_hash(&self, expected: &InfoHash) -> Result<(), HandshakeError> {
        self.prefix().check_info_hash(expected)
    }

    /// The part before the peer id.
    pub fn prefix(&self) -> HandshakePrefix {
        HandshakePrefix {
            reserved: self.reserved,
            info_hash: self.info_hash,
        }
    }
}

/// The first 48 bytes of a handshake: enough to route an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakePrefix {
    /// Extension bits.
    pub reserved: Reserved,
    /// The torrent the remote asks for.
    pub info_hash: InfoHash,
}

impl HandshakePrefix {
    /// The 48 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_PREFIX_LEN] {
        let mut out = [0u8; HANDSHAKE_PREFIX_LEN];
        out[..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved.0);
        out[28..48].copy_from_slice(self.info_hash.as_bytes());
        out
    }

    /// Decodes the first [`HANDSHAKE_PREFIX_LEN`] bytes of `bytes`.
    ///
    /// A wrong protocol header is reported as soon as the bytes present
    /// show it, even if fewer than 48 have arrived.
    pub fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let header = bytes.len().min(PROTOCOL.len());
        if bytes[..header] != PROTOCOL[..header] {
            return Err(HandshakeError::BadProtocol);
        }
        let Some(prefix) = bytes.first_chunk::<HANDSHAKE_PREFIX_LEN>() else {
            return Err(HandshakeError::Truncated {
                len: bytes.len(),
                need: HANDSHAKE_PREFIX_LEN,
            });
        };
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&prefix[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&prefix[28..48]);
        Ok(Self {
            reserved: Reserved(reserved),
            info_hash: InfoHash::new(info_hash),
        })
    }

    /// Completes the handshake with the 20 bytes that follow the prefix
    /// (extra bytes after them are ignored).
    pub fn complete(self, peer_id: &[u8]) -> Result<Handshake, HandshakeError> {
        let Some(id) = peer_id.first_chunk::<20>() else {
            return Err(HandshakeError::Truncated {
                len: HANDSHAKE_PREFIX_LEN + peer_id.len(),
                need: HANDSHAKE_LEN,
            });
        };
        Ok(Handshake {
            reserved: self.reserved,
            info_hash: self.info_hash,
            peer_id: PeerId::new(*id),
        })
    }

    /// Checks that the peer is talking about the torrent we expect.
    pub fn check_info_hash(&self, expected: &InfoHash) -> Result<(), HandshakeError> {
        if self.info_hash == *expected {
            Ok(())
        } else {
            Err(HandshakeError::InfoHashMismatch {
                expected: *expected,
                got: self.info_hash,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handshake {
        let mut reserved = Reserved::default();
        reserved.set_extensions(true);
        reserved.set_fast(true);
        Handshake::new(
            reserved,
            InfoHash::new([0xaa; 20]),
            PeerId::new(*b"-LS0001-abcdefghijkl"),
        )
    }

    #[test]
    fn golden_bytes() {
        let bytes = sample().to_bytes();
        assert_eq!(&bytes[..20], b"\x13BitTorrent protocol");
        assert_eq!(&bytes[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert_eq!(&bytes[28..48], &[0xaa; 20]);
        assert_eq!(&bytes[48..], b"-LS0001-abcdefghijkl");
    }

    #[test]
    fn round_trip_with_trailing_bytes() {
        let mut bytes = sample().to_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 1, 2]);
        assert_eq!(Handshake::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn two_step_decode() {
        let bytes = sample().to_bytes();
        let prefix = HandshakePrefix::decode(&bytes[..48]).unwrap();
        assert_eq!(prefix.info_hash, InfoHash::new([0xaa; 20]));
        assert!(prefix.reserved.supports_extensions());
        assert_eq!(prefix.complete(&bytes[48..]), Ok(sample()));
        assert_eq!(
            prefix.complete(&bytes[48..60]),
            Err(HandshakeError::Truncated { len: 60, need: 68 })
        );
    }

    #[test]
    fn truncated_and_bad_protocol() {
        let bytes = sample().to_bytes();
        for len in 0..HANDSHAKE_LEN {
            let err = Handshake::decode(&bytes[..len]).unwrap_err();
            assert!(matches!(err, HandshakeError::Truncated { len: l, .. } if l == len));
        }
        let mut bad = bytes;
        bad[5] = b'X';
        assert_eq!(Handshake::decode(&bad), Err(HandshakeError::BadProtocol));
        // A wrong header is visible before 48 bytes have arrived.
        assert_eq!(
            HandshakePrefix::decode(b"GET / HTTP/1.1"),
            Err(HandshakeError::BadProtocol)
        );
    }

    #[test]
    fn info_hash_check() {
        let hs = sample();
        assert_eq!(hs.check_info_hash(&InfoHash::new([0xaa; 20])), Ok(()));
        assert_eq!(
            hs.check_info_hash(&InfoHash::new([0xbb; 20])),
            Err(HandshakeError::InfoHashMismatch {
                expected: InfoHash::new([0xbb; 20]),
                got: InfoHash::new([0xaa; 20]),
            })
        );
    }

    #[test]
    fn reserved_bits() {
        let mut r = Reserved::default();
        assert!(!r.supports_extensions() && !r.supports_dht() && !r.supports_fast());
        r.set_dht(true);
        assert_eq!(r.0, [0, 0, 0, 0, 0, 0, 0, 0x01]);
        r.set_fast(true);
        r.set_extensions(true);
        assert_eq!(r, Reserved::LODESTONE);
        assert!(r.supports_extensions() && r.supports_dht() && r.supports_fast());
        r.set_dht(false);
        r.set_fast(false);
        r.set_extensions(false);
        assert_eq!(r, Reserved::default());
    }
}
