//! `lodestone download`: magnet links or .torrent files in, verified files
//! out, then seeding; several torrents share one session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, anyhow};
use lodestone_session::{AddOptions, Session, SessionConfig, TorrentSource};
use tokio::task::JoinSet;

use crate::args::DownloadArgs;
use crate::failure::Failure;
use crate::metadata_cmd::check_peer_sources;
use crate::progress_view::ViewMode;
use crate::rate::parse_rate;
use crate::state_dir::StateDir;
use crate::target::Target;
use crate::torrent_view::follow;
use crate::{dht_cmd, selection};

/// Runs the command.
pub async fn run(args: DownloadArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let mut targets = Vec::with_capacity(args.targets.len());
    for text in &args.targets {
        targets.push(Target::read(text).await?);
    }
    // Before any network work, so a magnet does not fetch metadata first.
    check_output_dir(&args.output)?;
    let metadata_timeout = dht_cmd::seconds(args.metadata_timeout)?;
    let seed_time = args.seed_time.map(dht_cmd::seconds).transpose()?;
    let stall_timeout = dht_cmd::seconds(args.stall_timeout)?;
    let mode = ViewMode::choose(args.json, targets.len());
    let state = StateDir::resolve(args.dht.state_dir.as_deref());
    let session = Session::start(session_config(&args).await?)
        .await
        .map_err(|e| Failure::Failed(anyhow!(e)))?;
    let mut views = JoinSet::new();
    for target in targets {
        let mut options = AddOptions::new(&args.output);
        options.metadata_timeout = metadata_timeout;
        options.seed_ratio = Some(args.seed_ratio);
        options.seed_time = seed_time;
        options.no_seed = args.no_seed;
        options.recheck = args.recheck;
        options.check_space = !args.no_space_check;
        options.peers.clone_from(&args.peers);
        options.stall_timeout = Some(stall_timeout);
        let mut keep = None;
        let (source, so) = match target {
            Target::Torrent(metainfo) => (TorrentSource::Metainfo(metainfo.into()), None),
            Target::Magnet(magnet) => {
                let so = magnet.select_only.clone();
                // An earlier run of this magnet kept its metadata.
                match state
                    .as_ref()
                    .and_then(|s| s.cached_metainfo(magnet.info_hash))
                {
                    Some(kept) => {
                        options.peers.extend(magnet.peers);
                        (TorrentSource::Metainfo(kept.into()), so)
                    }
                    None => {
                        check_peer_sources(
                            &magnet,
                            args.no_dht,
                            args.no_trackers,
                            !args.peers.is_empty(),
                        )?;
                        keep = state.clone();
                        (TorrentSource::Magnet(magnet), so)
                    }
                }
            }
        };
        options.resume_file = state.as_ref().map(|s| s.resume_record(source.info_hash()));
        let select = args.select.clone();
        options.select = Some(Box::new(move |metainfo| {
            selection::resolve(&metainfo.info, &select, so.as_deref()).map_err(|e| format!("{e:#}"))
        }));
        let handle = session
            .add(source, options)
            .map_err(|e| Failure::BadInput(anyhow!(e)))?;
        views.spawn(follow(handle, mode, keep));
    }
    let mut outcome = Ok(());
    while let Some(done) = views.join_next().await {
        let result = done.unwrap_or_else(|e| Err(Failure::Failed(anyhow!(e))));
        if outcome.is_ok() {
            outcome = result;
        }
    }
    session.shutdown().await;
    tracing::debug!(
        "session ended after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    outcome
}

/// The session the arguments describe.
async fn session_config(args: &DownloadArgs) -> Result<SessionConfig, Failure> {
    let mut config = SessionConfig::new();
    config.dht = match args.no_dht {
        true => None,
        false => Some(dht_cmd::config(&args.dht).await?),
    };
    config.trackers = !args.no_trackers;
    config.listen_port = args.port;
    if !args.bind_ips.is_empty() {
        (config.listen_ipv4, config.listen_ipv6) = listen_ips(&args.bind_ips).map_err(bad)?;
    }
    config.encryption = args.encryption.policy;
    config.transport = args.transport.into();
    config.max_connections = args.max_connections as usize;
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
    Ok(config)
}

/// The IPv4 and IPv6 listen addresses `--bind` names: at most one each.
fn listen_ips(ips: &[IpAddr]) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), String> {
    let (mut v4, mut v6) = (None, None);
    for ip in ips {
        let taken = match *ip {
            IpAddr::V4(ip) => v4.replace(ip).is_some(),
            IpAddr::V6(ip) => v6.replace(ip).is_some(),
        };
        if taken {
            return Err(format!(
                "--bind: more than one address of the family of {ip}"
            ));
        }
    }
    Ok((v4, v6))
}

fn bad(message: String) -> Failure {
    Failure::BadInput(anyhow!(message))
}

/// The output directory exists (or can be made) and is a directory.
fn check_output_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot use output directory {}", dir.display()))
        .map_err(Failure::Failed)?;
    Ok(())
}
