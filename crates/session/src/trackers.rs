//! Announcing a torrent to its trackers: one task per BEP 12 tier, all
//! tiers at once, feeding the peers they return to the torrent's address
//! book as [`PeerSource::Tracker`](crate::PeerSource::Tracker).
//!
//! Each tier announces `started` first, then again at the tracker's
//! `interval` (bounded to [`MIN_INTERVAL`]..[`MAX_INTERVAL`]), `completed`
//! as soon as the download completes, and `stopped` when the torrent ends,
//! within [`STOP_WAIT`]. A pause says `stopped` the same way, so trackers
//! stop handing us out, and announces nothing until the resume, which
//! starts over with `started`. A tier that fails retries after a wait that
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

use crate::torrent::Control;

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
    /// Run, pause (say `stopped`, then wait) or leave for good.
    control: watch::Sender<Control>,
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
        let (control, control_rx) = watch::channel(Control::Run);
        let mut set = JoinSet::new();
        for tier in tiers {
            let task = TierTask {
                client: client.clone(),
                tier,
                me,
                transfer: transfer_rx.clone(),
                control: control_rx.clone(),
                found: found.clone(),
                completed_sent: false,
                scraped: false,
            };
            set.spawn(task.run());
        }
        Trackers {
            transfer,
            control,
            tiers: set,
        }
    }

    /// Tells the tiers how far the torrent is now.
    pub(crate) fn update(&self, now: Transfer) {
        self.transfer
            .send_if_modified(|t| std::mem::replace(t, now) != now);
    }

    /// Pauses the announces: each tier whose `started` was accepted says
    /// `stopped` (within [`STOP_WAIT`], without holding the caller up), so
    /// trackers stop handing us out, then announces nothing until
    /// [`Self::resume`].
    pub(crate) fn pause(&self) {
        self.set(Control::Pause);
    }

    /// Resumes paused announces: each tier says `started` again, then
    /// announces as usual.
    pub(crate) fn resume(&self) {
        self.set(Control::Run);
    }

    fn set(&self, to: Control) {
        self.control
            .send_if_modified(|c| std::mem::replace(c, to) != to);
    }

    /// Sends `stopped` where `started` was accepted, waiting at most
    /// [`STOP_WAIT`] in all, then ends the tasks.
    pub(crate) async fn stop(mut self) {
        self.set(Control::Remove);
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

/// Waits until the tiers are asked for something other than `from`, and
/// returns it; [`Control::Remove`] once the torrent is gone.
async fn leave(control: &mut watch::Receiver<Control>, from: Control) -> Control {
    let next = control.wait_for(|c| *c != from).await.map(|c| *c);
    match next {
        Ok(next) if control.has_changed().is_ok() => next,
        _ => Control::Remove,
    }
}

/// One tier's announcing task: what it reads and what it has told.
struct TierTask {
    client: Client,
    tier: Tier,
    me: Identity,
    transfer: watch::Receiver<Transfer>,
    control: watch::Receiver<Control>,
    found: mpsc::Sender<Vec<SocketAddr>>,
    /// `completed` was told: once per torrent, pauses or not.
    completed_sent: bool,
    /// The tracker was scraped: once per torrent.
    scraped: bool,
}

impl TierTask {
    /// Announces while the torrent runs and says `stopped` whenever it
    /// pauses or ends, until it ends.
    async fn run(mut self) {
        loop {
            if self.announce_while_running().await {
                self.last_words().await;
            }
            if leave(&mut self.control, Control::Pause).await != Control::Run {
                return;
            }
        }
    }

    /// Announces `started`, then again at the tracker's interval and on
    /// completion, until the torrent pauses or ends. Returns whether
    /// `started` was accepted, so that `stopped` is owed.
    async fn announce_while_running(&mut self) -> bool {
        let mut started = false;
        let mut retry = FIRST_RETRY;
        loop {
            let now = *self.transfer.borrow_and_update();
            let event = if !started {
                Event::Started
            } else if now.completed && !self.completed_sent {
                Event::Completed
            } else {
                Event::None
            };
            let request = announce(self.me, now, event);
            let result = if event == Event::Completed {
                // Not cut short by the end: once sent it may have counted, and
                // the last words would tell it twice (STOP_WAIT bounds it).
                self.tier.announce(&self.client, &request).await
            } else {
                tokio::select! {
                    r = self.tier.announce(&self.client, &request) => r,
                    _ = leave(&mut self.control, Control::Run) => return started,
                }
            };
            let wait = match result {
                Ok(reply) => {
                    started = true;
                    self.completed_sent |= event == Event::Completed;
                    retry = FIRST_RETRY;
                    tracing::debug!(
                        tracker = %front_url(&self.tier), ?event, peers = reply.peers.len(),
                        "tracker answered"
                    );
                    // An error means the torrent is ending and takes no more.
                    let _ = self.found.send(reply.peers).await;
                    if self.transfer.borrow().completed && !self.completed_sent {
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
            if started && !self.scraped {
                self.scraped = true;
                // The scrape only informs: leaving must not wait for it.
                tokio::select! {
                    () = scrape(&self.client, &mut self.tier, &self.me.info_hash) => {}
                    _ = leave(&mut self.control, Control::Run) => return started,
                }
            }
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    changed = self.transfer.changed() => {
                        if changed.is_err() {
                            // The torrent is gone: leave.
                            return started;
                        }
                        // Completion is told at once, unless telling it just
                        // failed: then it waits for the retry like the rest.
                        let due = started
                            && !self.completed_sent
                            && event != Event::Completed
                            && self.transfer.borrow().completed;
                        if due {
                            break;
                        }
                    }
                    _ = leave(&mut self.control, Control::Run) => return started,
                }
            }
        }
    }

    /// What a tracker that accepted `started` is told on a pause or at the
    /// end: a completion not told yet (so it is counted), then `stopped`.
    async fn last_words(&mut self) {
        let now = *self.transfer.borrow();
        if now.completed && !self.completed_sent {
            self.completed_sent =
                last_word(&self.client, &mut self.tier, self.me, now, Event::Completed).await;
        }
        last_word(&self.client, &mut self.tier, self.me, now, Event::Stopped).await;
    }
}

/// `event` to the tracker that answered last (the front of the tier),
/// within [`STOP_WAIT`]. Returns whether it was accepted.
async fn last_word(
    client: &Client,
    tier: &mut Tier,
    me: Identity,
    now: Transfer,
    event: Event,
) -> bool {
    let Some(tracker) = tier.front_mut() else {
        return false;
    };
    let a = announce(me, now, event);
    match tokio::time::timeout(STOP_WAIT, tracker.announce(client, &a)).await {
        Ok(Ok(_)) => {
            tracing::debug!(tracker = %tracker.url(), ?event, "announced");
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(tracker = %tracker.url(), ?event, "announce failed: {}", ErrorChain(&e));
            false
        }
        Err(_) => {
            tracing::debug!(tracker = %tracker.url(), ?event, "announce timed out");
            false
        }
    }
}

/// Scrapes the tier's front tracker once and logs what it knows, within
/// [`STOP_WAIT`]: the scrape only informs, and announces wait for it (a
/// UDP tracker that ignores scrapes would otherwise hold a completion back
/// through BEP 15's retries, minutes).
async fn scrape(client: &Client, tier: &mut Tier, info_hash: &InfoHash) {
    let Some(tracker) = tier.front_mut() else {
        return;
    };
    let Ok(scraped) = tokio::time::timeout(STOP_WAIT, tracker.scrape(client, info_hash)).await
    else {
        tracing::debug!(tracker = %tracker.url(), "scrape timed out");
        return;
    };
    match scraped {
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

    /// The peer the recording tracker hands out in its `k`-th announce
    /// reply: a new one each time, so that a reply's arrival shows.
    fn nth_peer(k: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 9], 6881 + k))
    }

    /// A UDP tracker on loopback that answers every connect and announce,
    /// handing out [`nth_peer`], and reports each announce's event code.
    async fn recording_tracker() -> (String, mpsc::UnboundedReceiver<u32>) {
        tracker_refusing(None).await
    }

    /// [`recording_tracker`], answering announces of the event `refused`
    /// with a tracker error instead.
    async fn tracker_refusing(refused: Option<Event>) -> (String, mpsc::UnboundedReceiver<u32>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("udp://{}", socket.local_addr().expect("addr"));
        let (events, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut k = 0;
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let d = &buf[..n];
                let mut reply = Vec::new();
                if n == 16 {
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(&d[12..16]);
                    reply.extend_from_slice(&42u64.to_be_bytes());
                } else if n == 98 {
                    let event = u32::from_be_bytes(d[80..84].try_into().expect("event"));
                    let _ = events.send(event);
                    if refused.is_some_and(|e| e.udp_code() == event) {
                        reply.extend_from_slice(&3u32.to_be_bytes());
                        reply.extend_from_slice(&d[12..16]);
                        reply.extend_from_slice(b"not today");
                        let _ = socket.send_to(&reply, from).await;
                        continue;
                    }
                    reply.extend_from_slice(&1u32.to_be_bytes());
                    reply.extend_from_slice(&d[12..16]);
                    for v in [1800u32, 0, 1] {
                        reply.extend_from_slice(&v.to_be_bytes());
                    }
                    lodestone_core::compact::write_peer(&nth_peer(k), &mut reply);
                    k += 1;
                }
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_tier_says_started_completed_stopped_and_passes_peers_on() {
        let (url, mut seen) = recording_tracker().await;
        let (trackers, mut found) = spawn_one(url);
        assert_eq!(found.recv().await, Some(vec![nth_peer(0)]));
        assert_eq!(seen.recv().await, Some(Event::Started.udp_code()));
        // Completion just before the end is still told, before `stopped`.
        trackers.update(COMPLETED);
        trackers.stop().await;
        assert_eq!(
            drain(&mut seen),
            [Event::Completed.udp_code(), Event::Stopped.udp_code()]
        );
    }

    /// A refused `completed` waits for the retry like any failed announce.
    /// It once went out again at once, because the torrent was still
    /// completed and not yet told so: a tight loop of announces.
    #[tokio::test]
    async fn a_refused_completed_waits_for_the_retry() {
        let (url, mut seen) = tracker_refusing(Some(Event::Completed)).await;
        let (trackers, mut found) = spawn_one(url);
        assert_eq!(soon(found.recv()).await, Some(vec![nth_peer(0)]));
        assert_eq!(soon(seen.recv()).await, Some(Event::Started.udp_code()));
        trackers.update(COMPLETED);
        assert_eq!(soon(seen.recv()).await, Some(Event::Completed.udp_code()));
        // The transfer keeps changing (seeding uploads), as in a session;
        // the next try is still FIRST_RETRY (30 s) away.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let changes = async {
            for uploaded in 1.. {
                tick.tick().await;
                trackers.update(Transfer {
                    uploaded,
                    ..COMPLETED
                });
            }
        };
        tokio::select! {
            () = changes => unreachable!("endless"),
            again = seen.recv() => panic!("announced again before the retry: {again:?}"),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }

    /// A download that completed, as the trackers are told.
    const COMPLETED: Transfer = Transfer {
        uploaded: 0,
        downloaded: 10,
        left: Some(0),
        completed: true,
    };

    /// The announces of one tier of one tracker, and the peers it finds.
    fn spawn_one(url: String) -> (Trackers, mpsc::Receiver<Vec<SocketAddr>>) {
        let client = Client::new(Duration::from_secs(5), UdpConfig::default());
        let tiers = lodestone_tracker::tier::tiers_of(None, &[], &[url], &mut rand::rng());
        let me = Identity {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 7000,
            key: 3,
        };
        let (found_tx, found) = mpsc::channel(8);
        (Trackers::spawn(&client, tiers, me, found_tx), found)
    }

    /// The event codes the tracker has reported so far.
    fn drain(seen: &mut mpsc::UnboundedReceiver<u32>) -> Vec<u32> {
        std::iter::from_fn(|| seen.try_recv().ok()).collect()
    }

    /// Within a generous bound, for what must come.
    async fn soon<T>(what: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), what)
            .await
            .expect("in time")
    }

    #[tokio::test]
    async fn a_pause_says_stopped_announces_nothing_and_a_resume_starts_again() {
        let (url, mut seen) = recording_tracker().await;
        let (trackers, mut found) = spawn_one(url);
        let [started, completed, stopped] =
            [Event::Started, Event::Completed, Event::Stopped].map(Event::udp_code);
        assert_eq!(soon(seen.recv()).await, Some(started));
        // The reply is in: `stopped` is owed from now on.
        assert_eq!(soon(found.recv()).await, Some(vec![nth_peer(0)]));
        trackers.pause();
        assert_eq!(soon(seen.recv()).await, Some(stopped));
        // A completion while running is told at once; while paused it
        // waits: the next word is the resume's `started`, then completion.
        trackers.update(COMPLETED);
        trackers.resume();
        assert_eq!(soon(seen.recv()).await, Some(started));
        assert_eq!(soon(seen.recv()).await, Some(completed));
        assert_eq!(soon(found.recv()).await, Some(vec![nth_peer(2)]));
        assert_eq!(soon(found.recv()).await, Some(vec![nth_peer(3)]));
        // Paused again: `completed` is not told twice.
        trackers.pause();
        assert_eq!(soon(seen.recv()).await, Some(stopped));
        trackers.resume();
        assert_eq!(soon(seen.recv()).await, Some(started));
        assert_eq!(soon(found.recv()).await, Some(vec![nth_peer(5)]));
        trackers.stop().await;
        assert_eq!(drain(&mut seen), [stopped]);
    }

    #[tokio::test]
    async fn a_tier_paused_before_it_was_heard_owes_no_stopped() {
        let (trackers, _found) = spawn_one("udp://127.0.0.1:9".to_owned());
        trackers.pause();
        // Ends at once: nothing to say, nothing to wait for.
        tokio::time::timeout(STOP_WAIT / 2, trackers.stop())
            .await
            .expect("no stopped owed");
    }

    /// Through the session: a torrent paused and resumed by its handle
    /// tells its tracker `started`, `stopped`, `started`, and `stopped` at
    /// its end, with nothing in between.
    #[tokio::test]
    async fn a_paused_torrent_tells_its_tracker_stopped_then_started() {
        let (url, mut seen) = recording_tracker().await;
        let mut config = crate::SessionConfig::new();
        config.dht = None;
        config.listen_port = 0;
        config.listen_ipv4 = Some(std::net::Ipv4Addr::LOCALHOST);
        config.listen_ipv6 = None;
        let session = crate::Session::start(config).await.expect("session");
        let mut magnet = lodestone_core::Magnet::new(InfoHash([7; 20]));
        magnet.trackers.push(url);
        let dir = std::env::temp_dir().join("lodestone-pause-tracker");
        let handle = session
            .add(
                crate::TorrentSource::Magnet(magnet),
                crate::AddOptions::new(dir),
            )
            .expect("add");
        let mut status = handle.status();
        // Each accepted announce hands out a new peer: the torrent knowing
        // `n` shows that `n` replies are in.
        let mut replies_in = async |n| {
            soon(status.wait_for(|s| s.peers_known >= n))
                .await
                .expect("torrent running");
        };
        let [started, stopped] = [Event::Started, Event::Stopped].map(Event::udp_code);
        assert_eq!(soon(seen.recv()).await, Some(started));
        replies_in(1).await;
        handle.pause();
        assert_eq!(soon(seen.recv()).await, Some(stopped));
        handle.resume();
        assert_eq!(soon(seen.recv()).await, Some(started));
        replies_in(2).await;
        handle.remove();
        assert!(handle.wait().await.is_err(), "removed before the metadata");
        assert_eq!(drain(&mut seen), [stopped]);
        session.shutdown().await;
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
