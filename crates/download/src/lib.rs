//! Downloading and seeding one torrent: everything between "a peer sent a
//! block" and "the bytes are verified on disk".
//!
//! The crate is split along the sans-IO line. The decision makers are plain
//! data structures driven by method calls, with time and randomness passed in:
//!
//! - [`layout`] maps the torrent's byte stream onto pieces, 16 KiB blocks and
//!   files, and hands out [`PieceIndex`]/[`BlockIndex`] values that are in range
//!   by construction;
//! - [`picker`] decides which blocks to request from which peer (rarest first,
//!   partial pieces first, endgame);
//! - [`rate`] estimates transfer rates and limits them with a token bucket;
//! - [`choke`] decides whom we upload to;
//! - [`ratio`] computes the share ratio that ends seeding.
//!
//! The IO parts are small and blocking on purpose, so they run on plain
//! threads away from the async reactor:
//!
//! - [`storage`] writes and reads byte ranges of the torrent to and from the
//!   files under an output directory, positionally and with safe paths;
//! - [`verify`] hashes completed pieces on a small thread pool and re-checks
//!   data already on disk in the background;
//! - [`space`] refuses a download its file system has no room for, before
//!   any file is created;
//! - [`resume`] keeps the record of verified pieces and file stamps that
//!   lets a restart trust unchanged files without reading them.
//!
//! [`swarm`] ties them to peer connections: one async task per peer and a
//! coordinator that takes addresses from a channel, accepts incoming peers,
//! bans senders of bad data and applies the seeding policy.

pub mod bitfield;
pub mod choke;
pub mod layout;
pub mod picker;
pub mod rate;
pub mod ratio;
pub mod resume;
pub mod space;
pub mod storage;
pub mod swarm;
pub mod verify;

pub use bitfield::{Bitfield, BitfieldError};
pub use layout::{BLOCK_SIZE, BlockIndex, FileIndex, Layout, LayoutError, PieceIndex};
pub use picker::{BlockOutcome, PeerKey, Picker};
pub use storage::{Storage, StorageError};
pub use swarm::{
    Download, DownloadConfig, DownloadError, DownloadHandle, DownloadProgress, Rendezvous, Summary,
};
