//! BitTorrent trackers: a source of peers beside the DHT.
//!
//! * [`http`]: HTTP(S) announces and scrapes (BEP 3, compact peers per
//!   BEP 23, `peers6`), through the workspace's bounded HTTP client;
//! * [`udp`]: UDP trackers (BEP 15) as a sans-IO state machine (connect
//!   ids, transaction ids, retries with doubling timeouts) and a thin
//!   tokio pump;
//! * [`tier`]: announce-list tiers (BEP 12);
//! * [`Tracker`]: one URL, whatever its transport.
//!
//! Every reply is a stranger's bytes: its size is capped before it is
//! buffered, at most [`MAX_PEERS`] peers are taken from it, and a bad one
//! is a typed [`TrackerError`], never a panic. The session decides when to
//! announce and what to do with the peers.

mod announce;
mod client;
mod error;
pub mod http;
pub mod tier;
pub mod udp;

pub use announce::{Announce, AnnounceReply, Event, MAX_PEERS, NUMWANT, ScrapeStats};
pub use client::{Client, Tracker};
pub use error::TrackerError;
