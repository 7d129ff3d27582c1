//! Finding a torrent's peers in the DHT and being found there, with one
//! lookup per interval.
//!
//! Each lookup streams the peers it finds and, when it ends, announces our
//! listen port to the closest nodes if the last announce is older than
//! [`ANNOUNCE_INTERVAL`]. While the torrent wants peers, lookups repeat
//! every [`LOOKUP_INTERVAL`] (sooner after one that found nobody: the
//! routing table may still have been filling). While it wants none (it is
//! seeding and connected enough), only the announce goes on.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::InfoHash;
use lodestone_dht::Dht;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Pause between lookups while peers are wanted.
pub const LOOKUP_INTERVAL: Duration = Duration::from_secs(15);

/// How often we announce ourselves; stored peers expire after about 30
/// minutes on the nodes.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// First pause after a lookup that found nobody; doubles up to
/// [`LOOKUP_INTERVAL`].
const EMPTY_LOOKUP_RETRY: Duration = Duration::from_millis(500);

/// Runs lookups for `info_hash` until `found` closes or the DHT stops.
/// `wanted` says whether peers are wanted now.
pub(crate) fn spawn(
    dht: Dht,
    info_hash: InfoHash,
    port: u16,
    mut wanted: watch::Receiver<bool>,
    found: mpsc::Sender<SocketAddr>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut retry = EMPTY_LOOKUP_RETRY;
        let mut last_announce: Option<Instant> = None;
        loop {
            let announce_due = last_announce.is_none_or(|at| at.elapsed() >= ANNOUNCE_INTERVAL);
            let want = *wanted.borrow_and_update();
            let pause = if want || announce_due {
                let announce = announce_due.then_some(port);
                let Ok(mut peers) = dht.lookup(info_hash, announce).await else {
                    return;
                };
                let mut any = false;
                while let Some(addr) = peers.recv().await {
                    any = true;
                    if found.send(addr).await.is_err() {
                        return;
                    }
                }
                if announce_due {
                    last_announce = Some(Instant::now());
                }
                let pause = if any { LOOKUP_INTERVAL } else { retry };
                retry = (retry * 2).min(LOOKUP_INTERVAL);
                if want { pause } else { ANNOUNCE_INTERVAL }
            } else {
                ANNOUNCE_INTERVAL
                    .saturating_sub(last_announce.map_or(Duration::ZERO, |at| at.elapsed()))
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                // Wanting peers again starts a lookup at once.
                changed = wanted.changed() => if changed.is_err() { return },
                () = found.closed() => return,
            }
        }
    })
}
