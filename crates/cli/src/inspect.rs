//! `lodestone inspect`: what a .torrent file or magnet link describes.

use indicatif::BinaryBytes;
use lodestone_core::{Magnet, Metainfo};
use serde_json::json;

use crate::args::InspectArgs;
use crate::failure::Failure;
use crate::output::outln;
use crate::shown::Shown;
use crate::target::Target;

/// Runs the command.
pub async fn run(args: &InspectArgs) -> Result<(), Failure> {
    match Target::read(&args.target).await? {
        Target::Torrent(metainfo) => print_metainfo(&metainfo, args.json),
        Target::Magnet(magnet) => print_magnet(&magnet, args.json),
    }
    Ok(())
}

/// Prints a metainfo as text or JSON.
pub fn print_metainfo(metainfo: &Metainfo, as_json: bool) {
    let info = &metainfo.info;
    let files = info.files.iter().enumerate().filter(|(_, f)| !f.padding);
    if as_json {
        let files: Vec<_> = files
            .map(
                |(index, f)| json!({ "index": index, "path": f.relative_path(), "size": f.length }),
            )
            .collect();
        let value = json!({
            "info_hash": metainfo.info_hash.to_hex(),
            "name": info.name,
            "total_size": info.total_length,
            "piece_length": info.piece_length,
            "piece_count": info.piece_count(),
            "private": info.private,
            "tracker_tiers": tracker_tiers(metainfo),
            "magnet": metainfo.magnet().to_string(),
            "files": files,
        });
        outln!("{value}");
        return;
    }
    outln!("infohash:    {}", metainfo.info_hash);
    outln!("name:        {}", Shown(&info.name));
    outln!(
        "total size:  {} ({} bytes)",
        BinaryBytes(info.total_length),
        info.total_length
    );
    outln!(
        "pieces:      {} x {}",
        info.piece_count(),
        BinaryBytes(u64::from(info.piece_length))
    );
    if info.private {
        outln!(
            "private:     yes (peers only from trackers; lodestone will not use the DHT for it)"
        );
    }
    for (tier, trackers) in tracker_tiers(metainfo).iter().enumerate() {
        for tracker in trackers {
            outln!(
                "tracker:     {} (tier {tier}; {})",
                Shown(tracker),
                tracker_use(tracker)
            );
        }
    }
    outln!("magnet:      {}", metainfo.magnet());
    let files: Vec<_> = files.collect();
    outln!("files:       {}", files.len());
    let width = files.last().map_or(1, |(index, _)| index.to_string().len());
    for (index, file) in files {
        outln!(
            "  [{index:>width$}] {}  ({})",
            Shown(file.relative_path().display()),
            BinaryBytes(file.length)
        );
    }
}

/// The trackers in their tiers (BEP 12): `announce-list` when present,
/// since it replaces `announce`; otherwise `announce` alone as one tier.
fn tracker_tiers(metainfo: &Metainfo) -> Vec<Vec<String>> {
    let tiers: Vec<Vec<String>> = metainfo
        .announce_list
        .iter()
        .filter(|tier| !tier.is_empty())
        .cloned()
        .collect();
    if !tiers.is_empty() {
        return tiers;
    }
    metainfo.announce.iter().map(|a| vec![a.clone()]).collect()
}

/// Whether `download` announces to a tracker URL.
fn tracker_use(url: &str) -> &'static str {
    use lodestone_tracker::TrackerError;
    match lodestone_tracker::Tracker::parse(url) {
        Ok(_) => "announced unless --no-trackers",
        Err(TrackerError::LocalNotAnnounce(_)) => {
            "unused: an HTTP tracker on this machine must be at /announce"
        }
        Err(_) => "unused: lodestone speaks http, https and udp trackers",
    }
}

fn print_magnet(magnet: &Magnet, as_json: bool) {
    let peers: Vec<String> = magnet.peers.iter().map(ToString::to_string).collect();
    if as_json {
        let value = json!({
            "info_hash": magnet.info_hash.to_hex(),
            "name": magnet.display_name,
            "trackers": magnet.trackers,
            "peers": peers,
            "magnet": magnet.to_string(),
        });
        outln!("{value}");
        return;
    }
    outln!("infohash:    {}", magnet.info_hash);
    if let Some(name) = &magnet.display_name {
        outln!("name:        {}", Shown(name));
    }
    for tracker in &magnet.trackers {
        outln!("tracker:     {} ({})", Shown(tracker), tracker_use(tracker));
    }
    for peer in &peers {
        outln!("peer:        {peer}");
    }
    outln!("(sizes and files are known once the metadata is fetched: lodestone metadata MAGNET)");
}
