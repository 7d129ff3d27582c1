use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn req(index: u32, begin: u32, length: u32) -> BlockRequest {
    BlockRequest {
        index,
        begin,
        length,
    }
}

/// Every message kind with its exact encoding.
fn golden() -> Vec<(Message, Vec<u8>)> {
    vec![
        (Message::KeepAlive, vec![0, 0, 0, 0]),
        (Message::Choke, vec![0, 0, 0, 1, 0]),
        (Message::Unchoke, vec![0, 0, 0, 1, 1]),
        (Message::Interested, vec![0, 0, 0, 1, 2]),
        (Message::NotInterested, vec![0, 0, 0, 1, 3]),
        (Message::Have(0x0102_0304), vec![0, 0, 0, 5, 4, 1, 2, 3, 4]),
        (
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            vec![0, 0, 0, 3, 5, 0xff, 0x80],
        ),
        (
            Message::Request(req(1, 0x4000, 0x4000)),
            vec![0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
        ),
        (
            Message::Piece(Block {
                index: 2,
                begin: 3,
                data: Bytes::from_static(b"abc"),
            }),
            vec![0, 0, 0, 12, 7, 0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c'],
        ),
        (
            Message::Cancel(req(1, 2, 3)),
            vec![0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3],
        ),
        (Message::Port(6881), vec![0, 0, 0, 3, 9, 0x1a, 0xe1]),
        (Message::Suggest(7), vec![0, 0, 0, 5, 13, 0, 0, 0, 7]),
        (Message::HaveAll, vec![0, 0, 0, 1, 14]),
        (Message::HaveNone, vec![0, 0, 0, 1, 15]),
        (
            Message::Reject(req(4, 5, 6)),
            vec![0, 0, 0, 13, 16, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6],
        ),
        (Message::AllowedFast(9), vec![0, 0, 0, 5, 17, 0, 0, 0, 9]),
        (
            Message::Extended {
                id: 3,
                payload: Bytes::from_static(b"de"),
            },
            vec![0, 0, 0, 4, 20, 3, b'd', b'e'],
        ),
        (
            Message::Unknown { id: 42, len: 2 },
            vec![0, 0, 0, 3, 42, 0, 0],
        ),
    ]
}

fn decode_all(decoder: &Decoder, buf: &mut BytesMut) -> Result<Vec<Message>, MessageError> {
    let mut out = Vec::new();
    while let Some(m) = decoder.decode(buf)? {
        out.push(m);
    }
    Ok(out)
}

#[test]
fn golden_encode_and_decode() {
    let decoder = Decoder::new();
    for (message, bytes) in golden() {
        let mut out = BytesMut::new();
        encode(&message, &mut out);
        assert_eq!(&out[..], &bytes[..], "{message:?}");
        assert_eq!(encoded_len(&message), bytes.len());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(message)));
        assert!(buf.is_empty());
    }
}

#[test]
fn piece_header_is_the_start_of_a_piece() {
    let block = Block {
        index: 9,
        begin: 16384,
        data: Bytes::from(vec![1u8; 5000]),
    };
    let mut whole = BytesMut::new();
    encode(&Message::Piece(block.clone()), &mut whole);
    let mut header = BytesMut::new();
    encode_piece_header(block.index, block.begin, block.data.len(), &mut header);
    assert_eq!(&header[..], &whole[..13]);
}

#[test]
fn incomplete_leaves_buffer_untouched() {
    let decoder = Decoder::new();
    for (message, bytes) in golden() {
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(
                decoder.decode(&mut buf),
                Ok(None),
                "{message:?} cut at {cut}"
            );
            assert_eq!(buf.len(), cut);
        }
    }
}

#[test]
fn huge_prefix_is_refused_immediately() {
    let decoder = Decoder::new();
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong {
            id: None,
            len: u32::MAX,
            max: DEFAULT_MAX_BITFIELD_LEN
        })
    );
    // Above the general limit but below the bitfield limit: the id decides.
    let mut buf = BytesMut::from(&[0, 0, 0x80, 0x01][..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&[id::PIECE]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong {
            id: Some(id::PIECE),
            len: 0x8001,
            max: DEFAULT_MAX_LEN
        })
    );
    let mut buf = BytesMut::from(&[0, 0, 0x80, 0x01, id::BITFIELD][..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
}

#[test]
fn limits_are_configurable() {
    let decoder = Decoder::new().with_max_len(100).with_piece_count(17);
    assert_eq!(decoder.max_bitfield_len(), 4);
    let mut buf = BytesMut::from(&[0, 0, 0, 4, id::BITFIELD, 0, 0, 0][..]);
    assert!(matches!(decoder.decode(&mut buf), Ok(Some(Message::Bitfield(b))) if b.len() == 3));
    let mut buf = BytesMut::from(&[0, 0, 0, 5, id::BITFIELD][..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong { max: 4, .. })
    ));
    let mut buf = BytesMut::from(&[0, 0, 0, 101, 99][..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(MessageError::TooLong { max: 100, .. })
    ));
}

#[test]
fn fixed_sizes_are_exact() {
    let decoder = Decoder::new();
    let cases: &[(u8, &[u32])] = &[
        (id::CHOKE, &[2, 5]),
        (id::HAVE_ALL, &[2]),
        (id::HAVE, &[1, 4, 6]),
        (id::REQUEST, &[12, 14, 17]),
        (id::REJECT, &[1, 14]),
        (id::PORT, &[2, 4]),
        (id::PIECE, &[1, 8]),
        (id::EXTENDED, &[1]),
    ];
    for &(msg_id, lens) in cases {
        for &len in lens {
            // The header alone is enough to refuse it.
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&[msg_id]);
            assert_eq!(
                decoder.decode(&mut buf),
                Err(MessageError::BadLength { id: msg_id, len }),
            );
        }
    }
}

#[test]
fn empty_piece_and_extended_are_valid() {
    let decoder = Decoder::new();
    let mut buf = BytesMut::from(&[0, 0, 0, 9, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 20, 0][..]);
    assert_eq!(
        decode_all(&decoder, &mut buf),
        Ok(vec![
            Message::Piece(Block {
                index: 1,
                begin: 2,
                data: Bytes::new()
            }),
            Message::Extended {
                id: 0,
                payload: Bytes::new()
            }
        ])
    );
}

#[test]
fn piece_data_shares_the_receive_buffer() {
    let block = Message::Piece(Block {
        index: 0,
        begin: 0,
        data: Bytes::from(vec![7u8; 16384]),
    });
    let mut buf = BytesMut::new();
    encode(&block, &mut buf);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Message::Piece(decoded))) = Decoder::new().decode(&mut buf) else {
        panic!("expected a piece");
    };
    assert_eq!(decoded.data.as_ptr() as usize, start + 13);
    assert_eq!(decoded.request(), Some(req(0, 0, 16384)));
}

fn arb_request() -> impl Strategy<Value = BlockRequest> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(i, b, l)| req(i, b, l))
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
        any::<u32>().prop_map(Message::Have),
        any::<u32>().prop_map(Message::Suggest),
        any::<u32>().prop_map(Message::AllowedFast),
        any::<u16>().prop_map(Message::Port),
        arb_request().prop_map(Message::Request),
        arb_request().prop_map(Message::Cancel),
        arb_request().prop_map(Message::Reject),
        arb_bytes(64).prop_map(Message::Bitfield),
        (any::<u32>(), any::<u32>(), arb_bytes(300))
            .prop_map(|(index, begin, data)| Message::Piece(Block { index, begin, data })),
        (any::<u8>(), arb_bytes(100)).prop_map(|(id, payload)| Message::Extended { id, payload }),
        // Ids 10..=12 and 18..=19, 21.. are unassigned here.
        (prop_oneof![10u8..=12, 18u8..=19, 21u8..=255], 0u32..50)
            .prop_map(|(id, len)| Message::Unknown { id, len }),
    ]
}

/// Feeds `stream` to the decoder in chunks ending at `cuts`, decoding as
/// much as possible after each chunk; stops at the first error.
fn decode_chunked(
    decoder: &Decoder,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Message>, Option<MessageError>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for cut in cuts {
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

proptest! {
    #[test]
    fn round_trip_any_chunking(
        messages in proptest::collection::vec(arb_message(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = BytesMut::new();
        for m in &messages {
            encode(m, &mut stream);
        }
        let (decoded, err) = decode_chunked(&Decoder::new(), &stream, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_ignore_chunking(
        stream in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max_len in 1u32..200,
    ) {
        let decoder = Decoder::new().with_max_len(max_len).with_max_bitfield_len(max_len);
        let whole = decode_chunked(&decoder, &stream, &[]);
        let chunked = decode_chunked(&decoder, &stream, &cuts);
        prop_assert_eq!(whole, chunked);
    }
}
