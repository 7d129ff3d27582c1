//! Where peer addresses come from: the magnet's `x.pe` and the DHT, merged
//! into one stream for the metadata fetch and the download.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::{InfoHash, PeerId};
use lodestone_dht::Dht;
use tokio::sync::mpsc;

/// Pause between DHT lookups of the same swarm, so that peers that join
/// late are found while the job runs.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(15);

/// First pause after a lookup that found nobody; it doubles up to
/// [`LOOKUP_INTERVAL`]. A lookup started before the routing table filled can
/// come back empty, and the next one should not wait long.
const EMPTY_LOOKUP_RETRY: Duration = Duration::from_millis(500);

/// A fresh peer id: our client prefix in the Azureus style, then random bytes.
pub fn our_peer_id() -> PeerId {
    let mut id = *b"-LS0001-............";
    let random: [u8; 12] = rand::random();
    id[8..].copy_from_slice(&random);
    PeerId(id)
}

/// Streams `direct` addresses first, then whatever repeated DHT lookups
/// find. Direct addresses are offered again with every lookup (or, without a
/// DHT, after the same growing pauses) so that a peer whose first connection
/// failed is tried again. The stream ends when the receiver is dropped.
pub fn peer_stream(
    info_hash: InfoHash,
    direct: Vec<SocketAddr>,
    dht: Option<Dht>,
) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut retry = EMPTY_LOOKUP_RETRY;
        loop {
            let mut any = false;
            for addr in &direct {
                if tx.send(*addr).await.is_err() {
                    return;
                }
            }
            if let Some(dht) = &dht {
                let Ok(mut found) = dht.get_peers(info_hash).await else {
                    return;
                };
                while let Some(addr) = found.recv().await {
                    any = true;
                    if tx.send(addr).await.is_err() {
                        return;
                    }
                }
            }
            let pause = if any { LOOKUP_INTERVAL } else { retry };
            retry = (retry * 2).min(LOOKUP_INTERVAL);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = tx.closed() => return,
            }
        }
    });
    rx
}
