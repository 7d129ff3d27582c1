//! Download throughput over loopback from three in-process fake seeders.
//!
//! `cargo run --release -p lodestone-download --example loopback -- [MiB] [dir]`
//!
//! A child process (this binary with `--seeders`) generates a torrent of MiB
//! (default 256) pseudo-random bytes, writes its .torrent under dir (default
//! /dev/shm) and serves it from memory with three fake seeders on
//! 127.0.0.1. The parent downloads it into dir with `lodestone_download`'s
//! swarm and prints MB/s and its own peak RSS (VmHWM), which therefore
//! excludes the seeders' copy of the data. Everything is removed afterwards.

#[path = "../src/swarm/tests/seeder.rs"]
#[allow(dead_code)]
mod seeder;

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_core::{Metainfo, PeerId};
use lodestone_download::{Download, DownloadConfig};
use lodestone_wire::{Connection, Established, Handshake, Reserved};

const SEEDERS: usize = 3;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeders = args.first().is_some_and(|a| a == "--seeders");
    let rest = &args[usize::from(seeders)..];
    let mib: usize = rest.first().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let dir = PathBuf::from(rest.get(1).map_or("/dev/shm", String::as_str));
    let runtime = tokio::runtime::Runtime::new()?;
    if seeders {
        runtime.block_on(serve(mib, &dir))
    } else {
        runtime.block_on(download(mib, &dir))
    }
}

fn torrent_path(dir: &Path) -> PathBuf {
    dir.join(format!("lodestone-loopback-{}.torrent", std::process::id()))
}

/// Child: build the torrent, serve it, report addresses, run until stdin closes.
async fn serve(mib: usize, dir: &Path) -> Result<(), Box<dyn Error>> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut data = vec![0u8; mib << 20];
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let metainfo = Metainfo::create("loopback.bin", 256 * 1024, &[(Vec::new(), &data[..])])?;
    let path = torrent_path(dir);
    std::fs::write(&path, metainfo.to_torrent_bytes())?;
    let data = Bytes::from(data);
    let mut running = Vec::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", path.display())?;
    for _ in 0..SEEDERS {
        let s = seeder::spawn(&metainfo, data.clone(), seeder::Behavior::Honest).await;
        writeln!(out, "{}", s.addr)?;
        running.push(s);
    }
    out.flush()?;
    drop(out);
    // Serve until the parent closes our stdin.
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Parent: start the seeders, download, measure.
async fn download(mib: usize, dir: &Path) -> Result<(), Box<dyn Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--seeders")
        .arg(mib.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let torrent = PathBuf::from(lines.next().ok_or("child exited")??);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for _ in 0..SEEDERS {
        addrs.push(lines.next().ok_or("child exited")??.parse()?);
    }
    let metainfo = Arc::new(Metainfo::from_torrent_bytes(&std::fs::read(&torrent)?)?);
    let out = dir.join(format!("lodestone-loopback-{}", std::process::id()));

    let mut config = DownloadConfig::new(&out, PeerId::new(*b"-LS0001-loopbackbnch"));
    config.no_seed = true;
    let ours = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, config.peer_id);
    let start = Instant::now();
    let (tx, conns) = tokio::sync::mpsc::channel(SEEDERS);
    for addr in addrs {
        let (conn, theirs) = Connection::connect(addr, Duration::from_secs(5), ours).await?;
        tx.send(Established::new(conn, theirs, addr, false)).await?;
    }
    let (exits, _) = tokio::sync::mpsc::unbounded_channel();
    let summary = Download::start(metainfo, config, conns, exits)
        .wait()
        .await?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = (mib << 20) as f64;
    println!(
        "{mib} MiB from {SEEDERS} seeders to {}: {:.2} s, {:.0} MB/s ({:.0} MiB/s), complete={}, \
         wasted {} B, peak RSS {}",
        dir.display(),
        secs,
        bytes / secs / 1e6,
        bytes / secs / (1 << 20) as f64,
        summary.complete,
        summary.wasted,
        peak_rss().unwrap_or_else(|| "unknown".into()),
    );
    drop(child.stdin.take());
    child.wait()?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line["VmHWM:".len()..].trim().to_owned())
}
