//! Announcing a torrent to its trackers: one task per BEP 12 tier, all
//! tiers at once, feeding the peers they return to the torrent's address
//! book as [`PeerSource::Tracker`](crate::PeerSource::Tracker).
//!
//! Each tier announces `started` first, then again at the tracker's
//! `interval` (bounded to [`MIN_INTERVAL`]..[`MAX_INTERVAL`]), `completed`
//! as soon as the download completes, and `stopped` when the torrent ends,
//! within [`STOP_WAIT`]. A tier that fails retries after a wait that
//! doubles from [`FIRST_RETRY`] to [`MAX_INTERVAL`]. After its first
//! answer a tier scrapes its tracker once and logs the swarm's counts.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::{ErrorChain, InfoHash, PeerId};
use lodestone_tracker::tier::Tier;
use lodestone_tracker::{Announce, Client, Event, NUMWANT};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The least wait between two announces to a tier, whatever the tracker
/// asks.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// The longest wait between two announces to a tier.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Wait before announcing again to a tier none of whose trackers answered.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);

/// Time given to the `stopped` announces when the torrent ends.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// `left` sent while the size is unknown (a magnet before its metadata):
/// positive, so the tracker counts us as a leecher and sends seeders.
const LEFT_UNKNOWN: u64 = 16 * 1024;

/// How far the torrent is, as the trackers are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// Bytes sent this session.
    pub uploaded: u64,
    /// Bytes received this session.
    pub downloaded: u64,
    /// Bytes still wanted, once the metainfo is known.
    pub left: Option<u64>,
    /// The download completed during this session (not at start).
    pub completed: bool,
}

/// Who we are in every announce of a torrent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    /// Fixed for the torrent, so trackers tell us from a neighbour behind
    /// the same address.
    pub key: u32,
}

/// The running announces of one torrent.
pub(crate) struct Trackers {
    transfer: watch::Sender<Transfer>,
    stop: watch::Sender<bool>,
    tiers: JoinSet<()>,
}

impl Trackers {
    /// Starts one task per tier; peers found go to `found`, a reply at a
    /// time.
    pub(crate) fn spawn(
        client: &Client,
        tiers: Vec<Tier>,
        me: Identity,
        found: mpsc::Sender<Vec<SocketAddr>>,
    ) -> Trackers {
        let (transfer, transfer_rx) = watch::channel(Transfer::default());
        let (stop, stop_rx) = watch::channel(false);
        let mut set = JoinSet::new();
        for tier in tiers {
            set.spawn(run_tier(
                client.clone(),
                tier,
                me,
                transfer_rx.clone(),
                stop_rx.clone(),
                found.clone(),
            ));
        }
        Trackers {
            transfer,
            stop,
            tiers: set,
        }
    }

    /// Tells the tiers how far the torrent is now.
    pub(crate) fn update(&self, now: Transfer) {
        self.transfer
            .send_if_modified(|t| std::mem::replace(t, now) != now);
    }

    /// Sends `stopped` where `started` was accepted, waiting at most
    /// [`STOP_WAIT`] in all, then ends the tasks.
    pub(crate) async fn stop(mut self) {
        self.stop.send_replace(true);
        let all = async { while self.tiers.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_WAIT, all).await.is_err() {
            tracing::debug!("trackers: stopped announces cut short after {STOP_WAIT:?}");
        }
        self.tiers.abort_all();
    }
}

/// The announce `event` with the torrent's figures now.
fn announce(me: Identity, t: Transfer, event: Event) -> Announce {
    Announce {
        info_hash: me.info_hash,
        peer_id: me.peer_id,
        port: me.port,
        uploaded: t.uploaded,
        downloaded: t.downloaded,
        left: t.left.unwrap_or(LEFT_UNKNOWN),
        event,
        numwant: if event == Event::Stopped { 0 } else { NUMWANT },
        key: me.key,
    }
}

/// The wait a tracker asks for, within our bounds.
fn next_interval(interval: Duration, min_interval: Option<Duration>) -> Duration {
    interval
        .max(min_interval.unwrap_or_default())
        .clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Announces to one tier until the torrent stops.
async fn run_tier(
    client: Client,
    mut tier: Tier,
    me: Identity,
    mut transfer: watch::Receiver<Transfer>,
    mut stop: watch::Receiver<bool>,
    found: mpsc::Sender<Vec<SocketAddr>>,
) {
    let mut started = false;
    let mut completed_sent = false;
    let mut scraped = false;
    let mut retry = FIRST_RETRY;
    'announces: loop {
        let now = *transfer.borrow_and_update();
        let event = if !started {
            Event::Started
        } else if now.completed && !completed_sent {
            Event::Completed
        } else {
            Event::None
        };
        let request = announce(me, now, event);
        let result = if event == Event::Completed {
            // Not cut short by the end: once sent it may have counted, and
            // the last words would tell it twice (STOP_WAIT bounds it).
            tier.announce(&client, &request).await
        } else {
            tokio::select! {
                r = tier.announce(&client, &request) => r,
                _ = stop.changed() => break,
            }
        };
        let wait = match result {
            Ok(reply) => {
                started = true;
                completed_sent |= event == Event::Completed;
                retry = FIRST_RETRY;
                tracing::debug!(
                    tracker = %front_url(&tier), ?event, peers = reply.peers.len(),
                    "tracker answered"
                );
                // An error means the torrent is ending and takes no more.
                let _ = found.send(reply.peers).await;
                if transfer.borrow().completed && !completed_sent {
                    // Completed while this announce was under way.
                    Duration::ZERO
                } else {
                    next_interval(reply.interval, reply.min_interval)
                }
            }
            Err(e) => {
                tracing::debug!(?event, "tracker tier failed: {}", ErrorChain(&e));
                let wait = retry;
                retry = (retry * 2).min(MAX_INTERVAL);
                wait
            }
        };
        if started && !scraped {
            scraped = true;
            // The scrape only informs: leaving must not wait for it.
            tokio::select! {
                () = scrape(&client, &mut tier, &me.info_hash) => {}
                _ = stop.changed() => break,
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                changed = transfer.changed() => {
                    if changed.is_err() {
                        // The torrent is gone: leave.
                        break 'announces;
                    }
                    // Completion is told at once, unless telling it just
                    // failed: then it waits for the retry like the rest.
                    let due = started
                        && !completed_sent
                        && event != Event::Completed
                        && transfer.borrow().completed;
                    if due {
                        break;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        if *stop.borrow() {
            break;
        }
    }
    if started {
        // A download that completed just before the end is still told,
        // so the tracker counts it, then we leave.
        let now = *transfer.borrow();
        if now.completed && !completed_sent {
            last_word(&client, &mut tier, me, now, Event::Completed).await;
        }
        last_word(&client, &mut tier, me, now, Event::Stopped).await;
    }
}

/// `event` to the tracker that answered last (the front of the tier),
/// within [`STOP_WAIT`].
async fn last_word(client: &Client, tier: &mut Tier, me: Identity, now: Transfer, event: Event) {
    let Some(tracker) = tier.front_mut() else {
        return;
    };
    let a = announce(me, now, event);
    match tokio::time::timeout(STOP_WAIT, tracker.announce(client, &a)).await {
        Ok(Ok(_)) => tracing::debug!(tracker = %tracker.url(), ?event, "announced"),
        Ok(Err(e)) => {
            tracing::debug!(tracker = %tracker.url(), ?event, "announce failed: {}", ErrorChain(&e));
        }
        Err(_) => tracing::debug!(tracker = %tracker.url(), ?event, "announce timed out"),
    }
}

/// Scrapes the tier's front tracker once and logs what it knows.
async fn scrape(client: &Client, tier: &mut Tier, info_hash: &InfoHash) {
    let Some(tracker) = tier.front_mut() else {
        return;
    };
    match tracker.scrape(client, info_hash).await {
        Ok(Some(s)) => tracing::info!(
            tracker = %tracker.url(),
            "tracker scrape: {} seeders, {} leechers, {} completed downloads",
            s.complete, s.incomplete, s.downloaded
        ),
        Ok(None) => tracing::debug!(tracker = %tracker.url(), "tracker has no scrape URL"),
        Err(e) => tracing::debug!(tracker = %tracker.url(), "scrape failed: {}", ErrorChain(&e)),
    }
}

fn front_url(tier: &Tier) -> String {
    tier.trackers()
        .first()
        .map_or_else(String::new, |t| t.url().to_string())
}

#[cfg(test)]
mod tests {
    use lodestone_tracker::udp::UdpConfig;
    use tokio::net::UdpSocket;

    use super::*;

    /// A UDP tracker on loopback that answers every connect and announce,
    /// handing out `peer`, and reports each announce's event code.
    async fn recording_tracker(peer: SocketAddr) -> (String, mpsc::UnboundedReceiver<u32>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("udp://{}", socket.local_addr().expect("addr"));
        let (events, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let d = &buf[..n];
                let mut reply = Vec::new();
                if n == 16 {
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(&d[12..16]);
                    reply.extend_from_slice(&42u64.to_be_bytes());
                } else if n == 98 {
                    let _ = events.send(u32::from_be_bytes(d[80..84].try_into().expect("event")));
                    reply.extend_from_slice(&1u32.to_be_bytes());
                    reply.extend_from_slice(&d[12..16]);
                    for v in [1800u32, 0, 1] {
                        reply.extend_from_slice(&v.to_be_bytes());
                    }
                    lodestone_core::compact::write_peer(&peer, &mut reply);
                }
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_tier_says_started_completed_stopped_and_passes_peers_on() {
        let peer: SocketAddr = "127.0.0.9:6881".parse().expect("addr");
        let (url, mut seen) = recording_tracker(peer).await;
        let client = Client::new(Duration::from_secs(5), UdpConfig::default()).expect("client");
        let tiers = lodestone_tracker::tier::tiers_of(None, &[], &[url], &mut rand::rng());
        let me = Identity {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 7000,
            key: 3,
        };
        let (found_tx, mut found) = mpsc::channel(8);
        let trackers = Trackers::spawn(&client, tiers, me, found_tx);
        assert_eq!(found.recv().await, Some(vec![peer]));
        assert_eq!(seen.recv().await, Some(Event::Started.udp_code()));
        // Completion just before the end is still told, before `stopped`.
        trackers.update(Transfer {
            uploaded: 0,
            downloaded: 10,
            left: Some(0),
            completed: true,
        });
        trackers.stop().await;
        let mut rest = Vec::new();
        while let Ok(code) = seen.try_recv() {
            rest.push(code);
        }
        assert_eq!(
            rest,
            [Event::Completed.udp_code(), Event::Stopped.udp_code()]
        );
    }

    #[test]
    fn intervals_are_bounded_and_honour_min_interval() {
        let s = Duration::from_secs;
        assert_eq!(next_interval(s(1), None), MIN_INTERVAL);
        assert_eq!(next_interval(s(1800), None), s(1800));
        assert_eq!(next_interval(s(300), Some(s(900))), s(900));
        assert_eq!(next_interval(s(1 << 40), None), MAX_INTERVAL);
    }

    #[test]
    fn announces_carry_the_figures_and_an_unknown_size_is_a_leecher() {
        let me = Identity {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 7000,
            key: 5,
        };
        let t = Transfer {
            uploaded: 1,
            downloaded: 2,
            left: None,
            completed: false,
        };
        let a = announce(me, t, Event::Started);
        assert_eq!(
            (a.uploaded, a.downloaded, a.left, a.port, a.numwant),
            (1, 2, LEFT_UNKNOWN, 7000, NUMWANT)
        );
        let done = Transfer { left: Some(0), ..t };
        assert_eq!(announce(me, done, Event::Stopped).numwant, 0);
        assert_eq!(announce(me, done, Event::Stopped).left, 0);
    }
}
