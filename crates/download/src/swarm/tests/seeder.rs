//! An in-process fake seeder written directly on `lodestone-wire`: serves a
//! torrent from memory on 127.0.0.1, honestly or in one of several broken
//! ways. Shared by the swarm tests and the loopback example (included there
//! by path), so it uses only the crate's dependencies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lodestone_core::{InfoHash, Metainfo, PeerId};
use lodestone_wire::{Block, Connection, ConnectionError, Handshake, Message, Reserved};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the fake seeder behaves.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Serves every piece correctly.
    Honest,
    /// Serves every piece, flipping a byte in every block of these pieces.
    Corrupt(Vec<u32>),
    /// Serves its first request with a corrupt block, then hangs up.
    CorruptOneThenLeave,
    /// Has and serves only the pieces `0..n`.
    Prefix(u32),
    /// Serves this many requests, then never answers again (but stays
    /// connected).
    StallAfter(u64),
    /// Sends a bitfield one byte short, then unchokes.
    ShortBitfield,
    /// Sends its (full) bitfield over and over.
    BitfieldFlood,
    /// Handshakes, then announces a message of 4 GiB - 1 bytes.
    HugeLength,
    /// Handshakes, then says nothing, forever.
    Silent,
    /// Accepts the TCP connection and never answers the handshake.
    NoHandshake,
    /// Answers the handshake with another torrent's infohash, then serves
    /// as if nothing were wrong.
    WrongInfoHash,
}

/// A running fake seeder.
pub struct Seeder {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Block requests received, over all connections.
    pub requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Seeder {
    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Starts a seeder of `metainfo` whose byte stream is `data`.
pub async fn spawn(metainfo: &Metainfo, data: Bytes, behavior: Behavior) -> Seeder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let requests = Arc::new(AtomicU64::new(0));
    let torrent = Arc::new(Torrent {
        info_hash: metainfo.info_hash,
        piece_length: metainfo.info.piece_length,
        pieces: metainfo.info.piece_count(),
        data,
    });
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        let mut id = 0u8;
        while let Ok((stream, _)) = listener.accept().await {
            id = id.wrapping_add(1);
            let (torrent, behavior, counter) = (torrent.clone(), behavior.clone(), counter.clone());
            tokio::spawn(async move {
                let _ = serve(stream, &torrent, &behavior, &counter, id).await;
            });
        }
    });
    Seeder {
        addr,
        requests,
        task,
    }
}

struct Torrent {
    info_hash: InfoHash,
    piece_length: u32,
    pieces: u32,
    data: Bytes,
}

fn handshake(torrent: &Torrent, id: u8) -> Handshake {
    let mut peer_id = [b'S'; 20];
    peer_id[19] = id;
    peer_id[18] = rand::random();
    peer_id[17] = rand::random();
    Handshake::new(Reserved::LODESTONE, torrent.info_hash, PeerId::new(peer_id))
}

async fn serve(
    mut stream: TcpStream,
    torrent: &Torrent,
    behavior: &Behavior,
    requests: &AtomicU64,
    id: u8,
) -> Result<(), ConnectionError> {
    match behavior {
        Behavior::NoHandshake => return drain(stream).await,
        Behavior::WrongInfoHash => {
            let mut theirs = [0u8; 68];
            stream.read_exact(&mut theirs).await?;
            let ours = handshake(torrent, id);
            let other = Handshake::new(ours.reserved, InfoHash::new([0xab; 20]), ours.peer_id);
            stream.write_all(&other.to_bytes()).await?;
            let mut have_all = bytes::BytesMut::new();
            lodestone_wire::encode(&Message::HaveAll, &mut have_all);
            stream.write_all(&have_all).await?;
            return drain(stream).await;
        }
        Behavior::HugeLength | Behavior::Silent => {
            let mut theirs = [0u8; 68];
            stream.read_exact(&mut theirs).await?;
            stream.write_all(&handshake(torrent, id).to_bytes()).await?;
            if matches!(behavior, Behavior::HugeLength) {
                stream.write_all(&[0xff, 0xff, 0xff, 0xff, 7]).await?;
            }
            return drain(stream).await;
        }
        _ => {}
    }
    let (conn, theirs) =
        Connection::accept(stream, Duration::from_secs(5), handshake(torrent, id)).await?;
    let fast = theirs.reserved.supports_fast();
    let (mut reader, mut writer) = conn.into_split();
    let has = |piece: u32| match behavior {
        Behavior::Prefix(n) => piece < *n,
        _ => true,
    };
    let bytes = torrent.pieces.div_ceil(8) as usize;
    match behavior {
        Behavior::Honest | Behavior::Corrupt(_) if fast => writer.feed(&Message::HaveAll),
        Behavior::ShortBitfield => writer.feed(&Message::Bitfield(vec![0xff; bytes - 1].into())),
        _ => {
            let mut bits = vec![0u8; bytes];
            for p in (0..torrent.pieces).filter(|&p| has(p)) {
                bits[(p / 8) as usize] |= 0x80 >> (p % 8);
            }
            let bits = Bytes::from(bits);
            if matches!(behavior, Behavior::BitfieldFlood) {
                for _ in 0..16 {
                    writer.feed(&Message::Bitfield(bits.clone()));
                }
            }
            writer.feed(&Message::Bitfield(bits));
        }
    }
    writer.feed(&Message::Unchoke);
    writer.flush().await?;
    loop {
        let mut next = Some(reader.recv().await?);
        while let Some(msg) = next {
            if let Message::Request(r) = msg {
                let seen = requests.fetch_add(1, Ordering::Relaxed);
                if let Behavior::StallAfter(n) = behavior
                    && seen >= *n
                {
                    next = reader.try_recv()?;
                    continue;
                }
                let start =
                    u64::from(r.index) * u64::from(torrent.piece_length) + u64::from(r.begin);
                let end = start + u64::from(r.length);
                if !has(r.index) || end > torrent.data.len() as u64 {
                    if fast {
                        writer.feed(&Message::Reject(r));
                    }
                } else {
                    let mut data = torrent.data.slice(start as usize..end as usize);
                    let corrupt = match behavior {
                        Behavior::Corrupt(bad) => bad.contains(&r.index),
                        Behavior::CorruptOneThenLeave => true,
                        _ => false,
                    };
                    if corrupt {
                        let mut copy = data.to_vec();
                        copy[0] ^= 0x55;
                        data = copy.into();
                    }
                    writer.feed(&Message::Piece(Block {
                        index: r.index,
                        begin: r.begin,
                        data,
                    }));
                    if matches!(behavior, Behavior::CorruptOneThenLeave) {
                        return writer.flush().await;
                    }
                }
            }
            next = reader.try_recv()?;
        }
        writer.flush().await?;
    }
}

/// Reads and discards until the peer hangs up.
async fn drain(mut stream: TcpStream) -> Result<(), ConnectionError> {
    let mut buf = [0u8; 4096];
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}
