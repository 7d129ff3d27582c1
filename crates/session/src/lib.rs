//! The lodestone engine and library API.
//!
//! A [`Session`] owns what a BitTorrent client has once: one DHT node, the
//! TCP listen sockets (IPv4 and IPv6, incoming handshakes routed by
//! infohash), uTP on the DHT's UDP port, session-wide rate limits and one peer id. Torrents are added
//! with [`Session::add`] from a magnet link or a metainfo, and each runs as
//! one task that owns the torrent's [`AddressBook`] and its peer sources
//! and hands every handshaken connection to the torrent's current phase:
//! the ut_metadata fetch first, the download after, on the same
//! connection.
//!
//! * [`address_book`]: sans-IO, bounded peer addresses with sources,
//!   backoff and bans;
//! * [`dialer`]: the transport seam: TCP, uTP or both at once, plaintext or
//!   encrypted;
//! * `connection_cap`: the cap on every torrent's connections together;
//! * `encryption`: the [`Encryption`] policy and the MSE/PE handshakes;
//! * `listener`: listen sockets and routing by infohash;
//! * `discovery`: one DHT lookup per interval, which also announces;
//! * `trackers`: the torrent's trackers, one task per BEP 12 tier;
//! * `torrent`: the per-torrent task;
//! * `session`: the [`Session`] and [`TorrentHandle`].
//!
//! ```no_run
//! use lodestone_core::Magnet;
//! use lodestone_session::{AddOptions, Session, SessionConfig, TorrentSource};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::start(SessionConfig::new()).await?;
//! let magnet = Magnet::parse("magnet:?xt=urn:btih:dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c")?;
//! let mut options = AddOptions::new("downloads");
//! options.no_seed = true;
//! let torrent = session.add(TorrentSource::Magnet(magnet), options)?;
//! let summary = torrent.wait().await?;
//! println!("complete: {}", summary.complete);
//! session.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod address_book;
mod connection_cap;
pub mod dialer;
mod discovery;
mod encryption;
mod fetch_inbox;
mod holepunch;
mod listener;
mod peer_ids;
mod pending_handshakes;
mod port_probe;
mod session;
mod stall;
mod torrent;
mod trackers;

pub use address_book::{AddressBook, AddressBookConfig, BookStats, Outcome, PeerSource, Wrapping};
pub use dialer::Transport;
pub use discovery::{ANNOUNCE_INTERVAL, LOOKUP_INTERVAL};
pub use encryption::Encryption;
pub use session::{
    DEFAULT_MAX_CONNECTIONS, Session, SessionConfig, SessionError, TorrentHandle, new_peer_id,
};
pub use stall::StallReason;
pub use torrent::{
    AddOptions, FileFilter, TorrentError, TorrentPhase, TorrentSource, TorrentStatus,
};
pub use trackers::{MAX_INTERVAL as TRACKER_MAX_INTERVAL, MIN_INTERVAL as TRACKER_MIN_INTERVAL};
