//! `lodestone metadata`: magnet link in, verified `.torrent` out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use lodestone_core::metainfo::disk_component;
use lodestone_core::{Magnet, Metainfo};
use lodestone_session::{AddOptions, Session, SessionConfig, TorrentSource};

use crate::args::MetadataArgs;
use crate::dht_cmd;
use crate::failure::{BadInputExt, Failure};
use crate::inspect::print_metainfo;
use crate::progress_view::ViewMode;
use crate::shown::Shown;
use crate::state_dir::StateDir;
use crate::torrent_view::follow;

/// Runs the command.
pub async fn run(args: MetadataArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let magnet = Magnet::parse(&args.magnet).bad_input(|| "bad magnet link".to_owned())?;
    let timeout = dht_cmd::seconds(args.timeout)?;
    let state = StateDir::resolve(args.dht.state_dir.as_deref());
    let metainfo = match state
        .as_ref()
        .and_then(|s| s.cached_metainfo(magnet.info_hash))
    {
        Some(kept) => kept,
        None => fetch(magnet, &args, timeout, state).await?,
    };
    // Cut as a file's name is, keeping `.torrent`: a name the file system
    // takes as a directory may be too long with the suffix.
    let path = args.output.unwrap_or_else(|| {
        PathBuf::from(&*disk_component(&format!("{}.torrent", metainfo.info.name)))
    });
    std::fs::write(&path, metainfo.to_torrent_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::Failed)?;
    eprintln!(
        "metadata of {} verified in {:.3} s, written to {}",
        metainfo.info_hash,
        started.elapsed().as_secs_f64(),
        Shown(path.display())
    );
    print_metainfo(&metainfo, false);
    Ok(())
}

/// Fetches the metadata through a session of its own, keeping it in the
/// state directory.
async fn fetch(
    magnet: Magnet,
    args: &MetadataArgs,
    timeout: Duration,
    state: Option<StateDir>,
) -> Result<Metainfo, Failure> {
    check_peer_sources(&magnet, args.no_dht, args.no_trackers, false)?;
    let mut config = SessionConfig::new();
    config.dht = match args.no_dht {
        true => None,
        false => Some(dht_cmd::config(&args.dht).await?),
    };
    config.trackers = !args.no_trackers;
    // Nothing is served: any free port will do.
    config.listen_port = 0;
    config.encryption = args.encryption.policy;
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
    let result = follow(handle, ViewMode::choose(false, 1), state).await;
    session.shutdown().await;
    result?;
    let metainfo = status
        .borrow()
        .metainfo
        .clone()
        .ok_or_else(|| Failure::Failed(anyhow!("stopped before the metadata arrived")))?;
    Ok(Metainfo::clone(&metainfo))
}

/// Refuses to fetch a magnet's metadata with no way to find a peer: no
/// DHT, no tracker to ask (none named, or `--no-trackers`), no `x.pe`,
/// and no `more_peers` (`--peer`). Said at once rather than after the
/// timeout.
pub(crate) fn check_peer_sources(
    magnet: &Magnet,
    no_dht: bool,
    no_trackers: bool,
    more_peers: bool,
) -> Result<(), Failure> {
    let trackers = !no_trackers && !magnet.trackers.is_empty();
    if !no_dht || trackers || !magnet.peers.is_empty() || more_peers {
        return Ok(());
    }
    let needs = if no_trackers {
        "with --no-dht and --no-trackers the magnet link must name peers (x.pe=IP:PORT)"
    } else {
        "with --no-dht the magnet link must name peers (x.pe=IP:PORT) or trackers (tr=)"
    };
    Err(Failure::BadInput(anyhow!("no peer source: {needs}")))
}
