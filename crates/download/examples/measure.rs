//! Measures resume hashing and picker throughput on this machine.
//!
//! `cargo run --release -p lodestone-download --example measure -- [MiB] [dir]`
//! writes a MiB-sized single-file torrent (default 512) under dir (default
//! /dev/shm), then times a re-check of the data on disk on one and on all cores, and a full
//! pick-everything run of the picker. The file is removed afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lodestone_download::picker::{BlockOutcome, PeerKey, Picker};
use lodestone_download::verify::{PieceHash, Recheck};
use lodestone_download::{BLOCK_SIZE, Bitfield, Layout, Storage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha1::{Digest, Sha1};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/dev/shm".into()))
        .join(format!("lodestone-measure-{}", std::process::id()));
    let piece_length = 256 * 1024;
    let layout = Arc::new(Layout::new(piece_length, [(mib << 20, false)])?);
    let storage = Arc::new(Storage::new(
        dir.clone(),
        layout.clone(),
        vec!["data".into()],
        &[],
    )?);
    storage.prepare()?;
    let chunk: Vec<u8> = (0..piece_length).map(|i| (i * 31 % 251) as u8).collect();
    let mut hashes: Vec<PieceHash> = Vec::new();
    for p in layout.pieces() {
        let mut piece = chunk.clone();
        piece[..4].copy_from_slice(&p.get().to_be_bytes());
        storage.write(layout.piece_offset(p), &piece)?;
        hashes.push(Sha1::digest(&piece).into());
    }
    // The ceiling: hashing the same bytes already in memory, one thread.
    let start = Instant::now();
    for _ in layout.pieces() {
        std::hint::black_box(Sha1::digest(&chunk));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "in-memory SHA-1 of {mib} MiB on 1 thread: {secs:.3} s ({:.0} MB/s)",
        (mib << 20) as f64 / secs / 1e6
    );
    let hashes: Arc<[PieceHash]> = hashes.into();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for threads in [1, cores] {
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pieces = layout.pieces().collect();
        let check = Recheck::spawn(storage.clone(), hashes.clone(), pieces, threads, tx)?;
        let mut good = 0;
        while let Some((_, matches)) = rx.blocking_recv() {
            good += u32::from(matches);
        }
        drop(check);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(good, layout.piece_count());
        println!(
            "re-check of {mib} MiB on {threads} thread(s): {secs:.3} s ({:.0} MB/s)",
            (mib << 20) as f64 / secs / 1e6
        );
    }
    std::fs::remove_dir_all(&dir)?;

    // The picker: 32k single-block pieces from three partial peers.
    let pieces = 32_768u32;
    let layout = Arc::new(Layout::new(
        BLOCK_SIZE,
        [(u64::from(BLOCK_SIZE) * u64::from(pieces), false)],
    )?);
    let mut picker = Picker::new(
        layout,
        Bitfield::full(pieces),
        Bitfield::new(pieces),
        StdRng::seed_from_u64(1),
    );
    let peers: Vec<PeerKey> = (0..3).map(PeerKey).collect();
    for &p in &peers {
        picker.peer_connected(p);
        let mut has = Bitfield::new(pieces);
        for i in (0..pieces).filter(|i| i % 3 != p.0) {
            has.set(i);
        }
        picker.peer_bitfield(p, has);
    }
    let start = Instant::now();
    let mut picked = 0u64;
    while !picker.is_complete() {
        for &p in &peers {
            for b in picker.next_requests(p, 16) {
                picked += 1;
                if let BlockOutcome::Accepted {
                    piece_complete: true,
                    ..
                } = picker.block_received(p, b)
                {
                    picker.piece_verified(b.piece());
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "picker: {picked} blocks picked, received, verified in {secs:.3} s ({:.0} blocks/s)",
        picked as f64 / secs
    );
    Ok(())
}
