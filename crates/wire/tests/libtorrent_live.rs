//! Live interop with a real libtorrent seeder: handshake, BEP 10 extension
//! handshake, ut_metadata fetch, then every block of the torrent, each piece
//! checked by SHA-1. It prints the block throughput it saw.
//!
//! Ignored by default because it needs the seeder. Inside a fresh network
//! namespace only (`unshare -n -m`, `ip link set lo up`), start
//! `tests/libtorrent_seeder.py DIR MIB`, then run this test with
//! `LODESTONE_WIRE_LT_PEER=127.0.0.1:6881 LODESTONE_WIRE_LT_INFOHASH=<hex>`
//! and `-- --ignored`.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_bencode::{Limits, Writer, parse_prefix};
use lodestone_core::{InfoHash, Metainfo, PeerId};
use lodestone_wire::extension::UT_METADATA;
use lodestone_wire::{
    BlockRequest, Connection, ConnectionReader, Decoder, ExtendedHandshake, Handshake, Message,
    Reserved,
};
use sha1::{Digest, Sha1};

const TIMEOUT: Duration = Duration::from_secs(10);
const OUR_UT_METADATA: u8 = 3;
const BLOCK: u32 = 16 * 1024;
const PIPELINE: usize = 500;

async fn recv(reader: &mut ConnectionReader) -> Message {
    tokio::time::timeout(TIMEOUT, reader.recv())
        .await
        .expect("libtorrent went quiet")
        .unwrap()
}

#[tokio::test]
#[ignore = "needs a libtorrent seeder in a network namespace; see the module docs"]
async fn download_from_libtorrent() {
    let peer: SocketAddr = std::env::var("LODESTONE_WIRE_LT_PEER")
        .expect("LODESTONE_WIRE_LT_PEER")
        .parse()
        .unwrap();
    let info_hash = InfoHash::from_hex(
        &std::env::var("LODESTONE_WIRE_LT_INFOHASH").expect("LODESTONE_WIRE_LT_INFOHASH"),
    )
    .unwrap();
    let ours = Handshake::new(
        Reserved::LODESTONE,
        info_hash,
        PeerId::new(*b"-LS0001-livetest0001"),
    );
    let (conn, theirs) = Connection::connect(peer, TIMEOUT, ours).await.unwrap();
    assert!(theirs.reserved.supports_extensions() && theirs.reserved.supports_fast());
    let (mut reader, mut writer) = conn.into_split();

    let our_ext = ExtendedHandshake {
        m: [(UT_METADATA.to_owned(), OUR_UT_METADATA)]
            .into_iter()
            .collect(),
        v: Some("lodestone-wire live test".to_owned()),
        reqq: Some(PIPELINE as u32),
        ..ExtendedHandshake::default()
    };
    writer
        .send_batch(&[our_ext.to_message(), Message::HaveNone, Message::Interested])
        .await
        .unwrap();

    // Their extension handshake, then the metadata over ut_metadata.
    let their_ext = loop {
        if let Message::Extended { id: 0, payload } = recv(&mut reader).await {
            break ExtendedHandshake::decode(&payload).unwrap();
        }
    };
    let their_ut_metadata = their_ext.extension_id(UT_METADATA).unwrap();
    let size = usize::try_from(their_ext.metadata_size.unwrap()).unwrap();
    assert!(size <= 1 << 20);
    let mut raw_info = vec![0u8; size];
    let meta_pieces = size.div_ceil(16384);
    for piece in 0..meta_pieces {
        let mut payload = Vec::new();
        Writer::new(&mut payload).dict(|d| {
            d.int(b"msg_type", 0);
            d.int(b"piece", piece as i64);
        });
        writer.feed(&Message::Extended {
            id: their_ut_metadata,
            payload: payload.into(),
        });
    }
    writer.flush().await.unwrap();
    let mut unchoked = false;
    let mut meta_received = 0;
    while meta_received < meta_pieces {
        match recv(&mut reader).await {
            Message::Extended {
                id: OUR_UT_METADATA,
                payload,
            } => {
                let (doc, end) = parse_prefix(&payload, &Limits::PEER_MESSAGE).unwrap();
                let dict = doc.root().as_dict().unwrap();
                assert_eq!(dict.get_int(b"msg_type"), Some(1));
                let piece = usize::try_from(dict.get_int(b"piece").unwrap()).unwrap();
                let data = &payload[end..];
                raw_info[piece * 16384..piece * 16384 + data.len()].copy_from_slice(data);
                meta_received += 1;
            }
            Message::Unchoke => unchoked = true,
            _ => {}
        }
    }
    let meta = Metainfo::from_info_bytes(raw_info).unwrap();
    assert_eq!(meta.info_hash, info_hash);
    let info = &meta.info;
    reader.set_decoder(Decoder::new().with_piece_count(info.piece_count()));

    // Every block, PIPELINE in flight.
    let mut todo: VecDeque<BlockRequest> = (0..info.piece_count())
        .flat_map(|index| {
            let size = info.piece_size(index);
            (0..size)
                .step_by(BLOCK as usize)
                .map(move |begin| BlockRequest {
                    index,
                    begin,
                    length: BLOCK.min(size - begin),
                })
        })
        .collect();
    let blocks = todo.len();
    let mut data = vec![0u8; usize::try_from(info.total_length).unwrap()];
    let mut in_flight = 0usize;
    let mut received = 0usize;
    let start = Instant::now();
    while received < blocks {
        if unchoked {
            while in_flight < PIPELINE {
                let Some(request) = todo.pop_front() else {
                    break;
                };
                writer.feed(&Message::Request(request));
                in_flight += 1;
            }
            writer.flush().await.unwrap();
        }
        let mut next = Some(recv(&mut reader).await);
        while let Some(message) = next {
            match message {
                Message::Unchoke => unchoked = true,
                Message::Piece(block) => {
                    let offset = u64::from(block.index) * u64::from(info.piece_length)
                        + u64::from(block.begin);
                    let offset = usize::try_from(offset).unwrap();
                    data[offset..offset + block.data.len()].copy_from_slice(&block.data);
                    in_flight -= 1;
                    received += 1;
                }
                Message::Choke | Message::Reject(_) => panic!("libtorrent refused: {message:?}"),
                _ => {}
            }
            next = reader.try_recv().unwrap();
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{} MiB from libtorrent in {:.3} s: {:.0} MB/s",
        data.len() >> 20,
        elapsed.as_secs_f64(),
        data.len() as f64 / elapsed.as_secs_f64() / 1e6
    );
    for index in 0..info.piece_count() {
        let range = info.piece_range(index);
        let piece =
            &data[usize::try_from(range.start).unwrap()..usize::try_from(range.end).unwrap()];
        let digest: [u8; 20] = Sha1::digest(piece).into();
        assert_eq!(Some(&digest), info.piece_hash(index), "piece {index}");
    }
}
