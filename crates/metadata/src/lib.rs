//! ut_metadata (BEP 9): fetching the info dictionary of a magnet link from
//! peers, and serving it to others.
//!
//! * [`message`] decodes and encodes the three ut_metadata messages.
//! * [`fetch`] is the sans-IO state machine that assembles and verifies the
//!   metadata from many peers at once, robust to hostile ones.
//! * [`serve`] answers other peers' requests once we have the metadata.
//! * [`driver`] is the async side: it takes handshaken connections from
//!   whoever dials (the session), greets the peers, feeds [`fetch`] until
//!   [`fetch_metainfo`] has a verified [`lodestone_core::Metainfo`], and
//!   then returns the same connections, with the messages the download
//!   must see, so that each peer is connected once from handshake to close.

pub mod driver;
pub mod fetch;
pub mod message;
pub mod serve;

pub use driver::{FetchError, FetchOptions, Fetched, Progress, fetch_metainfo};
pub use fetch::{Action, DropReason, Fetch, FetchConfig, FetchStats, PeerKey};
pub use message::{Message, MessageError, PIECE_SIZE};
pub use serve::{RequestBudget, respond};
