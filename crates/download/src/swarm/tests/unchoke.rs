//! How soon a seeding download lets a peer download: when it becomes
//! interested, and when a slot frees up.
//!
//! Between its 10 s rounds the choker only fills free slots; it used to do
//! so only at the coordinator's housekeeping tick (every 200 ms), so a
//! downloader's `interested` waited up to a tick for its unchoke, a third
//! of a 64 MiB upload over loopback. These tests wait with the clock
//! stopped ([`on_a_stopped_clock`]), so no tick can come: an unchoke that
//! waited for one arrives only once the clock moves again, and the wait
//! shows on it.

use std::sync::mpsc as std_mpsc;

use lodestone_wire::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::leechers::connect;
use super::*;

/// Longest the clock is held still, in real time: past it a build that
/// waits for its housekeeping tick still ends, and fails, instead of
/// hanging.
const HOLD: Duration = Duration::from_secs(10);

/// Runs `work` with tokio's clock paused and held still, and says how far
/// the clock moved meanwhile. A blocking task in flight stops the runtime
/// from advancing a paused clock when it is idle; it lets go once `work`
/// is done, or after [`HOLD`] in real time. The clock is paused only for
/// `work`: set-up and shutdown wait for the hash pool's threads, which
/// would not hold a paused clock back.
async fn on_a_stopped_clock<T>(work: impl Future<Output = T>) -> (T, Duration) {
    tokio::time::pause();
    let (release, hold) = std_mpsc::channel::<()>();
    let holding = tokio::task::spawn_blocking(move || {
        let _ = hold.recv_timeout(HOLD);
    });
    let started = Instant::now();
    let out = work.await;
    let moved = started.elapsed();
    drop(release);
    holding.await.unwrap();
    tokio::time::resume();
    (out, moved)
}

/// A download seeding a whole torrent, and `peers` leechers handshaken
/// with it and not yet interested. Holds what must outlive the test.
struct Seeded {
    seed: DownloadHandle,
    peers: Vec<Connection>,
    _net: Net,
    _dir: TempDir,
}

impl Seeded {
    async fn start(name: &str, peers: u8) -> Self {
        let (metainfo, data) = torrent(32 * 1024, &SIZES);
        let dir = TempDir::new(name);
        let (seed, addr, net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
        let mut conns = Vec::new();
        for tag in 0..peers {
            conns.push(connect(&metainfo, addr, b'a' + tag).await);
        }
        Self {
            seed,
            peers: conns,
            _net: net,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.seed.shutdown();
        finish(self.seed).await;
    }
}

/// Says it is interested and reads until it is unchoked.
async fn interested_until_unchoked(mut conn: Connection) -> Connection {
    conn.send(&Message::Interested).await.unwrap();
    while conn.recv().await.unwrap() != Message::Unchoke {}
    conn
}

#[tokio::test]
async fn an_interested_peer_is_unchoked_without_waiting_for_a_tick() {
    let mut seeded = Seeded::start("swarm-unchoke", 1).await;
    let conn = seeded.peers.remove(0);

    let (_conn, waited) = on_a_stopped_clock(interested_until_unchoked(conn)).await;
    assert_eq!(waited, Duration::ZERO, "the unchoke waited for a tick");
    seeded.stop().await;
}

#[tokio::test]
async fn a_slot_left_by_a_peer_is_filled_without_waiting_for_a_tick() {
    // Four slots for rate and one optimistic: the sixth peer waits.
    let mut seeded = Seeded::start("swarm-unchoke-turn", 6).await;
    let conns = std::mem::take(&mut seeded.peers);

    let (_unchoked, waited) = on_a_stopped_clock(async {
        let mut waiting = JoinSet::new();
        for conn in conns {
            waiting.spawn(interested_until_unchoked(conn));
        }
        let mut unchoked = Vec::new();
        for _ in 0..5 {
            unchoked.push(waiting.join_next().await.unwrap().unwrap());
        }
        // One of them hangs up; the sixth gets its slot.
        drop(unchoked.pop());
        unchoked.push(waiting.join_next().await.unwrap().unwrap());
        unchoked
    })
    .await;
    assert_eq!(waited, Duration::ZERO, "the freed slot waited for a tick");
    seeded.stop().await;
}
