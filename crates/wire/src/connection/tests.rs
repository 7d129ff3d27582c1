use std::time::Duration;

use bytes::Bytes;
use lodestone_core::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::handshake::Reserved;
use crate::message::{Block, BlockRequest};

const TIMEOUT: Duration = Duration::from_secs(10);

fn handshake(info_hash: u8, peer: u8) -> Handshake {
    Handshake::new(
        Reserved::LODESTONE,
        InfoHash::new([info_hash; 20]),
        PeerId::new([peer; 20]),
    )
}

fn every_message() -> Vec<Message> {
    let r = BlockRequest {
        index: 3,
        begin: 16384,
        length: 16384,
    };
    vec![
        Message::KeepAlive,
        Message::Bitfield(Bytes::from_static(&[0xa5, 0x80])),
        Message::Choke,
        Message::Unchoke,
        Message::Interested,
        Message::NotInterested,
        Message::Have(7),
        Message::Request(r),
        Message::Piece(Block {
            index: 3,
            begin: 16384,
            data: Bytes::from((0..16384u32).map(|i| i as u8).collect::<Vec<_>>()),
        }),
        Message::Cancel(r),
        Message::Port(6881),
        Message::Suggest(1),
        Message::HaveAll,
        Message::HaveNone,
        Message::Reject(r),
        Message::AllowedFast(2),
        Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"d1:md11:ut_metadatai3eee"),
        },
        Message::Unknown { id: 99, len: 5 },
    ]
}

async fn pair() -> ((Connection, Handshake), (Connection, Handshake)) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (stream, _) = listener.accept().await.unwrap();
        Connection::accept(stream, TIMEOUT, handshake(1, 0xbb)).await
    };
    let client = Connection::connect(addr, TIMEOUT, handshake(1, 0xaa));
    let (client, server) = tokio::join!(client, server);
    (client.unwrap(), server.unwrap())
}

#[tokio::test]
async fn handshake_and_every_message_both_ways() {
    let ((client, server_hs), (server, client_hs)) = pair().await;
    assert_eq!(server_hs, handshake(1, 0xbb));
    assert_eq!(client_hs, handshake(1, 0xaa));
    assert!(client.peer_addr().unwrap().ip().is_loopback());

    let messages = every_message();
    let (mut c_read, mut c_write) = client.into_split();
    let (mut s_read, mut s_write) = server.into_split();
    let send = async {
        // One message at a time one way, one batch the other way.
        for m in &messages {
            c_write.send(m).await.unwrap();
        }
        s_write.send_batch(&messages).await.unwrap();
    };
    let receive = async {
        let mut at_server = Vec::new();
        let mut at_client = Vec::new();
        for _ in 0..messages.len() {
            at_server.push(s_read.recv().await.unwrap());
            at_client.push(c_read.recv().await.unwrap());
        }
        (at_server, at_client)
    };
    let ((), (at_server, at_client)) = tokio::join!(send, receive);
    assert_eq!(at_server, messages);
    assert_eq!(at_client, messages);

    // Closing our side shows up as Closed at the peer.
    c_write.shutdown().await.unwrap();
    assert!(matches!(s_read.recv().await, Err(ConnectionError::Closed)));
}

#[tokio::test]
async fn messages_in_the_handshake_segment_are_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = async {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut theirs = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut theirs).await.unwrap();
        // Handshake, bitfield and unchoke in a single write.
        let mut bytes = BytesMut::from(&handshake(1, 0xbb).to_bytes()[..]);
        encode(&Message::HaveAll, &mut bytes);
        encode(&Message::Unchoke, &mut bytes);
        stream.write_all(&bytes).await.unwrap();
        stream
    };
    let (conn, _stream) =
        tokio::join!(Connection::connect(addr, TIMEOUT, handshake(1, 0xaa)), peer);
    let (mut conn, theirs) = conn.unwrap();
    assert_eq!(theirs.peer_id, PeerId::new([0xbb; 20]));
    assert_eq!(conn.recv().await.unwrap(), Message::HaveAll);
    assert_eq!(conn.recv().await.unwrap(), Message::Unchoke);
}

#[tokio::test]
async fn wrong_info_hash_is_refused_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (stream, _) = listener.accept().await.unwrap();
        Connection::accept(stream, TIMEOUT, handshake(2, 0xbb)).await
    };
    let client = Connection::connect(addr, TIMEOUT, handshake(1, 0xaa));
    let (client, server) = tokio::join!(client, server);
    assert!(matches!(
        server,
        Err(ConnectionError::Protocol(ProtocolError::UnknownInfoHash(h))) if h == InfoHash::new([1; 20])
    ));
    // The server hung up without answering.
    assert!(matches!(
        client,
        Err(ConnectionError::Closed | ConnectionError::Io(_))
    ));

    // A peer that answers for another torrent.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = async {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream
            .write_all(&handshake(2, 0xbb).to_bytes())
            .await
            .unwrap();
        stream
    };
    let (client, _stream) =
        tokio::join!(Connection::connect(addr, TIMEOUT, handshake(1, 0xaa)), peer);
    assert!(matches!(
        client,
        Err(ConnectionError::Protocol(ProtocolError::Handshake(
            HandshakeError::InfoHashMismatch { .. }
        )))
    ));
}

#[tokio::test]
async fn accept_with_routes_by_info_hash() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (stream, _) = listener.accept().await.unwrap();
        Connection::accept_with(stream, TIMEOUT, |prefix| {
            assert!(prefix.reserved.supports_extensions());
            [handshake(1, 0x11), handshake(3, 0x33)]
                .into_iter()
                .find(|h| h.info_hash == prefix.info_hash)
        })
        .await
    };
    let client = Connection::connect(addr, TIMEOUT, handshake(3, 0xaa));
    let (client, server) = tokio::join!(client, server);
    assert_eq!(client.unwrap().1.peer_id, PeerId::new([0x33; 20]));
    assert_eq!(server.unwrap().1.peer_id, PeerId::new([0xaa; 20]));
}

#[tokio::test]
async fn garbage_and_silence_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Not BitTorrent: refused on the first bytes, without waiting for 48.
    let peer = async {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        stream
    };
    let (client, _stream) =
        tokio::join!(Connection::connect(addr, TIMEOUT, handshake(1, 0xaa)), peer);
    assert!(matches!(
        client,
        Err(ConnectionError::Protocol(ProtocolError::Handshake(
            HandshakeError::BadProtocol
        )))
    ));

    // A peer that never answers: the handshake times out.
    let (client, _accepted) = tokio::join!(
        Connection::connect(addr, Duration::from_millis(50), handshake(1, 0xaa)),
        listener.accept()
    );
    assert!(matches!(client, Err(ConnectionError::Timeout)));
}

#[tokio::test]
async fn oversized_message_is_a_protocol_error() {
    let ((client, _), (server, _)) = pair().await;
    let (_c_read, c_write) = client.into_split();
    let (mut s_read, _s_write) = server.into_split();
    // A raw 4 GiB length prefix, without a body.
    let mut raw = c_write.stream;
    raw.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(matches!(
        s_read.recv().await,
        Err(ConnectionError::Protocol(ProtocolError::Message(
            MessageError::TooLong { len: u32::MAX, .. }
        )))
    ));
}

#[tokio::test]
async fn large_batches_survive_partial_writes() {
    // Far more than a loopback socket buffer holds, so the vectored writes
    // are partial and must resume mid-segment.
    let ((client, _), (server, _)) = pair().await;
    let (_c_read, mut c_write) = client.into_split();
    let (mut s_read, _s_write) = server.into_split();
    let messages: Vec<Message> = (0..600u32)
        .map(|i| {
            if i % 3 == 0 {
                Message::Have(i)
            } else {
                Message::Piece(Block {
                    index: i,
                    begin: 0,
                    data: Bytes::from(vec![i as u8; 16384 - i as usize]),
                })
            }
        })
        .collect();
    let send = async {
        c_write.send_batch(&messages).await.unwrap();
        assert_eq!(c_write.buffered(), 0);
    };
    let receive = async {
        let mut got = Vec::new();
        for _ in 0..messages.len() {
            got.push(s_read.recv().await.unwrap());
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    assert_eq!(got, messages);
}

/// A flush cancelled while a buffering stream (as an encrypting one is)
/// still holds bytes leaves `needs_flush` set, though nothing is queued
/// here any more: the next flush must still run to send them.
#[tokio::test]
async fn a_cancelled_flush_of_a_buffering_stream_still_needs_flushing() {
    // A 64-byte pipe nobody reads yet, behind a buffer that takes a whole
    // message and sends it only when flushed.
    let (ours, mut theirs) = tokio::io::duplex(64);
    let buffered = tokio::io::BufWriter::with_capacity(64 * 1024, ours);
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let conn = Connection::new(ByteStream::Other(Box::new(buffered), addr)).expect("connection");
    let (_reader, mut writer) = conn.into_split();
    assert!(!writer.needs_flush());
    writer.feed(&Message::Bitfield(Bytes::from(vec![0xff; 1024])));
    assert!(writer.needs_flush());
    // Polled once: the message moves into the buffer, whose flush blocks
    // on the full pipe; then the flush is dropped.
    tokio::select! {
        biased;
        _ = writer.flush() => panic!("the pipe cannot take 1 KiB"),
        () = std::future::ready(()) => {}
    }
    assert_eq!(writer.buffered(), 0);
    assert!(writer.needs_flush(), "bytes wait inside the stream");
    let drain = tokio::spawn(async move {
        let mut got = vec![0u8; 4 + 1 + 1024];
        theirs.read_exact(&mut got).await.map(|_| got)
    });
    writer.flush().await.expect("flush");
    assert!(!writer.needs_flush());
    let got = drain.await.expect("join").expect("read");
    assert!(got[5..].iter().all(|&b| b == 0xff));
}

/// Blocks arriving in reads that cut them anywhere leave the receive
/// buffer at its size: room for the rest of a frame is found by moving
/// the held bytes to the front, never by growing the buffer (it grew to
/// 64 KiB per connection when the room asked for was a whole buffer on
/// top of what it held).
#[tokio::test]
async fn the_receive_buffer_keeps_its_size_under_a_stream_of_blocks() {
    // Reads of at most 5,000 bytes: blocks arrive cut at every offset.
    let (ours, mut theirs) = tokio::io::duplex(5000);
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let conn = Connection::new(ByteStream::Other(Box::new(ours), addr)).expect("connection");
    let (mut reader, _writer) = conn.into_split();
    let blocks: Vec<Message> = (0..64u32)
        .map(|i| {
            Message::Piece(Block {
                index: i,
                begin: 0,
                data: Bytes::from(vec![i as u8; 16384]),
            })
        })
        .collect();
    let send = tokio::spawn({
        let blocks = blocks.clone();
        async move {
            let mut bytes = BytesMut::new();
            for block in &blocks {
                encode(block, &mut bytes);
            }
            theirs.write_all(&bytes).await.map(|()| theirs)
        }
    });
    for block in &blocks {
        assert_eq!(&reader.recv().await.expect("block"), block);
        assert!(
            reader.buf.capacity() <= READ_CHUNK,
            "the buffer grew to {} bytes",
            reader.buf.capacity()
        );
    }
    send.await.expect("join").expect("write");
}

/// A connection of one end of an in-memory pipe, split, with the other end.
fn piped_reader() -> (ConnectionReader, ConnectionWriter, tokio::io::DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let conn = Connection::new(ByteStream::Other(Box::new(ours), addr)).expect("connection");
    let (reader, writer) = conn.into_split();
    (reader, writer, theirs)
}

/// Polls `recv` once, as a `select!` beside a timer would, and expects it
/// to wait.
async fn poll_recv_once(reader: &mut ConnectionReader) {
    tokio::select! {
        biased;
        message = reader.recv() => panic!("nothing complete was sent, got {message:?}"),
        () = std::future::ready(()) => {}
    }
}

fn encoded(message: &Message) -> BytesMut {
    let mut bytes = BytesMut::new();
    encode(message, &mut bytes);
    bytes
}

/// A reader that waits with nothing buffered parks its buffer, so a quiet
/// connection holds no read memory, and is woken and reads on unharmed
/// when bytes come.
#[tokio::test]
async fn a_reader_waiting_with_nothing_buffered_holds_no_buffer() {
    let (mut reader, _writer, mut theirs) = piped_reader();
    theirs.write_all(&encoded(&Message::Have(1))).await.unwrap();
    assert_eq!(reader.recv().await.unwrap(), Message::Have(1));

    poll_recv_once(&mut reader).await;
    assert!(reader.parked, "the emptied buffer is parked");
    assert_eq!(reader.buf.capacity(), 0);

    let block = Message::Piece(Block {
        index: 2,
        begin: 0,
        data: Bytes::from(vec![7; 16384]),
    });
    // Written only once the reader waits again, so its wake-up is tested,
    // and in two parts, so the buffer it takes back must keep the first
    // part while it waits for the second.
    let send = tokio::spawn({
        let bytes = encoded(&block);
        async move {
            let (first, rest) = bytes.split_at(bytes.len() / 2);
            theirs.write_all(first).await?;
            tokio::task::yield_now().await;
            theirs.write_all(rest).await.map(|()| theirs)
        }
    });
    let received = tokio::time::timeout(TIMEOUT, reader.recv()).await;
    assert_eq!(received.expect("woken").unwrap(), block);
    send.await.expect("join").expect("write");
}

/// A reader waiting on the rest of a frame keeps the part it has.
#[tokio::test]
async fn a_reader_waiting_on_half_a_frame_keeps_it() {
    let (mut reader, _writer, mut theirs) = piped_reader();
    let block = Message::Piece(Block {
        index: 0,
        begin: 16384,
        data: Bytes::from((0..16384u32).map(|i| i as u8).collect::<Vec<_>>()),
    });
    let bytes = encoded(&block);
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    theirs.write_all(first).await.unwrap();

    poll_recv_once(&mut reader).await;
    assert!(!reader.parked);
    assert_eq!(&reader.buf[..], first);

    theirs.write_all(rest).await.unwrap();
    assert_eq!(reader.recv().await.unwrap(), block);
}
