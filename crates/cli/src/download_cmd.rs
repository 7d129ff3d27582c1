//! `lodestone download`: magnet link or .torrent in, verified files out,
//! then seeding.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::BinaryBytes;
use lodestone_core::{InfoHash, Metainfo};
use lodestone_dht::Dht;
use lodestone_download::swarm::{Download, DownloadConfig, Summary};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::args::DownloadArgs;
use crate::failure::Failure;
use crate::metadata_cmd::{fetch, start_dht};
use crate::peers::{our_peer_id, peer_stream};
use crate::progress_view::{ProgressView, ViewMode};
use crate::rate::parse_rate;
use crate::target::Target;
use crate::{dht_cmd, selection};

/// How many ports after `--port` are tried before letting the OS choose.
const PORT_ATTEMPTS: u16 = 10;

/// How often we announce ourselves to the DHT while running; peers stored
/// by DHT nodes expire after about 30 minutes.
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Runs the command.
pub async fn run(args: DownloadArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let target = Target::read(&args.target).await?;
    let metadata_timeout = dht_cmd::seconds(args.metadata_timeout)?;
    let mode = ViewMode::choose(args.json);
    let dht = start_dht(&args.dht, args.no_dht).await?;
    let listener = listen(args.port).await?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::Failed(e.into()))?
        .port();
    let announcer = dht
        .clone()
        .map(|dht| announce_forever(dht, target.info_hash(), port));

    let (metainfo, magnet) = match target {
        Target::Torrent(metainfo) => (metainfo, None),
        Target::Magnet(magnet) => {
            mode.event("phase", serde_json::json!({ "phase": "metadata" }));
            (
                fetch(&magnet, dht.clone(), metadata_timeout).await?,
                Some(magnet),
            )
        }
    };
    let so = magnet.as_ref().and_then(|m| m.select_only.as_deref());
    let files = selection::resolve(&metainfo.info, &args.select, so).map_err(Failure::BadInput)?;

    let mut config = DownloadConfig::new(&args.output, our_peer_id());
    config.files = files;
    config.listen = Some(listener);
    config.download_limit = args
        .max_download_rate
        .as_deref()
        .map(parse_rate)
        .transpose()
        .map_err(bad)?;
    config.upload_limit = args
        .max_upload_rate
        .as_deref()
        .map(parse_rate)
        .transpose()
        .map_err(bad)?;
    config.seed_ratio = Some(args.seed_ratio);
    config.seed_time = args.seed_time.map(dht_cmd::seconds).transpose()?;
    config.no_seed = args.no_seed;

    let direct = magnet.as_ref().map(|m| m.peers.clone()).unwrap_or_default();
    let peers = peer_stream(metainfo.info_hash, direct, dht.clone());
    let metainfo = Arc::new(metainfo);
    let handle = Download::start(Arc::clone(&metainfo), config, peers);
    let mut view = ProgressView::new(mode, &metainfo);
    let summary = view.follow(handle).await;

    if let Some(task) = announcer {
        task.abort();
    }
    if let Some(dht) = dht {
        let _ = dht.shutdown().await;
    }
    let summary = summary.map_err(|e| Failure::Failed(anyhow!(e)))?;
    view.finish(&summary, started.elapsed());
    finish(&summary, &metainfo, &args.output.display().to_string())
}

fn bad(message: String) -> Failure {
    Failure::BadInput(anyhow!(message))
}

/// The exit status: 0 only when every selected file is verified on disk.
fn finish(summary: &Summary, metainfo: &Metainfo, output: &str) -> Result<(), Failure> {
    if summary.complete {
        return Ok(());
    }
    Err(Failure::Failed(anyhow!(
        "download of {} stopped before it was complete; the data is kept in {output}: \
         run the same command again to resume",
        metainfo.info.name
    )))
}

/// Binds the TCP listen port: `port`, else the next free one, else any.
async fn listen(port: u16) -> Result<TcpListener, Failure> {
    for candidate in (0..PORT_ATTEMPTS).filter_map(|i| port.checked_add(i)) {
        if let Ok(listener) =
            TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, candidate))).await
        {
            return Ok(listener);
        }
    }
    TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .await
        .map_err(|e| Failure::Failed(anyhow!(e).context("cannot open a TCP listen port")))
}

/// Announces our listen port now and every [`ANNOUNCE_INTERVAL`].
fn announce_forever(dht: Dht, info_hash: InfoHash, port: u16) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match dht.announce(info_hash, Some(port)).await {
                Ok(summary) => tracing::info!(
                    "announced port {port} to {} DHT nodes",
                    summary.announced_to
                ),
                Err(_) => return,
            }
            tokio::time::sleep(ANNOUNCE_INTERVAL).await;
        }
    })
}

/// Human summary of the end of a download: `verified` of `wanted` bytes
/// are on disk; a stopped download says how far it got, not how big it is.
pub fn summary_line(summary: &Summary, verified: u64, wanted: u64, elapsed: Duration) -> String {
    let seconds = summary.download_time.as_secs_f64().max(1e-3);
    let outcome = if summary.complete {
        format!("downloaded {}", BinaryBytes(wanted))
    } else {
        format!(
            "stopped at {} of {}",
            BinaryBytes(verified),
            BinaryBytes(wanted)
        )
    };
    format!(
        "{outcome} in {:.2} s ({}/s average); {} pieces resumed, {} downloaded, {} failed the hash, {} peers banned; uploaded {}; total time {:.2} s",
        seconds,
        BinaryBytes((summary.downloaded as f64 / seconds) as u64),
        summary.pieces_resumed,
        summary.pieces_verified,
        summary.hash_failures,
        summary.peers_banned,
        BinaryBytes(summary.uploaded),
        elapsed.as_secs_f64(),
    )
}
