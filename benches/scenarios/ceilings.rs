//! What this machine can do at best, measured in the same run as the races:
//! no client can verify faster than SHA-1 on its cores, move pieces faster
//! than loopback TCP, or store them faster than the output directory takes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use sha1::{Digest, Sha1};

/// The three ceilings, in MB/s (10^6 bytes per second).
#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// SHA-1 over 1 MiB chunks on one core (the `sha1` crate, as lodestone uses).
    pub sha1_one_core_mb_s: f64,
    /// One TCP stream between two threads of this process over loopback.
    pub loopback_tcp_mb_s: f64,
    /// CPU seconds the receiving thread of that stream spent per GiB (from
    /// its `/proc/thread-self/schedstat`), if the kernel keeps the figure.
    pub loopback_tcp_receive_s_per_gib: Option<f64>,
    /// Sequential 1 MiB writes to a file in `disk_dir`, `fsync` included.
    pub disk_write_mb_s: f64,
    /// Where the disk was measured (and where downloads are written).
    pub disk_dir: String,
    /// That directory's filesystem type, from /proc/mounts.
    pub disk_fs: String,
    /// Bytes per measurement.
    pub bytes: u64,
}

impl Ceilings {
    /// Seconds to hash and then write one GiB at these speeds: the least
    /// CPU per GiB a downloader that verifies and stores every byte can
    /// spend when the output is in RAM (tmpfs), before receiving anything.
    pub fn hash_and_write_s_per_gib(&self) -> f64 {
        let mb_per_gib = (1u64 << 30) as f64 / 1e6;
        mb_per_gib / self.sha1_one_core_mb_s + mb_per_gib / self.disk_write_mb_s
    }

    /// [`Ceilings::hash_and_write_s_per_gib`] plus the CPU of receiving the
    /// GiB from a loopback TCP stream: the floor of a verified download
    /// from local seeders to tmpfs, which the download scenario is.
    pub fn receive_hash_and_write_s_per_gib(&self) -> Option<f64> {
        self.loopback_tcp_receive_s_per_gib
            .map(|receive| receive + self.hash_and_write_s_per_gib())
    }
}

const CHUNK: usize = 1 << 20;

/// Measures all three with `bytes` each; `ip` is the loopback address used
/// for the TCP pair; the file goes in `dir` and is removed.
pub fn measure(bytes: u64, ip: std::net::Ipv4Addr, dir: &Path) -> Result<Ceilings, String> {
    let chunk = pattern();
    let tcp = tcp_speed(bytes, ip, &chunk)?;
    Ok(Ceilings {
        sha1_one_core_mb_s: sha1_speed(bytes, &chunk),
        loopback_tcp_mb_s: tcp.mb_s,
        loopback_tcp_receive_s_per_gib: tcp.receive_s_per_gib,
        disk_write_mb_s: disk_speed(bytes, dir, &chunk)?,
        disk_dir: dir.display().to_string(),
        disk_fs: filesystem_of(dir),
        bytes,
    })
}

/// 1 MiB of bytes that no layer can compress or deduplicate trivially.
fn pattern() -> Vec<u8> {
    let mut data = vec![0; CHUNK];
    StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15).fill_bytes(&mut data);
    data
}

fn mb_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / 1e6 / since.elapsed().as_secs_f64().max(1e-9)
}

fn sha1_speed(bytes: u64, chunk: &[u8]) -> f64 {
    let chunks = bytes.div_ceil(CHUNK as u64);
    let start = Instant::now();
    let mut sink = 0u8;
    for _ in 0..chunks {
        // One digest per chunk, like one per 1 MiB piece.
        sink ^= Sha1::digest(chunk)[0];
    }
    std::hint::black_box(sink);
    mb_s(chunks * CHUNK as u64, start)
}

/// CPU seconds this thread has run, from the scheduler's own clock (the
/// first field of `/proc/thread-self/schedstat`, in nanoseconds): finer
/// than the 10 ms ticks of `/proc/<pid>/stat`.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// One loopback TCP stream's speed, and what receiving it cost.
struct TcpCeiling {
    mb_s: f64,
    receive_s_per_gib: Option<f64>,
}

fn tcp_speed(bytes: u64, ip: std::net::Ipv4Addr, chunk: &[u8]) -> Result<TcpCeiling, String> {
    let listener =
        TcpListener::bind(SocketAddr::from((ip, 0))).map_err(|e| format!("tcp bind: {e}"))?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    let chunks = bytes.div_ceil(CHUNK as u64);
    let payload = chunk.to_vec();
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(target)?;
        for _ in 0..chunks {
            stream.write_all(&payload)?;
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept().map_err(|e| format!("tcp accept: {e}"))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut received = 0u64;
    let cpu_before = thread_cpu_s();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) => return Err(format!("tcp read: {e}")),
        }
    }
    let speed = mb_s(received, start);
    let gib = received as f64 / f64::from(1u32 << 30);
    let receive_s_per_gib = cpu_before
        .zip(thread_cpu_s())
        .map(|(before, after)| (after - before) / gib.max(1e-9));
    sender
        .join()
        .map_err(|_| "tcp sender panicked".to_owned())?
        .map_err(|e| format!("tcp send: {e}"))?;
    if received != chunks * CHUNK as u64 {
        return Err(format!(
            "tcp: received {received} bytes of {}",
            chunks * CHUNK as u64
        ));
    }
    Ok(TcpCeiling {
        mb_s: speed,
        receive_s_per_gib,
    })
}

fn disk_speed(bytes: u64, dir: &Path, chunk: &[u8]) -> Result<f64, String> {
    let path = dir.join("ceiling-write.bin");
    let chunks = bytes.div_ceil(CHUNK as u64);
    let start = Instant::now();
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        for _ in 0..chunks {
            file.write_all(chunk)?;
        }
        file.sync_all()
    })();
    let speed = mb_s(chunks * CHUNK as u64, start);
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(speed)
}

/// The type of the filesystem holding `dir` (the longest mount point that
/// is a prefix of it).
fn filesystem_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, fs) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point).then(|| (point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, fs)| fs)
}
