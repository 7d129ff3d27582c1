//! Measures one connection's block throughput over loopback, in process:
//! a downloader keeps a pipeline of 16 KiB requests in flight and a seeder
//! answers each with a `piece` from memory.
//!
//! `cargo run --release -p lodestone-wire --example loopback_throughput [MiB] [pipeline]`
//! (defaults: 512 MiB, 256 requests in flight).

use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_core::{InfoHash, PeerId};
use lodestone_wire::{
    Block, BlockRequest, Connection, ConnectionError, ConnectionReader, ConnectionWriter,
    Handshake, Message, Reserved,
};
use tokio::net::TcpListener;

const BLOCK: u32 = 16 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let pipeline: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let blocks = u32::try_from(mib * 1024 * 1024 / u64::from(BLOCK))?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let ours = |peer| {
        Handshake::new(
            Reserved::LODESTONE,
            InfoHash::new([1; 20]),
            PeerId::new([peer; 20]),
        )
    };
    let seeder = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (conn, _) = Connection::accept(stream, TIMEOUT, ours(2)).await?;
        let (reader, writer) = conn.into_split();
        seed(reader, writer).await
    });

    let (conn, _) = Connection::connect(addr, TIMEOUT, ours(1)).await?;
    let (reader, writer) = conn.into_split();
    let start = Instant::now();
    download(reader, writer, blocks, pipeline).await?;
    let elapsed = start.elapsed();
    let bytes = u64::from(blocks) * u64::from(BLOCK);
    println!(
        "{} MiB in {:.3} s: {:.0} MB/s (pipeline {pipeline})",
        bytes >> 20,
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
    seeder.await??;
    Ok(())
}

/// Answers requests until the downloader hangs up, flushing once per run of
/// requests that arrived together.
async fn seed(
    mut reader: ConnectionReader,
    mut writer: ConnectionWriter,
) -> Result<(), ConnectionError> {
    let data = Bytes::from(vec![0x5a; BLOCK as usize]);
    loop {
        let mut next = match reader.recv().await {
            Ok(m) => Some(m),
            Err(ConnectionError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        while let Some(message) = next {
            if let Message::Request(r) = message {
                writer.feed(&Message::Piece(Block {
                    index: r.index,
                    begin: r.begin,
                    data: data.clone(),
                }));
            }
            next = reader.try_recv()?;
        }
        writer.flush().await?;
    }
}

/// Requests `blocks` blocks keeping `pipeline` in flight; tops the pipeline
/// up once per run of pieces that arrived together.
async fn download(
    mut reader: ConnectionReader,
    mut writer: ConnectionWriter,
    blocks: u32,
    pipeline: usize,
) -> Result<(), ConnectionError> {
    let request = |i: u32| {
        Message::Request(BlockRequest {
            index: i / 16,
            begin: (i % 16) * BLOCK,
            length: BLOCK,
        })
    };
    let mut sent = 0u32;
    let mut received = 0u32;
    while received < blocks {
        while sent < blocks && (sent - received) as usize <= pipeline {
            writer.feed(&request(sent));
            sent += 1;
        }
        writer.flush().await?;
        let mut next = Some(reader.recv().await?);
        while let Some(message) = next {
            if let Message::Piece(block) = message {
                debug_assert_eq!(block.data.len(), BLOCK as usize);
                received += 1;
            }
            next = reader.try_recv()?;
        }
    }
    writer.shutdown().await
}
