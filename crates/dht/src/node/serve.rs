//! Answering queries: the hot path of a bootstrap node.
//!
//! Every answer carries the BEP 42 `ip` of the querier and stays under
//! [`MAX_DATAGRAM`] bytes; `values` are sampled when a swarm is large. The
//! answer is built in a reused [`Response`] so a query costs no list
//! allocation beyond the encoded datagram.

use std::net::SocketAddr;
use std::time::Instant;

use lodestone_core::compact::Family;
use lodestone_core::{InfoHash, NodeAddr, NodeId};

use super::{MAX_DATAGRAM, Node, Transmit, V4, V6, Why, family_index};
use crate::krpc::{Body, ErrorCode, Message, Query, Response, TransactionId, Want};
use crate::secure_id;

/// Peers put in one answer before the size check: 50 IPv4 peers take about
/// 400 bytes, 20 IPv6 peers about 420, leaving room for both node lists.
const MAX_VALUES_V4: usize = 50;
const MAX_VALUES_V6: usize = 20;

impl Node {
    pub(super) fn on_query(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: TransactionId,
        querier: NodeId,
        query: Query,
        read_only: bool,
    ) {
        // BEP 43: a read-only node answers nothing. (Rate limits were
        // applied to the datagram before it was decoded.)
        if self.config.read_only {
            return;
        }
        self.stats.queries_in += 1;
        self.stats.queries_by_method[match query {
            Query::Ping => 0,
            Query::FindNode { .. } => 1,
            Query::GetPeers { .. } => 2,
            Query::AnnouncePeer { .. } => 3,
        }] += 1;
        let node = NodeAddr {
            id: querier,
            addr: from,
        };
        if !read_only {
            self.consider_querier(now, node);
        }
        self.server_queried(node, read_only, now);
        let mut response = std::mem::take(&mut self.scratch);
        response.id = self.id;
        response.nodes.clear();
        response.nodes6.clear();
        response.values.clear();
        response.token = None;
        response.node_lists = Want::default();
        let family = family_index(&from);
        match query {
            Query::Ping => {}
            Query::FindNode { target, want } => {
                self.fill_nodes(&mut response, &target, want, family, &querier)
            }
            Query::GetPeers { info_hash, want } => {
                self.fill_nodes(
                    &mut response,
                    &info_hash.as_node_id(),
                    want,
                    family,
                    &querier,
                );
                response.token = Some(self.tokens.make(&from.ip()));
                self.fill_values(&mut response, &info_hash, &from, now);
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !self.tokens.verify(&from.ip(), &token) {
                    self.scratch = response;
                    self.send_error(now, from, tid, ErrorCode::Protocol, "bad token");
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                self.store
                    .announce(info_hash, SocketAddr::new(from.ip(), port), now);
            }
        }
        let mut msg = Message {
            tid,
            body: Body::Response(response),
            ip: Some(from),
            read_only: false,
            version: self.config.version,
        };
        let mut bytes = Vec::with_capacity(512);
        msg.encode(&mut bytes);
        // Halve the peer sample until the answer fits one small datagram.
        while bytes.len() > MAX_DATAGRAM {
            let Body::Response(r) = &mut msg.body else {
                break;
            };
            if r.values.is_empty() {
                break;
            }
            r.values.truncate(r.values.len() / 2);
            bytes.clear();
            msg.encode(&mut bytes);
        }
        if let Body::Response(r) = msg.body {
            self.scratch = r;
        }
        if !self.limits.admit_reply(bytes.len(), now) {
            self.stats.rate_limited += 1;
            return;
        }
        self.stats.replies_out += 1;
        self.transmits.push_back(Transmit { to: from, bytes });
    }

    /// The contacts nearest `target`: from the verified pool on a server
    /// (falling back to the table while the pool is empty), else the table.
    fn fill_nodes(
        &self,
        r: &mut Response,
        target: &NodeId,
        want: Option<Want>,
        family: usize,
        querier: &NodeId,
    ) {
        let want = want.unwrap_or(Want {
            n4: family == V4,
            n6: family == V6,
        });
        // BEP 5: the list is there even when we know nobody.
        r.node_lists = want;
        let k = self.config.routing.bucket_size;
        let n = self.server.as_ref().map_or(k, |s| s.config.reply_nodes);
        // 16 IPv4 + 16 IPv6 contacts would not fit in 1024 bytes.
        let n6 = if want.n4 { n.min(8) } else { n };
        if want.n4 && !self.server_closest(target, Family::V4, n, querier, &mut r.nodes) {
            self.tables[V4].closest_into(target, k, &mut r.nodes);
        }
        if want.n6 && !self.server_closest(target, Family::V6, n6, querier, &mut r.nodes6) {
            self.tables[V6].closest_into(target, k, &mut r.nodes6);
        }
    }

    fn fill_values(
        &mut self,
        r: &mut Response,
        info_hash: &InfoHash,
        from: &SocketAddr,
        now: Instant,
    ) {
        let (family, max) = match from {
            SocketAddr::V4(_) => (Family::V4, MAX_VALUES_V4),
            SocketAddr::V6(_) => (Family::V6, MAX_VALUES_V6),
        };
        let peers = self
            .store
            .sample(info_hash, family, max, now, &mut self.rng);
        r.values.extend_from_slice(peers);
    }

    /// BEP 5: a node that queries us is worth knowing, but only an answer to
    /// our own query proves it reachable, so unknown queriers get a ping when
    /// the table has room for them.
    fn consider_querier(&mut self, now: Instant, node: NodeAddr) {
        if node.id == self.id {
            return;
        }
        let table = &self.tables[family_index(&node.addr)];
        if table.get(&node.id).is_some()
            || !table.wants(&node)
            || self.rpc.pings() >= self.config.max_pings
            || (self.config.enforce_node_id && !secure_id::verify(&node.id, &node.addr.ip()))
        {
            return;
        }
        self.send_query(now, node.addr, Some(node.id), Query::Ping, Why::Ping);
    }
}
