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
use crate::status::StatusLine;

/// How often the status line is refreshed.
const STATUS_PERIOD: Duration = Duration::from_millis(250);

/// Runs the command.
pub async fn run(args: MetadataArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let magnet = Magnet::parse(&args.magnet).bad_input(|| "bad magnet link".to_owned())?;
    let timeout = dht_cmd::seconds(args.timeout)?;
    let dht = start_dht(&args.dht, args.no_dht).await?;
    let metainfo = fetch(&magnet, dht.clone(), timeout).await;
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

/// Fetches the metainfo of `magnet` from its `x.pe` peers and the DHT,
/// showing progress on stderr.
pub async fn fetch(
    magnet: &Magnet,
    dht: Option<Dht>,
    timeout: Duration,
) -> Result<Metainfo, Failure> {
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

/// One line saying how far the fetch got, short enough to fit an
/// 80-column terminal beside the spinner, whole:
/// `metadata: peers 3/12, ut_metadata 2, pieces 1/4, DHT nodes 180`.
fn describe(nodes: usize, using_dht: bool, p: &Progress) -> String {
    let mut line = format!(
        "metadata: peers {}/{}, ut_metadata {}, pieces {}/{}",
        p.connected, p.peers_known, p.with_ut_metadata, p.pieces_have, p.pieces_total
    );
    if using_dht {
        line.push_str(&format!(", DHT nodes {nodes}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spinner and the elapsed time take 6 columns before the message.
    /// The fetch holds at most 64 connections and 32 MiB of metadata (2,048
    /// pieces); the other counts get four digits.
    #[test]
    fn the_status_fits_80_columns() {
        let p = Progress {
            peers_known: 9999,
            connected: 64,
            with_ut_metadata: 64,
            pieces_have: 2048,
            pieces_total: 2048,
            ..Progress::default()
        };
        let line = describe(9999, true, &p);
        assert!(6 + line.chars().count() <= 80, "{line}");
    }
}
