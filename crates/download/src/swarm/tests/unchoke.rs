//! How soon a seeding download lets a newly interested peer download.

use lodestone_wire::Message;

use super::leechers::connect;
use super::*;

/// Longest the clock is held still (in real time) while the test waits for
/// the unchoke: past it a build that waits for its housekeeping tick still
/// ends, and fails, instead of hanging.
const HOLD: Duration = Duration::from_secs(10);

/// A peer's `interested` is answered by an unchoke at once, not at the
/// coordinator's next housekeeping tick (up to 200 ms later, a third of a
/// 64 MiB upload over loopback). The clock is paused, and a blocking task
/// keeps tokio from advancing it while the test waits, so no tick can come:
/// an unchoke that waited for one arrives only after the hold, later on the
/// virtual clock.
#[tokio::test(start_paused = true)]
async fn an_interested_peer_is_unchoked_without_waiting_for_a_tick() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-unchoke");
    let (seed, addr, _keep) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let mut conn = connect(&metainfo, addr, b'U').await;

    let (release, hold) = std::sync::mpsc::channel::<()>();
    let holding = tokio::task::spawn_blocking(move || {
        let _ = hold.recv_timeout(HOLD);
    });
    let asked = tokio::time::Instant::now();
    conn.send(&Message::Interested).await.unwrap();
    while conn.recv().await.unwrap() != Message::Unchoke {}
    let waited = asked.elapsed();
    let _ = release.send(());
    holding.await.unwrap();

    assert_eq!(waited, Duration::ZERO, "the unchoke waited for a tick");
    seed.shutdown();
    finish(seed).await;
}
