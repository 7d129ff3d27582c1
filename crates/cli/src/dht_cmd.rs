//! `lodestone dht get-peers` and `lodestone dht announce`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use lodestone_core::{InfoHash, Magnet};
use lodestone_dht::{DEFAULT_BOOTSTRAP, Dht, DhtConfig};

use crate::args::{DhtArgs, DhtCommand};
use crate::bootstrap;
use crate::failure::{BadInputExt, Failure};
use crate::output::outln;
use crate::state_dir::StateDir;

/// How often the DHT state file is brought up to date while running (it is
/// also written when the DHT shuts down).
const DHT_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// Runs a `dht` subcommand.
pub async fn run(command: DhtCommand) -> Result<(), Failure> {
    match command {
        DhtCommand::GetPeers {
            info_hash,
            timeout,
            dht,
        } => {
            let info_hash = parse_swarm(&info_hash)?;
            let timeout = seconds(timeout)?;
            get_peers(info_hash, timeout, &dht).await
        }
        DhtCommand::Announce {
            info_hash,
            port,
            dht,
        } => {
            let info_hash = parse_swarm(&info_hash)?;
            announce(info_hash, port, &dht).await
        }
    }
}

/// An infohash given bare or inside a magnet link.
pub fn parse_swarm(text: &str) -> Result<InfoHash, Failure> {
    Magnet::parse(text)
        .map(|m| m.info_hash)
        .bad_input(|| format!("bad infohash {text:?}"))
}

/// A positive, finite number of seconds.
pub fn seconds(value: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::BadInput(anyhow::anyhow!(
                "timeout must be a positive number of seconds, got {value}"
            ))
        })
}

/// The DHT configuration `args` describe; a bootstrap address that does
/// not resolve is bad input.
pub async fn config(args: &DhtArgs) -> Result<DhtConfig, Failure> {
    let bootstrap = if args.bootstrap.is_empty() {
        DEFAULT_BOOTSTRAP.iter().map(|s| (*s).to_owned()).collect()
    } else {
        bootstrap::resolve(&args.bootstrap).await?
    };
    let bind = match args.bind.is_empty() {
        true => default_bind(),
        false => args.bind.clone(),
    };
    Ok(DhtConfig {
        bind,
        bootstrap,
        state_file: args
            .state
            .clone()
            .or_else(|| StateDir::resolve(args.state_dir.as_deref()).and_then(|s| s.dht_state())),
        save_interval: Some(DHT_SAVE_INTERVAL),
        ..DhtConfig::default()
    })
}

/// Both families' wildcard addresses (BEP 32: one node, a socket per
/// family), or IPv4 alone where no IPv6 socket can be opened.
fn default_bind() -> Vec<SocketAddr> {
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
    match std::net::UdpSocket::bind(v6) {
        Ok(_) => vec![v4, v6],
        Err(e) => {
            tracing::info!("IPv6 unavailable ({e}): the DHT runs on IPv4 only");
            vec![v4]
        }
    }
}

/// Starts a DHT node as `args` say.
pub async fn start(args: &DhtArgs) -> Result<Dht, Failure> {
    Dht::spawn(config(args).await?)
        .await
        .with_context(|| format!("cannot start the DHT on {:?}", args.bind))
        .map_err(Failure::Failed)
}

async fn get_peers(info_hash: InfoHash, timeout: Duration, args: &DhtArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let dht = start(args).await?;
    let mut peers = dht
        .get_peers(info_hash)
        .await
        .context("the DHT stopped")
        .map_err(Failure::Failed)?;
    let mut found = 0usize;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let finished = loop {
        tokio::select! {
            peer = peers.recv() => match peer {
                Some(peer) => {
                    found += 1;
                    outln!("{peer}");
                }
                None => break true,
            },
            () = &mut deadline => break false,
        }
    };
    let stats = dht.stats().await.ok();
    let _ = dht.shutdown().await;
    let nodes = stats.map_or(0, |s| s.ipv4_nodes + s.ipv6_nodes);
    eprintln!(
        "{found} peers in {:.2} s; {} ({nodes} nodes in the routing table)",
        started.elapsed().as_secs_f64(),
        if finished {
            "lookup finished"
        } else {
            "timed out"
        },
    );
    if found == 0 {
        let why = if nodes == 0 {
            "no DHT node answered: check --bootstrap and the network"
        } else {
            "the DHT knows no peer of this swarm"
        };
        return Err(Failure::Failed(anyhow::anyhow!(
            "no peers found for {info_hash}: {why}"
        )));
    }
    Ok(())
}

async fn announce(info_hash: InfoHash, port: u16, args: &DhtArgs) -> Result<(), Failure> {
    let dht = start(args).await?;
    let summary = dht
        .announce(info_hash, Some(port))
        .await
        .context("the DHT stopped")
        .map_err(Failure::Failed)?;
    let _ = dht.shutdown().await;
    eprintln!(
        "announced port {port} to {} nodes ({} queries, {} answers, {:.2} s)",
        summary.announced_to,
        summary.lookup.queries,
        summary.lookup.responses,
        summary.lookup.elapsed.as_secs_f64()
    );
    for peer in &summary.peers {
        outln!("{peer}");
    }
    if summary.announced_to == 0 {
        return Err(Failure::Failed(anyhow::anyhow!(
            "no DHT node accepted the announce for {info_hash}"
        )));
    }
    Ok(())
}
