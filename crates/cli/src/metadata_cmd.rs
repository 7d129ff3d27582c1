//! `lodestone metadata`: magnet link in, verified `.torrent` out.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};
use lodestone_core::Magnet;
use lodestone_session::{AddOptions, Session, SessionConfig, TorrentSource};

use crate::args::MetadataArgs;
use crate::dht_cmd;
use crate::failure::{BadInputExt, Failure};
use crate::inspect::print_metainfo;
use crate::progress_view::ViewMode;
use crate::torrent_view::follow;

/// Runs the command.
pub async fn run(args: MetadataArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let magnet = Magnet::parse(&args.magnet).bad_input(|| "bad magnet link".to_owned())?;
    let timeout = dht_cmd::seconds(args.timeout)?;
    if args.no_dht && magnet.peers.is_empty() {
        return Err(Failure::BadInput(anyhow!(
            "with --no-dht the magnet link must name peers (x.pe=IP:PORT)"
        )));
    }
    let mut config = SessionConfig::new();
    config.dht = (!args.no_dht).then(|| dht_cmd::config(&args.dht));
    // Nothing is served: any free port will do.
    config.listen_port = 0;
    let session = Session::start(config)
        .await
        .map_err(|e| Failure::Failed(anyhow!(e)))?;
    let mut options = AddOptions::new(".");
    options.metadata_timeout = timeout;
    options.metadata_only = true;
    let handle = session
        .add(TorrentSource::Magnet(magnet), options)
        .map_err(|e| Failure::Failed(anyhow!(e)))?;
    let status = handle.status();
    let result = follow(handle, ViewMode::choose(false, 1)).await;
    session.shutdown().await;
    result?;
    let metainfo = status
        .borrow()
        .metainfo
        .clone()
        .ok_or_else(|| Failure::Failed(anyhow!("stopped before the metadata arrived")))?;
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
