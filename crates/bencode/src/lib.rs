//! Bencode for untrusted input: a bounded, iterative scanner and a canonical encoder.
//!
//! Every byte lodestone reads from a socket or a file is bencode written by a
//! stranger. The scanner here is the first thing those bytes meet:
//!
//! * it never recurses, so nesting depth costs heap, not stack, and is capped
//!   by [`Limits::max_depth`] anyway;
//! * every size (input, string, item count, depth) is checked before anything
//!   is allocated for it;
//! * it records the exact byte span of every value, because the infohash is the
//!   SHA-1 of the `info` dictionary *as received*, never of a re-encoding;
//! * [`parse_prefix`] reports where a value ends, for ut_metadata data messages
//!   that are a dictionary followed by raw bytes.
//!
//! The result is a [`Document`]: a flat tape of tokens over the input, read
//! through cheap [`Value`] views. Typed decoding of larger structures can go
//! through serde ([`from_bytes`]) once the scanner has accepted the input,
//! because serde_bencode itself recurses without limit.
//!
//! The encoder ([`Writer`], [`OwnedValue`]) always writes canonical bencode:
//! dictionary keys sorted as raw byte strings, integers without leading zeros.

mod encode;
mod error;
mod scan;
mod value;

pub use encode::{DictWriter, OwnedValue, Writer, encode};
pub use error::Error;
pub use scan::{Limits, parse, parse_prefix};
pub use value::{Dict, Document, Kind, ListIter, Value};

/// Scans `input` with `limits`, then decodes it into `T` with serde_bencode.
///
/// The scan guarantees that serde_bencode's recursion stays within
/// `limits.max_depth` and that no trailing bytes are silently accepted.
pub fn from_bytes<T: serde::de::DeserializeOwned>(
    input: &[u8],
    limits: &Limits,
) -> Result<T, Error> {
    parse(input, limits)?;
    serde_bencode::from_bytes(input).map_err(|e| Error::Typed(e.to_string()))
}
