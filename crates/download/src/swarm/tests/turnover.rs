//! Closing connections for the session's cap: asked twice in a row, a
//! seeding download closes two different peers, the newest first, and
//! keeps the third.

use super::leechers::{connect, until_hung_up};
use super::*;

#[tokio::test]
async fn two_asks_close_two_peers_newest_first() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-turnover");
    let (seed, addr, _net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let mut peers = Vec::new();
    for tag in 1..=3 {
        peers.push(connect(&metainfo, addr, tag).await);
        until(&seed, |p| p.peers_connected == usize::from(tag)).await;
    }
    // Both asks are queued before the download runs again: the second
    // must not pick the peer the first already told to go.
    seed.close_one_peer();
    seed.close_one_peer();
    until_hung_up(&mut peers[2]).await;
    until_hung_up(&mut peers[1]).await;
    until(&seed, |p| p.peers_connected == 1).await;
    seed.shutdown();
    finish(seed).await;
}
