//! Core vocabulary of lodestone: ids, compact addresses, magnet links and metainfo.
//!
//! Everything here is pure data and parsing, but for [`state_file`], which
//! reads the files lodestone keeps for itself with the checks every loader
//! of them needs. Parsers take untrusted bytes or text and return typed
//! errors that name the problem.

pub mod compact;
pub mod counts;
pub mod error_chain;
pub mod host;
pub mod id;
pub mod magnet;
pub mod metainfo;
pub mod state_file;

pub use compact::{Family, NodeAddr};
pub use error_chain::ErrorChain;
pub use host::{host_of, may_name, network_of};
pub use id::{Distance, IdParseError, InfoHash, NodeId, PeerId};
pub use magnet::{FileSelection, Magnet, MagnetError, parse_selection};
pub use metainfo::{FileEntry, FileSlice, Info, Metainfo, MetainfoError};
