//! The least a DHT node can spend per answer on this machine.
//!
//! [`serve`] receives and sends exactly as `lodestone node` does: bursts of
//! up to [`mmsg::MAX_BATCH`] datagrams through the node's own
//! `recvmmsg`/`sendmmsg` helpers, on a tokio socket woken by readiness. It
//! answers each query with a copy of the reply lodestone's node gave to a
//! query of the same kind ([`Replies`]), with only the transaction id and
//! the querier's address written in. It looks nothing up, checks no limit
//! and makes no token, so its CPU per answer is the kernel's UDP path plus a
//! copy: the floor under every node's figure in the node scenario, as SHA-1
//! and the output directory are the floor under a download's.
//!
//! It waits for full bursts. Answering at once, it saw two datagrams per
//! `recvmmsg` where the slower node sees about thirty, and its kernel cost
//! per answer came out above the node's: a floor must batch at least as well
//! as what it is under. So after a burst short of [`mmsg::MAX_BATCH`] it
//! lets [`GATHER`] pass before reading again.
//!
//! It understands only the queries of the load generator
//! ([`crate::krpc_load::encode_query`]), whose fixed tail it reads in place
//! instead of parsing; anything else goes unanswered.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestone_core::{NodeAddr, NodeId};
use lodestone_dht::net::mmsg;
use lodestone_dht::{Config, Node, SharedUdp, Transmit};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::krpc_load::{Kind, Reply, classify, encode_query};

/// How long the responder lets queries gather after a short burst: about
/// the node's own queueing delay under the saturating load (1.4 ms median),
/// and tokio's timer resolution.
pub const GATHER: Duration = Duration::from_millis(1);

/// The end of every generator query: `1:t4:` TID `1:y1:qe`.
const TAIL_LEN: usize = 16;

/// Contacts in the node that makes the templates: more than a reply holds.
const TEMPLATE_POOL: u32 = 256;

/// Where the querier's address goes in a reply, after the `ip` key.
const IP_KEY: &[u8] = b"2:ip6:";

/// One kind's reply, and where its variable parts sit.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    /// Offset of the 4-byte transaction id.
    tid_at: usize,
    /// Offset of the querier's compact IPv4 address, if the reply has one.
    ip_at: Option<usize>,
}

/// Lodestone's replies to a `ping`, a `find_node` and a `get_peers`, ready
/// to be copied.
#[derive(Debug, Clone)]
pub struct Replies {
    /// In the order of [`kind_index`].
    templates: [Template; 3],
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Ping => 0,
        Kind::FindNode => 1,
        Kind::GetPeers => 2,
    }
}

impl Replies {
    /// Asks a lodestone node with a small pool one query of each kind and
    /// keeps its replies, so the floor sends what the node sends, byte for
    /// byte in length, however the node's replies change.
    pub fn from_lodestone() -> Result<Replies, String> {
        let now = Instant::now();
        let mut node = Node::new(Config::server(), None, 1, now);
        let mut rng = StdRng::seed_from_u64(11);
        let pool: Vec<NodeAddr> = (0..TEMPLATE_POOL)
            .map(|i| {
                let [_, _, a, b] = i.to_be_bytes();
                NodeAddr {
                    id: NodeId(rng.random()),
                    addr: SocketAddr::from((Ipv4Addr::new(127, 128, a, b), 6881)),
                }
            })
            .collect();
        node.load_pool(&pool, now);
        let id: [u8; 20] = rng.random();
        let template = |kind: Kind, node: &mut Node| -> Result<Template, String> {
            let index = kind_index(kind) as u8;
            // A distinct querier and transaction id per kind, so neither the
            // rate limit nor a stale reply can mix them up; the node may also
            // ping a querier it does not know, which is not the reply.
            let from = SocketAddr::from((Ipv4Addr::new(127, 0, 21, 1 + index), 40_000));
            let tid = 0x7f1d_0000 | u32::from(index);
            let mut query = Vec::new();
            encode_query(&mut query, kind, tid, &id, &[index; 20]);
            node.handle_datagrams(now, [(from, query.as_slice())]);
            let reply = std::iter::from_fn(|| node.poll_transmit())
                .find(|t| t.to == from && classify(&t.bytes) == Reply::Answer(tid))
                .ok_or_else(|| format!("lodestone's node did not answer a {kind:?}"))?;
            let bytes = reply.bytes;
            let mut tid_field = b"1:t4:".to_vec();
            tid_field.extend_from_slice(&tid.to_be_bytes());
            let tid_at = find(&bytes, &tid_field)
                .map(|at| at + 5)
                .ok_or_else(|| format!("no transaction id in the {kind:?} reply"))?;
            let ip_at = find(&bytes, IP_KEY).map(|at| at + IP_KEY.len());
            Ok(Template {
                bytes,
                tid_at,
                ip_at,
            })
        };
        Ok(Replies {
            templates: [
                template(Kind::Ping, &mut node)?,
                template(Kind::FindNode, &mut node)?,
                template(Kind::GetPeers, &mut node)?,
            ],
        })
    }

    /// Writes the reply to `query` from `from` into `out` (cleared first);
    /// false, with `out` left alone, when `query` is not a generator query.
    pub fn answer(&self, query: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
        let Some((kind, tid)) = read_query(query) else {
            return false;
        };
        let template = &self.templates[kind_index(kind)];
        out.clear();
        out.extend_from_slice(&template.bytes);
        out[template.tid_at..template.tid_at + 4].copy_from_slice(&tid);
        if let (Some(at), SocketAddr::V4(v4)) = (template.ip_at, from) {
            out[at..at + 4].copy_from_slice(&v4.ip().octets());
            out[at + 4..at + 6].copy_from_slice(&v4.port().to_be_bytes());
        }
        true
    }
}

/// The first offset of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The kind and transaction id of a generator query, read from its fixed
/// tail (`...1:q<method>1:t4:<tid>1:y1:qe`).
fn read_query(query: &[u8]) -> Option<(Kind, [u8; 4])> {
    let (head, tail) = query.split_at_checked(query.len().checked_sub(TAIL_LEN)?)?;
    if !tail.starts_with(b"1:t4:") || !tail.ends_with(b"1:y1:qe") {
        return None;
    }
    let tid = <[u8; 4]>::try_from(&tail[5..9]).ok()?;
    let kind = if head.ends_with(b"1:q4:ping") {
        Kind::Ping
    } else if head.ends_with(b"1:q9:find_node") {
        Kind::FindNode
    } else if head.ends_with(b"1:q9:get_peers") {
        Kind::GetPeers
    } else {
        return None;
    };
    Some((kind, tid))
}

/// Answers every generator query that reaches `socket`, in bursts gathered
/// for [`GATHER`], until a receive error other than an empty buffer; the
/// benchmark ends it by killing the process. Replies leave through the
/// node's own sender ([`SharedUdp::send_all`]), which waits out a full send
/// buffer, so no answer is dropped.
pub async fn serve(socket: UdpSocket, replies: &Replies) -> io::Result<()> {
    let socket = Arc::new(socket);
    let sockets = SharedUdp {
        v4: Some(socket.clone()),
        v6: None,
    };
    let mut slots = vec![0u8; mmsg::MAX_BATCH * mmsg::SLOT];
    let mut received = Vec::with_capacity(mmsg::MAX_BATCH);
    let mut out: Vec<Transmit> = Vec::with_capacity(mmsg::MAX_BATCH);
    loop {
        socket.readable().await?;
        received.clear();
        match socket.try_io(Interest::READABLE, || {
            mmsg::recv(&socket, &mut slots, &mut received)
        }) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        for (slot, &(from, len)) in slots.chunks(mmsg::SLOT).zip(&received) {
            // A buffer per reply, as the node allocates one.
            let mut bytes = Vec::new();
            if replies.answer(&slot[..len], from, &mut bytes) {
                out.push(Transmit { to: from, bytes });
            }
        }
        sockets.send_all(&mut out).await;
        if received.len() < mmsg::MAX_BATCH {
            tokio::time::sleep(GATHER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(replies: &Replies, kind: Kind) -> &[u8] {
        &replies.templates[kind_index(kind)].bytes
    }

    fn query(kind: Kind, tid: u32) -> Vec<u8> {
        let mut q = Vec::new();
        encode_query(&mut q, kind, tid, &[1; 20], &[2; 20]);
        q
    }

    #[test]
    fn every_kind_is_answered_with_its_transaction_id() {
        let replies = Replies::from_lodestone().unwrap();
        let from = SocketAddr::from((Ipv4Addr::new(127, 0, 20, 9), 5555));
        let mut out = Vec::new();
        for (n, tid) in [7u32, 0xdead_beef, 123_456].into_iter().enumerate() {
            let kind = Kind::nth(n as u64);
            assert!(replies.answer(&query(kind, tid), from, &mut out));
            assert_eq!(classify(&out), Reply::Answer(tid), "{kind:?}");
            assert_eq!(out.len(), template(&replies, kind).len());
        }
    }

    #[test]
    fn the_querier_address_is_written_in() {
        let replies = Replies::from_lodestone().unwrap();
        let from = SocketAddr::from((Ipv4Addr::new(127, 0, 20, 9), 0x1234));
        let mut out = Vec::new();
        assert!(replies.answer(&query(Kind::Ping, 1), from, &mut out));
        let at = find(&out, IP_KEY).unwrap() + IP_KEY.len();
        assert_eq!(&out[at..at + 6], &[127, 0, 20, 9, 0x12, 0x34]);
    }

    #[test]
    fn find_node_and_get_peers_replies_carry_a_full_set_of_contacts() {
        let replies = Replies::from_lodestone().unwrap();
        let contacts = Config::server().server.unwrap().reply_nodes;
        let key = format!("5:nodes{}:", contacts * 26);
        for kind in [Kind::FindNode, Kind::GetPeers] {
            assert!(
                find(template(&replies, kind), key.as_bytes()).is_some(),
                "{kind:?} reply without {contacts} contacts"
            );
        }
        assert!(find(template(&replies, Kind::GetPeers), b"5:token").is_some());
    }

    #[test]
    fn anything_but_a_generator_query_goes_unanswered() {
        let replies = Replies::from_lodestone().unwrap();
        let from = SocketAddr::from((Ipv4Addr::new(127, 0, 20, 9), 5555));
        let mut out = b"untouched".to_vec();
        let mut cut = query(Kind::FindNode, 3);
        cut.pop();
        let mut announce = query(Kind::GetPeers, 3);
        let at = find(&announce, b"9:get_peers").unwrap();
        announce[at..at + 11].copy_from_slice(b"9:get_peerz");
        for bad in [&b""[..], b"d1:y1:qe", &cut, &announce] {
            assert!(!replies.answer(bad, from, &mut out));
        }
        assert_eq!(out, b"untouched");
    }
}
