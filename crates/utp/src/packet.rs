//! The uTP packet: a 20-byte header, a bounded chain of extensions (only
//! selective ack is understood) and the payload.
//!
//! Parsing never allocates and never panics: every length is checked against
//! the datagram before it is used, and the extension chain is capped, so a
//! hostile datagram costs a bounded amount of work.

use thiserror::Error;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;

/// Most extensions we walk in one packet; real clients send at most two.
pub const MAX_EXTENSIONS: usize = 4;

/// Longest selective-ack bitmask we accept, in bytes (libtorrent sends up to
/// 32; the spec allows any multiple of four).
pub const MAX_SACK_BYTES: usize = 32;

/// Extension id of selective ack.
const EXT_SACK: u8 = 1;

/// The protocol version this crate speaks.
const VERSION: u8 = 1;

/// What a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Payload data.
    Data = 0,
    /// The sender's last packet: it has nothing more to send.
    Fin = 1,
    /// An acknowledgement without payload.
    State = 2,
    /// Abort the connection.
    Reset = 3,
    /// Open a connection.
    Syn = 4,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }
}

/// Why a datagram is not a uTP packet. All are the sender's fault: the
/// packet is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Shorter than the fixed header.
    #[error("datagram of {0} bytes is shorter than the uTP header")]
    TooShort(usize),
    /// Not version 1.
    #[error("unsupported uTP version {0}")]
    Version(u8),
    /// A type nibble above 4.
    #[error("unknown uTP packet type {0}")]
    Type(u8),
    /// An extension runs past the end of the datagram.
    #[error("uTP extension runs past the end of the datagram")]
    Truncated,
    /// More extensions than [`MAX_EXTENSIONS`].
    #[error("more than {MAX_EXTENSIONS} uTP extensions")]
    TooManyExtensions,
    /// A selective ack that is empty, not a multiple of 4 bytes or longer
    /// than [`MAX_SACK_BYTES`].
    #[error("selective ack of {0} bytes")]
    BadSack(usize),
}

/// The fixed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the packet is for.
    pub kind: PacketType,
    /// The receiving side's connection id.
    pub connection_id: u16,
    /// Sender's clock in microseconds when it sent this, wrapping.
    pub timestamp_us: u32,
    /// Sender's last measured one-way delay from us (its clock minus our
    /// timestamp), the LEDBAT input.
    pub timestamp_diff_us: u32,
    /// Bytes the sender can still take into its receive buffer.
    pub wnd_size: u32,
    /// This packet's sequence number (for STATE: the next one to be sent).
    pub seq_nr: u16,
    /// The last sequence number the sender received in order.
    pub ack_nr: u16,
}

/// A parsed packet borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header.
    pub header: Header,
    /// Selective-ack bitmask: bit `i` (LSB first within each byte) set means
    /// `ack_nr + 2 + i` was received.
    pub sack: Option<&'a [u8]>,
    /// The payload after all extensions.
    pub payload: &'a [u8],
}

/// Whether `bytes` looks like a uTP packet, without walking extensions:
/// the demultiplexer's test (version 1 and a known type in the first byte,
/// and the full header present). A bencoded KRPC message starts with `d`
/// (0x64), whose low nibble is 4, so the two never overlap.
pub fn looks_like_utp(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[0] & 0x0f == VERSION
        && PacketType::from_nibble(bytes[0] >> 4).is_some()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::TooShort(bytes.len()));
        }
        let version = bytes[0] & 0x0f;
        if version != VERSION {
            return Err(ParseError::Version(version));
        }
        let kind = PacketType::from_nibble(bytes[0] >> 4).ok_or(ParseError::Type(bytes[0] >> 4))?;
        let header = Header {
            kind,
            connection_id: be16(bytes, 2),
            timestamp_us: be32(bytes, 4),
            timestamp_diff_us: be32(bytes, 8),
            wnd_size: be32(bytes, 12),
            seq_nr: be16(bytes, 16),
            ack_nr: be16(bytes, 18),
        };
        let mut next = bytes[1];
        let mut at = HEADER_LEN;
        let mut sack = None;
        let mut count = 0;
        while next != 0 {
            count += 1;
            if count > MAX_EXTENSIONS {
                return Err(ParseError::TooManyExtensions);
            }
            let [kind, len] = *bytes.get(at..at + 2).ok_or(ParseError::Truncated)? else {
                return Err(ParseError::Truncated);
            };
            let body = bytes
                .get(at + 2..at + 2 + usize::from(len))
                .ok_or(ParseError::Truncated)?;
            if next == EXT_SACK {
                if body.is_empty() || body.len() % 4 != 0 || body.len() > MAX_SACK_BYTES {
                    return Err(ParseError::BadSack(body.len()));
                }
                sack = Some(body);
            }
            // Unknown extensions are skipped: the chain says how long they are.
            next = kind;
            at += 2 + usize::from(len);
        }
        Ok(Packet {
            header,
            sack,
            payload: &bytes[at..],
        })
    }

    /// Appends the encoded packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let h = &self.header;
        out.push(((h.kind as u8) << 4) | VERSION);
        out.push(if self.sack.is_some() { EXT_SACK } else { 0 });
        out.extend_from_slice(&h.connection_id.to_be_bytes());
        out.extend_from_slice(&h.timestamp_us.to_be_bytes());
        out.extend_from_slice(&h.timestamp_diff_us.to_be_bytes());
        out.extend_from_slice(&h.wnd_size.to_be_bytes());
        out.extend_from_slice(&h.seq_nr.to_be_bytes());
        out.extend_from_slice(&h.ack_nr.to_be_bytes());
        if let Some(mask) = self.sack {
            out.push(0);
            // Callers build masks of at most MAX_SACK_BYTES.
            out.push(mask.len().min(MAX_SACK_BYTES) as u8);
            out.extend_from_slice(&mask[..mask.len().min(MAX_SACK_BYTES)]);
        }
        out.extend_from_slice(self.payload);
    }
}

/// `a` comes before `b` in wrapping sequence space.
pub fn seq_lt(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: PacketType) -> Header {
        Header {
            kind,
            connection_id: 0x1234,
            timestamp_us: 7,
            timestamp_diff_us: 9,
            wnd_size: 65536,
            seq_nr: 65535,
            ack_nr: 3,
        }
    }

    #[test]
    fn round_trip_with_sack() {
        let mask = [0b101u8, 0, 0, 0x80];
        let p = Packet {
            header: header(PacketType::Data),
            sack: Some(&mask),
            payload: b"hello",
        };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), HEADER_LEN + 2 + 4 + 5);
        assert!(looks_like_utp(&out));
        assert_eq!(Packet::parse(&out), Ok(p));
    }

    #[test]
    fn golden_syn() {
        // A SYN as libtorrent sends it: type 4, version 1, no extension.
        let bytes = [
            0x41, 0, 0x30, 0x39, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0,
        ];
        let p = Packet::parse(&bytes).expect("valid SYN");
        assert_eq!(p.header.kind, PacketType::Syn);
        assert_eq!(p.header.connection_id, 12345);
        assert_eq!(p.header.wnd_size, 0x100000);
        assert_eq!(p.header.seq_nr, 1);
        assert!(p.payload.is_empty());
    }

    #[test]
    fn rejects_bad_headers() {
        let mut out = Vec::new();
        Packet {
            header: header(PacketType::State),
            sack: None,
            payload: &[],
        }
        .encode(&mut out);
        assert_eq!(Packet::parse(&out[..19]), Err(ParseError::TooShort(19)));
        let mut v2 = out.clone();
        v2[0] = 0x22;
        assert_eq!(Packet::parse(&v2), Err(ParseError::Version(2)));
        let mut t5 = out.clone();
        t5[0] = 0x51;
        assert_eq!(Packet::parse(&t5), Err(ParseError::Type(5)));
        let mut ext = out.clone();
        ext[1] = 1;
        assert_eq!(Packet::parse(&ext), Err(ParseError::Truncated));
        ext.extend_from_slice(&[0, 3, 1, 2, 3]);
        assert_eq!(Packet::parse(&ext), Err(ParseError::BadSack(3)));
        // A chain of unknown extensions, each pointing to the next.
        let mut chain = out.clone();
        chain[1] = 9;
        for _ in 0..MAX_EXTENSIONS + 1 {
            chain.extend_from_slice(&[9, 0]);
        }
        assert_eq!(Packet::parse(&chain), Err(ParseError::TooManyExtensions));
    }

    #[test]
    fn wrapping_order() {
        assert!(seq_lt(65535, 0));
        assert!(seq_lt(1, 2));
        assert!(!seq_lt(2, 2));
        assert!(!seq_lt(0, 65535));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&bytes) {
                let mut out = Vec::new();
                p.encode(&mut out);
                let again = Packet::parse(&out).expect("re-encoded packet parses");
                prop_assert_eq!(again.header, p.header);
                prop_assert_eq!(again.sack, p.sack);
                prop_assert_eq!(again.payload, p.payload);
            }
        }
    }
}
