//! Hostile peers against the peer wire codecs: each attack ends in a typed
//! error (the peer's fault) before anything large is allocated.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::{BufMut, BytesMut};
use lodestone_core::InfoHash;
use lodestone_download::bitfield::{Bitfield, BitfieldError};
use lodestone_metadata::{Action, DropReason, Fetch, FetchConfig};
use lodestone_wire::codec::DEFAULT_MAX_LEN;
use lodestone_wire::handshake::{HANDSHAKE_LEN, PROTOCOL};
use lodestone_wire::{
    Decoder, ExtendedHandshake, ExtensionError, Handshake, HandshakeError, HandshakePrefix,
    Message, MessageError,
};

fn frame(len: u32, id: u8, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u32(len);
    buf.put_u8(id);
    buf.put_slice(payload);
    buf
}

#[test]
fn four_gib_length_prefix_is_refused_from_the_prefix_alone() {
    let decoder = Decoder::new();
    // Only the four prefix bytes have arrived: refused already.
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    let capacity = buf.capacity();
    let err = decoder.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        MessageError::TooLong {
            id: None,
            len: u32::MAX,
            ..
        }
    ));
    assert_eq!(buf.len(), 4, "a refused frame is not consumed");
    assert_eq!(buf.capacity(), capacity, "nothing reserved for the body");
    // The same with the id byte of a piece: still refused, still no growth.
    let mut buf = frame(u32::MAX, 7, &[]);
    let capacity = buf.capacity();
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong { len: u32::MAX, .. })
    ));
    assert_eq!(buf.capacity(), capacity);
}

#[test]
fn lengths_just_past_the_limit_name_the_message() {
    let decoder = Decoder::new();
    let mut buf = frame(DEFAULT_MAX_LEN + 1, 7, &[]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong {
            id: Some(7),
            len: DEFAULT_MAX_LEN + 1,
            max: DEFAULT_MAX_LEN
        })
    );
    // Control: at the limit the decoder waits for the body.
    let mut buf = frame(DEFAULT_MAX_LEN, 7, &[]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    // Fixed-size messages of the wrong size: a `have` of 6 bytes.
    let mut buf = frame(6, 4, &[0; 5]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(MessageError::BadLength { id: 4, len: 6 })
    );
}

#[test]
fn bitfield_of_the_wrong_length_for_the_piece_count() {
    // 10 pieces: the bitfield payload is exactly 2 bytes, its frame length 3.
    let decoder = Decoder::new().with_piece_count(10);
    let mut buf = frame(4, 5, &[0xff, 0xc0, 0x00]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong {
            id: Some(5),
            len: 4,
            max: 3
        })
    );
    // A huge bitfield for a small torrent is refused before its body arrives.
    let mut buf = frame(1 << 20, 5, &[]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong { len: 0x10_0000, .. })
    ));
    // Too short passes the codec (it bounds only the maximum), then the
    // bitfield itself refuses it.
    let mut buf = frame(2, 5, &[0xff]);
    let Ok(Some(Message::Bitfield(bits))) = decoder.decode(&mut buf) else {
        panic!("a short bitfield is the bitfield's business");
    };
    assert_eq!(
        Bitfield::from_wire(&bits, 10),
        Err(BitfieldError::WrongLength {
            got: 1,
            expected: 2,
            pieces: 10
        })
    );
    // Bits past the last piece set.
    assert_eq!(
        Bitfield::from_wire(&[0xff, 0xe0], 10),
        Err(BitfieldError::SpareBitsSet)
    );
    // Control.
    let mut buf = frame(3, 5, &[0xff, 0xc0]);
    let Ok(Some(Message::Bitfield(bits))) = decoder.decode(&mut buf) else {
        panic!("a right-sized bitfield decodes");
    };
    assert!(Bitfield::from_wire(&bits, 10).unwrap().is_full());
}

#[test]
fn garbage_handshakes_are_refused() {
    let garbage: [&[u8]; 5] = [
        b"GET /announce?info_hash=x HTTP/1.1\r\nHost: a\r\n\r\n",
        // An encrypted (MSE) stream starts with a random Diffie-Hellman key.
        &[0x8e, 0x21, 0x5f, 0x01, 0x77, 0x00, 0xff, 0x13, 0x42, 0x42],
        b"\x13BitTorrent protocoX",
        b"\x14BitTorrent protocol",
        &[0u8; HANDSHAKE_LEN],
    ];
    for bytes in garbage {
        assert_eq!(
            Handshake::decode(bytes),
            Err(HandshakeError::BadProtocol),
            "{bytes:?}"
        );
        assert_eq!(
            HandshakePrefix::decode(bytes),
            Err(HandshakeError::BadProtocol)
        );
    }
    assert_eq!(
        Handshake::decode(&PROTOCOL[..]),
        Err(HandshakeError::Truncated { len: 20, need: 48 })
    );
    assert_eq!(
        Handshake::decode(&[]),
        Err(HandshakeError::Truncated { len: 0, need: 48 })
    );
    let mut wrong_torrent = [0u8; HANDSHAKE_LEN];
    wrong_torrent[..20].copy_from_slice(PROTOCOL);
    let hs = Handshake::decode(&wrong_torrent).unwrap();
    assert!(matches!(
        hs.check_info_hash(&InfoHash::new([1; 20])),
        Err(HandshakeError::InfoHashMismatch { .. })
    ));
}

/// An extension handshake whose `m` lists `count` extensions.
fn many_extensions(count: usize) -> Vec<u8> {
    let mut m = String::from("d1:md");
    // Zero-padded names are already in ascending order.
    for i in 0..count {
        m.push_str(&format!("6:x{i:05}i1e"));
    }
    m.push_str("ee");
    m.into_bytes()
}

#[test]
fn hostile_extension_handshakes_are_refused() {
    // Five thousand extensions: past the `m` cap.
    assert!(matches!(
        ExtendedHandshake::decode(&many_extensions(5_000)),
        Err(ExtensionError::TooManyExtensions { count: 5_000, .. })
    ));
    // Ten thousand: past the scanner's item cap, refused before any map is built.
    assert!(matches!(
        ExtendedHandshake::decode(&many_extensions(10_000)),
        Err(ExtensionError::Bencode(_))
    ));
    // Nesting deep enough to blow a recursive parser's stack.
    let deep = [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat();
    assert!(matches!(
        ExtendedHandshake::decode(&deep),
        Err(ExtensionError::Bencode(_))
    ));
    assert_eq!(
        ExtendedHandshake::decode(b"le"),
        Err(ExtensionError::NotADict)
    );
    // Control: a real-looking one decodes.
    let ok = ExtendedHandshake::decode(b"d1:md11:ut_metadatai3ee13:metadata_sizei400ee").unwrap();
    assert_eq!(ok.extension_id("ut_metadata"), Some(3));
}

#[test]
fn a_huge_metadata_size_claim_drops_the_peer_before_any_allocation() {
    let now = Instant::now();
    let mut fetch: Fetch<u32> = Fetch::new(InfoHash::new([3; 20]), FetchConfig::default());
    let claim = ExtendedHandshake::decode(b"d13:metadata_sizei9223372036854775807ee").unwrap();
    fetch.peer_ready(now, 1, claim.metadata_size);
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 1,
            reason: DropReason::MetadataTooLarge {
                size: i64::MAX as u64,
                limit: FetchConfig::default().max_metadata_size
            }
        })
    );
    fetch.peer_ready(now, 2, Some(0));
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 2,
            reason: DropReason::MetadataEmpty
        })
    );
    // Control: a plausible size gets a request.
    fetch.peer_ready(now, 3, Some(400));
    assert!(matches!(
        fetch.poll_action(),
        Some(Action::Send { peer: 3, .. })
    ));
}
