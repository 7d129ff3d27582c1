//! Mainline DHT (BEP 5 with BEP 32, 42 and 43) for lodestone.
//!
//! The protocol lives in sans-IO pieces that never touch a clock, a socket or
//! a global RNG, so they run identically in unit tests, in a simulated
//! network of thousands of nodes on virtual time, and behind real sockets:
//!
//! * [`krpc`]: the messages, their decoder and canonical encoder;
//! * [`routing`]: the Kademlia routing table of one address family;
//! * [`node`]: the [`Node`] state machine — serving queries (tokens, peer
//!   store, BEP 42 `ip`), transactions, iterative lookups, bootstrap and
//!   table maintenance;
//! * [`pool`] and [`ratelimit`]: the parts of a public bootstrap node — a
//!   large pool of verified contacts to hand newcomers, and abuse limits;
//! * small helpers: [`secure_id`] (BEP 42), [`token`], [`store`], [`ip_vote`].
//!
//! [`net`] is the thin tokio driver: one task owning the UDP sockets and the
//! node, and a cloneable [`Dht`] handle.

pub mod ip_vote;
pub mod krpc;
pub mod net;
pub mod node;
pub mod pool;
pub mod ratelimit;
pub mod routing;
pub mod secure_id;
pub mod store;
pub mod token;

pub use net::{
    AnnounceSummary, DEFAULT_BOOTSTRAP, Dht, DhtConfig, DhtStats, OtherDatagrams, OtherSink,
    SharedUdp,
};
pub use node::{Config, Event, LookupId, LookupStats, Node, NodeStats, Transmit};
