//! The upload direction, which the download races leave out: one seeder
//! holding the whole content serves one libtorrent downloader that dials it
//! directly (`x.pe`, no DHT), over uTP only and then over TCP only. The
//! seeder is the client measured: lodestone beside libtorrent, rqbit and
//! aria2c (TCP only: aria2 has no uTP).
//!
//! * time: the downloader's own, from its metadata alert to the last piece
//!   on disk;
//! * CPU: the seeder's user + system time over that transfer, read from
//!   `/proc` before the downloader starts and after it finishes, so the
//!   seeder's start-up check of its files is not counted;
//! * peak RSS: the seeder's `VmHWM` at the end.
//!
//! The seeders:
//! * `lodestone download TORRENT -o CONTENT --no-dht --no-trackers
//!   --transport utp|tcp --seed-ratio 1000`, ready at its `seeding` phase;
//! * `tests/py/downloader.py --torrent TORRENT` on the complete content (uTP
//!   only, or TCP only), ready at its `finished`;
//! * `rqbit --disable-dht --disable-lsd --disable-trackers
//!   --disable-upnp-port-forward --listen-ip IP --listen-port PORT
//!   [--experimental-enable-utp-listen] download TORRENT -o CONTENT
//!   --overwrite --disable-http-api` (for uTP it keeps listening on TCP too,
//!   for the readiness probe; the downloader dials uTP only);
//! * aria2c as the end-to-end tests seed with it
//!   (`lodestone_tests::clients::aria2_seeder`, DHT off).
//!
//! rqbit and aria2c are the harness's [`Seeder`]s: they run under
//! `tests/py/supervise.py` and are ready when a handshake shows them holding
//! every piece; their CPU and memory are the supervised program's, not
//! python's.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lodestone_benches::options::Client;
use lodestone_tests::clients::{Ready, Seeder, aria2_seeder};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::addr;
use lodestone_tests::process::Proc;
use lodestone_tests::tools::{SYSTEM_PYTHON, script};
use lodestone_tests::workdir::{KEEP_ENV, WorkDir};
use serde_json::Value;

use crate::clients::{Arena, PORT, Run};
use crate::launch::{cpu_seconds, memory_kib};

/// Address block of the seeders in this scenario (free in the harness's plan).
const BLOCK_SEEDERS: u8 = 7;
/// Address block of their downloaders.
const BLOCK_DOWNLOADERS: u8 = 8;
/// Longest wait for a seeder to check its files and open its port.
const SEEDER_READY: Duration = Duration::from_secs(120);

/// What the downloader dials the seeder over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// uTP only, both ends.
    Utp,
    /// TCP only, both ends.
    Tcp,
}

impl Transport {
    /// Its name in tables and in lodestone's `--transport`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Utp => "utp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Why `seeder` cannot take part over `transport`, if it cannot.
pub fn missing(arena: &Arena<'_>, seeder: Client, transport: Transport) -> Option<String> {
    if seeder == Client::Aria2c && transport == Transport::Utp {
        Some("aria2c has no uTP".to_owned())
    } else {
        arena.tools.missing(seeder, crate::clients::Race::Download)
    }
}

/// One upload from `seeder` over `transport`, with a hard `timeout` on the
/// transfer.
pub fn run(
    arena: &Arena<'_>,
    seeder: Client,
    transport: Transport,
    round: usize,
    timeout: Duration,
) -> Run {
    let dir = arena.scratch.join(format!(
        "upload-{}-{}-{round}",
        transport.name(),
        seeder.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // One address pair per run, so no run meets another's sockets; 250 runs
    // apart they may repeat, long after any TIME_WAIT.
    let slot = Client::ALL.iter().position(|&c| c == seeder).unwrap_or(0);
    let serial = (round * 2 + usize::from(transport == Transport::Tcp)) * Client::ALL.len() + slot;
    let index = 1 + (serial % 250) as u8;
    let outcome = std::fs::create_dir_all(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
        .and_then(|()| upload(arena, seeder, transport, index, &dir, timeout));
    if std::env::var_os(KEEP_ENV).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (seconds, cpu_s, peak_rss_kib, error) = match outcome {
        Ok(m) => (Some(m.seconds), m.cpu_s, m.peak_rss_kib, None),
        Err(e) => (None, None, None, Some(e)),
    };
    Run {
        client: seeder,
        round,
        seconds,
        peak_rss_kib,
        cpu_s,
        error,
    }
}

/// What one upload measured.
struct Measured {
    seconds: f64,
    cpu_s: Option<f64>,
    peak_rss_kib: Option<u64>,
}

fn upload(
    arena: &Arena<'_>,
    seeder: Client,
    transport: Transport,
    index: u8,
    dir: &Path,
    timeout: Duration,
) -> Result<Measured, String> {
    let seeder_ip = addr(BLOCK_SEEDERS, index);
    let seeding = start_seeder(arena, seeder, transport, seeder_ip, dir)?;
    let pid = seeding.pid;
    let cpu_before = cpu_seconds(pid);

    let save = dir.join("download");
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={seeder_ip}:{PORT}",
        arena.swarm.info_hash
    );
    let mut command = libtorrent_command(addr(BLOCK_DOWNLOADERS, index), transport);
    command
        .arg("--save-path")
        .arg(&save)
        .args(["--magnet", &magnet]);
    let mut downloader =
        Proc::spawn(format!("downloader {index}"), command).map_err(|e| e.to_string())?;
    let started = downloader
        .wait_event("metadata", timeout)
        .map_err(|e| e.to_string())?;
    let done = downloader
        .wait_event("finished", timeout)
        .map_err(|e| e.to_string())?;
    let cpu_after = cpu_seconds(pid);
    let peak_rss_kib = memory_kib(pid).map(|(peak, _)| peak);
    // Dropping kills both.
    drop(downloader);
    drop(seeding);
    verify_files(&save, &arena.swarm.files).map_err(|e| format!("verification: {e}"))?;
    // Every seeder serves the same files: one that changed them would
    // spoil the runs after it, so it fails its own instead.
    verify_files(&arena.swarm.content_dir, &arena.swarm.files)
        .map_err(|e| format!("the seeder changed the content it served: {e}"))?;
    let at = |event: &Value| event["t"].as_f64().ok_or("an event without a time");
    Ok(Measured {
        seconds: at(&done)? - at(&started)?,
        cpu_s: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        peak_rss_kib,
    })
}

/// A seeder that serves, and the process whose CPU and memory are its own.
struct Seeding {
    /// Its handle (a [`Proc`], or the harness's [`Seeder`]), held only to
    /// be dropped, which kills the seeder.
    _process: Box<dyn std::any::Any>,
    pid: u32,
}

/// Starts `seeder` on the swarm's content at `ip` and waits until it serves.
fn start_seeder(
    arena: &Arena<'_>,
    seeder: Client,
    transport: Transport,
    ip: std::net::Ipv4Addr,
    dir: &Path,
) -> Result<Seeding, String> {
    let name = format!("{} seeder {ip}", seeder.name());
    let content = &arena.swarm.content_dir;
    let spawned = |proc: Proc| Seeding {
        pid: proc.pid(),
        _process: Box::new(proc),
    };
    match seeder {
        Client::Lodestone => {
            let l = arena.tools.lodestone.as_ref().map_err(Clone::clone)?;
            let mut command = Command::new(&l.bin);
            command
                .arg("download")
                .arg(&arena.swarm.torrent)
                .arg("-o")
                .arg(content)
                .args(["--no-dht", "--no-trackers", "--json"])
                .args(["--transport", transport.name()])
                .args(["--port", &PORT.to_string()])
                .args(["--bind", &ip.to_string()])
                .args(["--seed-ratio", "1000"])
                .arg("--state-dir")
                .arg(dir.join("state"));
            let mut proc = Proc::spawn(name, command).map_err(|e| e.to_string())?;
            loop {
                let event = proc
                    .wait_event("phase", SEEDER_READY)
                    .map_err(|e| e.to_string())?;
                if event["phase"] == "seeding" {
                    return Ok(spawned(proc));
                }
            }
        }
        Client::Libtorrent => {
            let mut command = libtorrent_command(ip, transport);
            command
                .arg("--torrent")
                .arg(&arena.swarm.torrent)
                .arg("--save-path")
                .arg(content);
            let mut proc = Proc::spawn(name, command).map_err(|e| e.to_string())?;
            // On complete content the script says "finished" once checked.
            proc.wait_event("finished", SEEDER_READY)
                .map_err(|e| e.to_string())?;
            Ok(spawned(proc))
        }
        Client::Rqbit => {
            let bin = arena.tools.rqbit.as_ref().map_err(Clone::clone)?;
            let mut args: Vec<String> = [
                "--disable-dht",
                "--disable-lsd",
                "--disable-trackers",
                "--disable-upnp-port-forward",
            ]
            .map(String::from)
            .into();
            args.extend(["--listen-ip".into(), ip.to_string()]);
            args.extend(["--listen-port".into(), PORT.to_string()]);
            if transport == Transport::Utp {
                args.push("--experimental-enable-utp-listen".into());
            }
            // `--overwrite` lets it take files that are there already.
            args.extend(["download".into(), arena.swarm.torrent.display().to_string()]);
            args.extend(["-o".into(), content.display().to_string()]);
            args.extend(["--overwrite".into(), "--disable-http-api".into()]);
            let dir = WorkDir::new("rqbit").map_err(|e| e.to_string())?;
            let addr = SocketAddr::from((ip, PORT));
            let seeder = Seeder::launch(
                "rqbit",
                &arena.swarm.torrent,
                addr,
                dir,
                bin.clone(),
                args,
                Ready::Seeding,
            )
            .map_err(|e| e.to_string())?;
            Ok(harness(seeder))
        }
        Client::Aria2c => aria2_seeder(&arena.swarm.torrent, content, ip, PORT, &[])
            .map(harness)
            .map_err(|e| e.to_string()),
    }
}

/// A seeder the harness started under `supervise.py`.
fn harness(seeder: Seeder) -> Seeding {
    Seeding {
        pid: seeder.pid(),
        _process: Box::new(seeder),
    }
}

/// `tests/py/downloader.py` at `ip`, DHT off, on `transport` only.
fn libtorrent_command(ip: std::net::Ipv4Addr, transport: Transport) -> Command {
    let mut command = Command::new(SYSTEM_PYTHON);
    command
        .arg(script("downloader.py"))
        .args(["--ip", &ip.to_string()])
        .args(["--port", &PORT.to_string()])
        .arg("--no-dht");
    if transport == Transport::Utp {
        command.arg("--utp-only");
    }
    command
}
