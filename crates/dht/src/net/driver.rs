//! The task loop around [`Node`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::shard::{Burst, SharedNode, Sockets, lock, readable};
use super::{AnnounceSummary, Command, DhtStats, PoolLog, SavedState};
use crate::node::{Event, LookupId, Transmit};

/// What to write to disk, and how often.
pub(super) struct Persist {
    pub(super) state_file: Option<PathBuf>,
    pub(super) pool_log: Option<PoolLog>,
    pub(super) interval: Option<Duration>,
}

/// Who waits for a lookup's results.
enum Waiter {
    Peers(mpsc::Sender<SocketAddr>),
    Announce {
        reply: oneshot::Sender<AnnounceSummary>,
        peers: Vec<SocketAddr>,
        announced_to: usize,
    },
}

/// The task that owns the node's timers, commands, events and persistence,
/// and receives on the first shard's sockets.
pub(super) struct Driver {
    pub(super) node: SharedNode,
    pub(super) sockets: Sockets,
    /// Where non-KRPC datagrams go.
    pub(super) other: Option<super::OtherSink>,
    pub(super) persist: Persist,
    /// Extra shards ring this when the node needs the driver's attention.
    pub(super) wake: Arc<Notify>,
    /// Tells the extra shards to stop; dropping it does too.
    pub(super) stop: watch::Sender<bool>,
    waiters: HashMap<LookupId, Waiter>,
    out: Vec<Transmit>,
}

impl Driver {
    pub(super) fn new(
        node: SharedNode,
        sockets: Sockets,
        other: Option<super::OtherSink>,
        persist: Persist,
        wake: Arc<Notify>,
        stop: watch::Sender<bool>,
    ) -> Self {
        Self {
            node,
            sockets,
            other,
            persist,
            wake,
            stop,
            waiters: HashMap::new(),
            out: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        remembered: Vec<lodestone_core::NodeAddr>,
        routers: Vec<String>,
    ) {
        // Remembered contacts first: they are likely alive and need no DNS.
        let mut seeds: Vec<SocketAddr> = remembered.iter().map(|n| n.addr).collect();
        for router in &routers {
            match tokio::net::lookup_host(router.as_str()).await {
                Ok(addrs) => seeds.extend(addrs),
                Err(e) => tracing::warn!("cannot resolve DHT router {router}: {e}"),
            }
        }
        let mut seen = std::collections::HashSet::new();
        seeds.retain(|a| self.sockets.for_addr(a).is_some() && seen.insert(*a));
        lock(&self.node).bootstrap(Instant::now(), &seeds);
        self.flush().await;

        let (mut b4, mut b6) = (
            Burst::new(self.other.clone()),
            Burst::new(self.other.clone()),
        );
        let mut save_timer = self.persist.interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let deadline = lock(&self.node)
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let save_tick = async {
                match save_timer.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = readable(self.sockets.v4.as_deref()) => {
                    if let (Ok(()), Some(s)) = (r, &self.sockets.v4) {
                        b4.fill(s);
                        b4.handle(&mut lock(&self.node), &mut self.out);
                        b4.hand_over();
                    }
                }
                r = readable(self.sockets.v6.as_deref()) => {
                    if let (Ok(()), Some(s)) = (r, &self.sockets.v6) {
                        b6.fill(s);
                        b6.handle(&mut lock(&self.node), &mut self.out);
                        b6.hand_over();
                    }
                }
                () = sleep => lock(&self.node).handle_timeout(Instant::now()),
                () = self.wake.notified() => {}
                () = save_tick => {
                    if let Err(e) = self.save() {
                        tracing::warn!("cannot save DHT state: {e}");
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        // The shards stop serving before the state is saved.
                        let _ = self.stop.send(true);
                        let _ = done.send(self.save());
                        return;
                    }
                    Some(command) => self.command(command),
                    None => {
                        if let Err(e) = self.save() {
                            tracing::warn!("cannot save DHT state: {e}");
                        }
                        return;
                    }
                },
            }
            self.flush().await;
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        let mut node = lock(&self.node);
        match command {
            Command::GetPeers(info_hash, announce, tx) => {
                let id = match announce {
                    Some(port) => node.announce(now, info_hash, Some(port)),
                    None => node.get_peers(now, info_hash),
                };
                self.waiters.insert(id, Waiter::Peers(tx));
            }
            Command::Announce(info_hash, port, reply) => {
                let id = node.announce(now, info_hash, port);
                self.waiters.insert(
                    id,
                    Waiter::Announce {
                        reply,
                        peers: Vec::new(),
                        announced_to: 0,
                    },
                );
            }
            Command::AddNode(addr) => node.add_node(now, addr),
            Command::Stats(reply) => {
                let _ = reply.send(DhtStats {
                    id: node.id(),
                    ipv4_nodes: node.table(Family::V4).len(),
                    ipv6_nodes: node.table(Family::V6).len(),
                    traffic: node.stats().clone(),
                    active_lookups: node.active_lookups(),
                    stored: node.stored(),
                    external_ip: node.external_ip(),
                    pool: node
                        .pool()
                        .map_or((0, 0), |p| (p.len(Family::V4), p.len(Family::V6))),
                    verify_queued: node.verify_queued(),
                });
            }
            // Handled by the loop, which must stop right after.
            Command::Shutdown(_) => {}
        }
    }

    /// Sends every queued datagram and dispatches every event.
    async fn flush(&mut self) {
        let events: Vec<Event> = {
            let mut node = lock(&self.node);
            self.out.extend(std::iter::from_fn(|| node.poll_transmit()));
            std::iter::from_fn(|| node.poll_event()).collect()
        };
        self.sockets.send_all(&mut self.out).await;
        for event in events {
            self.event(event);
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::PeersFound { lookup, peers } => match self.waiters.get_mut(&lookup) {
                Some(Waiter::Peers(tx)) => {
                    for peer in peers {
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(peer) {
                            lock(&self.node).cancel(lookup);
                            self.waiters.remove(&lookup);
                            break;
                        }
                    }
                }
                Some(Waiter::Announce { peers: found, .. }) => found.extend(peers),
                None => {}
            },
            Event::Announced { lookup, nodes, .. } => {
                if let Some(Waiter::Announce { announced_to, .. }) = self.waiters.get_mut(&lookup) {
                    *announced_to = nodes;
                }
            }
            Event::LookupDone { lookup, stats } => {
                if let Some(Waiter::Announce {
                    reply,
                    peers,
                    announced_to,
                }) = self.waiters.remove(&lookup)
                {
                    let _ = reply.send(AnnounceSummary {
                        announced_to,
                        peers,
                        lookup: stats,
                    });
                }
            }
            Event::Bootstrapped { nodes } => tracing::debug!("DHT bootstrapped: {nodes} nodes"),
            Event::ExternalIp { ip } => tracing::info!("DHT external address: {ip}"),
            Event::IdChanged { id } => tracing::info!("DHT node id is now {id}"),
        }
    }

    /// Brings the state file (id, good table contacts: small, rewritten)
    /// and the pool log (appended, see [`PoolLog`]) up to date.
    fn save(&mut self) -> io::Result<()> {
        let mut node = lock(&self.node);
        if let Some(path) = &self.persist.state_file {
            SavedState {
                id: Some(node.id()),
                nodes: node.good_nodes(Instant::now()),
            }
            .save(path)?;
        }
        if let Some(log) = &mut self.persist.pool_log {
            let journal = node.take_pool_journal();
            if let Some(pool) = node.pool() {
                let len = pool.len(Family::V4) + pool.len(Family::V6);
                log.save(journal, len, pool.nodes())?;
            }
        }
        Ok(())
    }
}
