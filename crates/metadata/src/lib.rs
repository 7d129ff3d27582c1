//! ut_metadata (BEP 9): fetching the info dictionary of a magnet link from
//! peers, and serving it to others.
//!
//! * [`message`] decodes and encodes the three ut_metadata messages.
//! * [`fetch`] is the sans-IO state machine that assembles and verifies the
//!   metadata from many peers at once, robust to hostile ones.
//! * [`serve`] answers other peers' requests once we have the metadata.
//! * [`driver`] is the async side: it connects to peers, speaks the
//!   handshakes and feeds [`fetch`] until [`fetch_metainfo`] returns a
//!   verified [`lodestone_core::Metainfo`].

pub mod driver;
pub mod fetch;
pub mod message;
pub mod serve;

pub use driver::{
    FetchError, FetchOptions, Progress, fetch_metainfo, fetch_metainfo_with_progress,
};
pub use fetch::{Action, DropReason, Fetch, FetchConfig, FetchStats, PeerKey};
pub use message::{Message, MessageError, PIECE_SIZE};
pub use serve::{RequestBudget, respond};
