//! `lodestone metadata`: magnet link in, verified `.torrent` out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use lodestone_core::{Magnet, Metainfo};
use lodestone_dht::Dht;
use lodestone_metadata::{FetchOptions, Progress, fetch_metainfo_with_progress};
use tokio::sync::watch;

use crate::args::{DhtArgs, MetadataArgs};
use crate::dht_cmd;
use crate::failure::{BadInputExt, Failure};
use crate::inspect::print_metainfo;
use crate::peers::{our_peer_id, peer_stream};
use crate::state_dir::StateDir;
use crate::status::StatusLine;

/// How often the status line is refreshed.
const STATUS_PERIOD: Duration = Duration::from_millis(250);

/// Runs the command.
pub async fn run(args: MetadataArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let magnet = Magnet::parse(&args.magnet).bad_input(|| "bad magnet link".to_owned())?;
    let timeout = dht_cmd::seconds(args.timeout)?;
    let state = StateDir::resolve(args.dht.state_dir.as_deref());
    let dht = start_dht(&args.dht, args.no_dht).await?;
    let metainfo = metadata(&magnet, dht.clone(), timeout, state.as_ref()).await;
    if let Some(dht) = dht {
        let _ = dht.shutdown().await;
    }
    let metainfo = metainfo?;
    let path = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", metainfo.info.name)));
    std::fs::write(&path, metainfo.to_torrent_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::Failed)?;
    eprintln!(
        "metadata of {} verified in {:.3} s, written to {}",
        metainfo.info_hash,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    print_metainfo(&metainfo, false);
    Ok(())
}

/// Starts the DHT unless the user asked for `x.pe` peers only.
pub async fn start_dht(args: &DhtArgs, no_dht: bool) -> Result<Option<Dht>, Failure> {
    if no_dht {
        Ok(None)
    } else {
        dht_cmd::start(args).await.map(Some)
    }
}

/// The metainfo of `magnet`: from the state directory if an earlier run
/// kept it, else fetched (see [`fetch`]) and then kept.
pub async fn metadata(
    magnet: &Magnet,
    dht: Option<Dht>,
    timeout: Duration,
    state: Option<&StateDir>,
) -> Result<Metainfo, Failure> {
    if let Some(kept) = state.and_then(|s| s.cached_metainfo(magnet.info_hash)) {
        return Ok(kept);
    }
    let metainfo = fetch(magnet, dht, timeout).await?;
    if let Some(state) = state {
        state.keep_metainfo(&metainfo);
    }
    Ok(metainfo)
}

/// Fetches the metainfo of `magnet` from its `x.pe` peers and the DHT,
/// showing progress on stderr.
async fn fetch(magnet: &Magnet, dht: Option<Dht>, timeout: Duration) -> Result<Metainfo, Failure> {
    if dht.is_none() && magnet.peers.is_empty() {
        return Err(Failure::BadInput(anyhow!(
            "with --no-dht the magnet link must name peers (x.pe=IP:PORT)"
        )));
    }
    let peers = peer_stream(magnet.info_hash, magnet.peers.clone(), dht.clone());
    let mut options = FetchOptions::new(our_peer_id());
    options.timeout = timeout;
    let (progress_tx, mut progress) = watch::channel(Progress::default());
    let fetch = fetch_metainfo_with_progress(magnet.info_hash, peers, options, &progress_tx);
    tokio::pin!(fetch);
    let mut status = StatusLine::new();
    let mut tick = tokio::time::interval(STATUS_PERIOD);
    let result = loop {
        tokio::select! {
            result = &mut fetch => break result,
            _ = tick.tick() => {
                let nodes = match &dht {
                    Some(dht) => dht.stats().await.map_or(0, |s| s.ipv4_nodes + s.ipv6_nodes),
                    None => 0,
                };
                let p = *progress.borrow_and_update();
                status.set(describe(nodes, dht.is_some(), &p));
            }
        }
    };
    status.clear();
    result.map_err(|e| Failure::Failed(anyhow!(e)))
}

/// One line saying how far the fetch got.
fn describe(nodes: usize, using_dht: bool, p: &Progress) -> String {
    let dht = if using_dht {
        format!("DHT nodes {nodes}, ")
    } else {
        String::new()
    };
    format!(
        "fetching metadata: {dht}peers found {}, connected {}, with ut_metadata {}, pieces {}/{}",
        p.peers_known, p.connected, p.with_ut_metadata, p.pieces_have, p.pieces_total
    )
}
