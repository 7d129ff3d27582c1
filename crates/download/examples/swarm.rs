//! Times a download from several seeding sessions over loopback, in one
//! process (so the seeders share the two cores with the downloader).
//!
//! `cargo run --release -p lodestone-download --example swarm -- [MiB] [seeders] [dir]`
//! (defaults: 512 MiB, 3 seeders, /dev/shm). The seeders share one copy of
//! the data; everything is removed afterwards.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestone_core::{Metainfo, PeerId};
use lodestone_download::verify::resume_scan;
use lodestone_download::{Bitfield, Layout, Progress, Session, SessionConfig, Storage};
use lodestone_wire::{Connection, Handshake, Reserved};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn storage(m: &Metainfo, dir: &Path) -> Result<Arc<Storage>, Error> {
    let layout = Arc::new(Layout::from_info(&m.info)?);
    Ok(Arc::new(Storage::for_info(
        dir.to_path_buf(),
        layout,
        &m.info,
        None,
    )?))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let seeders: u8 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let base = Path::new(&args.next().unwrap_or_else(|| "/dev/shm".into()))
        .join(format!("lodestone-swarm-{}", std::process::id()));
    let (seed_dir, leech_dir) = (base.join("seed"), base.join("leech"));

    let mut data = vec![0u8; mib << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let m = Metainfo::create("payload", 256 * 1024, &[(vec![], &data[..])])?;
    let hashes: Arc<[[u8; 20]]> = m.info.piece_hashes.clone().into();
    let st = storage(&m, &seed_dir)?;
    st.prepare()?;
    st.write(0, &data)?;
    drop(data);

    let mut addrs: Vec<SocketAddr> = Vec::new();
    for id in 1..=seeders {
        let st = storage(&m, &seed_dir)?;
        let have = Bitfield::full(m.info.piece_count());
        let mut config = SessionConfig::new(PeerId::new([id; 20]));
        config.seed = true;
        let session = Session::new(m.info_hash, st, hashes.clone(), have, config)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        let (in_tx, in_rx) = mpsc::channel(8);
        let mut reserved = Reserved::default();
        reserved.set_fast(true);
        let ours = Handshake::new(reserved, m.info_hash, PeerId::new([id; 20]));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(pair) = Connection::accept(stream, Duration::from_secs(5), ours).await {
                    let _ = in_tx.send(pair).await;
                }
            }
        });
        let (addr_tx, addr_rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _keep = addr_tx;
            let (progress, _) = watch::channel(Progress::default());
            session.run(addr_rx, in_rx, progress).await
        });
    }

    let start = Instant::now();
    let st = storage(&m, &leech_dir)?;
    let have = resume_scan(&st, &hashes, 2)?;
    st.prepare()?;
    let session = Session::new(
        m.info_hash,
        st,
        hashes,
        have,
        SessionConfig::new(PeerId::new([0xaa; 20])),
    )?;
    let (addr_tx, addr_rx) = mpsc::channel(8);
    for a in addrs {
        addr_tx.send(a).await?;
    }
    let (_in_tx, in_rx) = mpsc::channel(1);
    let (progress, _) = watch::channel(Progress::default());
    let done = session.run(addr_rx, in_rx, progress).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{mib} MiB from {seeders} seeders: {secs:.2} s ({:.0} MB/s), {} bytes received",
        (mib << 20) as f64 / secs / 1e6,
        done.downloaded
    );
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
