//! The task loop around [`Node`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{AnnounceSummary, Command, DhtStats, PoolLog, SavedState};
use crate::node::{Event, LookupId, Node};

/// Largest datagram read; bigger ones are truncated by the OS and then
/// refused by the decoder.
const RECV_BUFFER: usize = 65_536;

/// Datagrams handled per wake-up before the loop looks at its other inputs
/// (timer, commands, the other socket) again.
const BATCH: usize = 256;

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

pub(super) struct Driver {
    node: Node,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    persist: Persist,
    waiters: HashMap<LookupId, Waiter>,
}

/// Receives on `socket`, or never when there is none.
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    pub(super) fn new(
        node: Node,
        v4: Option<UdpSocket>,
        v6: Option<UdpSocket>,
        persist: Persist,
    ) -> Self {
        Self {
            node,
            v4,
            v6,
            persist,
            waiters: HashMap::new(),
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
        seeds.retain(|a| self.socket_for(a).is_some() && seen.insert(*a));
        self.node.bootstrap(Instant::now(), &seeds);
        self.flush().await;

        let mut buf4 = vec![0u8; RECV_BUFFER];
        let mut buf6 = vec![0u8; RECV_BUFFER];
        let mut save_timer = self.persist.interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let deadline = self.node.poll_timeout().map(tokio::time::Instant::from_std);
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
                r = recv(self.v4.as_ref(), &mut buf4) => self.received(r, &mut buf4, false),
                r = recv(self.v6.as_ref(), &mut buf6) => self.received(r, &mut buf6, true),
                () = sleep => self.node.handle_timeout(Instant::now()),
                () = save_tick => {
                    if let Err(e) = self.save() {
                        tracing::warn!("cannot save DHT state: {e}");
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
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

    /// Handles the datagram `recv` returned and then whatever else is
    /// already queued on that socket (up to [`BATCH`]), so one wake-up of
    /// the task serves a burst.
    fn received(&mut self, first: io::Result<(usize, SocketAddr)>, buf: &mut [u8], v6: bool) {
        let now = Instant::now();
        let mut result = first;
        for _ in 0..BATCH {
            match result {
                Ok((len, from)) => self.node.handle_datagram(now, from, &buf[..len]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface here on some systems; they concern one peer only.
                Err(e) => tracing::trace!("DHT receive error: {e}"),
            }
            let socket = if v6 {
                self.v6.as_ref()
            } else {
                self.v4.as_ref()
            };
            let Some(socket) = socket else { return };
            result = socket.try_recv_from(buf);
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::GetPeers(info_hash, announce, tx) => {
                let id = match announce {
                    Some(port) => self.node.announce(now, info_hash, Some(port)),
                    None => self.node.get_peers(now, info_hash),
                };
                self.waiters.insert(id, Waiter::Peers(tx));
            }
            Command::Announce(info_hash, port, reply) => {
                let id = self.node.announce(now, info_hash, port);
                self.waiters.insert(
                    id,
                    Waiter::Announce {
                        reply,
                        peers: Vec::new(),
                        announced_to: 0,
                    },
                );
            }
            Command::AddNode(addr) => self.node.add_node(now, addr),
            Command::Stats(reply) => {
                let _ = reply.send(DhtStats {
                    id: self.node.id(),
                    ipv4_nodes: self.node.table(Family::V4).len(),
                    ipv6_nodes: self.node.table(Family::V6).len(),
                    traffic: self.node.stats().clone(),
                    active_lookups: self.node.active_lookups(),
                    stored: self.node.stored(),
                    external_ip: self.node.external_ip(),
                    pool: self
                        .node
                        .pool()
                        .map_or((0, 0), |p| (p.len(Family::V4), p.len(Family::V6))),
                    verify_queued: self.node.verify_queued(),
                });
            }
            // Handled by the loop, which must stop right after.
            Command::Shutdown(_) => {}
        }
    }

    fn socket_for(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        match addr {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Sends every queued datagram and dispatches every event.
    async fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            let Some(socket) = self.socket_for(&t.to) else {
                continue;
            };
            // Try first (no await, the common case); on a full send buffer
            // wait for writability rather than silently drop the datagram.
            let sent = match socket.try_send_to(&t.bytes, t.to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    socket.send_to(&t.bytes, t.to).await.map(drop)
                }
                other => other.map(drop),
            };
            if let Err(e) = sent {
                tracing::trace!("DHT send to {} failed: {e}", t.to);
            }
        }
        while let Some(event) = self.node.poll_event() {
            self.event(event);
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::PeersFound { lookup, peers } => match self.waiters.get_mut(&lookup) {
                Some(Waiter::Peers(tx)) => {
                    for peer in peers {
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(peer) {
                            self.node.cancel(lookup);
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
        if let Some(path) = &self.persist.state_file {
            SavedState {
                id: Some(self.node.id()),
                nodes: self.node.good_nodes(Instant::now()),
            }
            .save(path)?;
        }
        if let Some(log) = &mut self.persist.pool_log {
            let journal = self.node.take_pool_journal();
            if let Some(pool) = self.node.pool() {
                let len = pool.len(Family::V4) + pool.len(Family::V6);
                log.save(journal, len, pool.nodes())?;
            }
        }
        Ok(())
    }
}
