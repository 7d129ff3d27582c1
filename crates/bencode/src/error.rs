//! Errors of the scanner and typed decoding.

/// Why bencode input was refused. Offsets are byte positions in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended inside a value.
    #[error("bencode ends early at byte {offset}")]
    Truncated {
        /// Where more input was needed.
        offset: usize,
    },
    /// A byte that cannot start or continue a value here.
    #[error("unexpected byte 0x{byte:02x} at byte {offset}")]
    Unexpected {
        /// Position of the byte.
        offset: usize,
        /// The byte itself.
        byte: u8,
    },
    /// An integer or string length that is empty, has leading zeros, is `-0`,
    /// or does not fit in 64 bits.
    #[error("malformed number at byte {offset}")]
    BadNumber {
        /// Where the number starts.
        offset: usize,
    },
    /// A dictionary key that is not a byte string.
    #[error("dictionary key at byte {offset} is not a string")]
    KeyNotString {
        /// Where the key starts.
        offset: usize,
    },
    /// Nesting deeper than [`crate::Limits::max_depth`].
    #[error("bencode nested deeper than {limit} levels")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// Input longer than [`crate::Limits::max_input`].
    #[error("bencode input of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Length given.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// More values than [`crate::Limits::max_items`].
    #[error("bencode holds more than {limit} values")]
    TooManyItems {
        /// The limit in force.
        limit: usize,
    },
    /// A string longer than [`crate::Limits::max_string`].
    #[error("bencode string of {len} bytes at byte {offset} exceeds the limit of {limit}")]
    StringTooLong {
        /// Where the string's length prefix starts.
        offset: usize,
        /// Declared length.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// Bytes left over after a complete value, where none were expected.
    #[error("{count} unexpected bytes after the value, from byte {offset}")]
    Trailing {
        /// Where the value ended.
        offset: usize,
        /// How many bytes follow it.
        count: usize,
    },
    /// The scan passed but the structure did not match the expected type.
    #[error("bencode does not have the expected structure: {0}")]
    Typed(String),
}
