//! Why a torrent was refused.

use std::fmt;

/// Why a `.torrent` file or info dictionary was refused.
///
/// Every variant is the fault of the input (a malformed or hostile torrent,
/// or metadata a peer sent), except [`MetainfoError::V2Only`], which is a
/// format lodestone does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not one well-formed bencode value within the limits.
    #[error("torrent is not valid bencode")]
    Bencode(#[from] lodestone_bencode::Error),
    /// A value that must be a dictionary is something else.
    #[error("{what} is not a dictionary")]
    NotADict {
        /// Which value, e.g. "torrent file" or "info".
        what: &'static str,
    },
    /// A required entry is absent.
    #[error("{within} has no {key:?} entry")]
    Missing {
        /// The key that was looked for.
        key: &'static str,
        /// Where it was looked for, e.g. "info dictionary" or "file 3".
        within: String,
    },
    /// An entry has the wrong bencode type.
    #[error("{key:?} in {within} is not {expected}")]
    WrongType {
        /// The key whose value is wrong.
        key: &'static str,
        /// Where it is, e.g. "info dictionary" or "file 3".
        within: String,
        /// What was expected, e.g. "an integer".
        expected: &'static str,
    },
    /// Only BitTorrent v2 metadata (`meta version` 2, a `file tree`, no `pieces`).
    #[error("v2-only torrents are not supported")]
    V2Only,
    /// A piece length of zero, negative, or above [`super::MAX_PIECE_LENGTH`].
    #[error("piece length {0} is refused: it must be between 1 byte and 256 MiB")]
    PieceLength(i64),
    /// `pieces` cannot be split into 20-byte SHA-1 hashes.
    #[error("pieces is {0} bytes long, not a multiple of 20")]
    PiecesNotMultiple(usize),
    /// The number of piece hashes does not fit the total length.
    #[error(
        "{total_length} bytes in pieces of {piece_length} need {expected} piece hashes, but the torrent has {got}"
    )]
    PieceCount {
        /// Sum of all file lengths.
        total_length: u64,
        /// The piece length.
        piece_length: u32,
        /// `ceil(total_length / piece_length)`.
        expected: u64,
        /// Hashes present.
        got: usize,
    },
    /// All files together hold zero bytes.
    #[error("torrent has no data (total length 0)")]
    NoData,
    /// Both or neither of `length` (one file) and `files` (several files).
    #[error("info dictionary must have exactly one of \"length\" and \"files\"")]
    Layout,
    /// A file length below zero.
    #[error("file {path:?} has negative length {length}")]
    NegativeLength {
        /// The file, as written in the torrent.
        path: String,
        /// The length given.
        length: i64,
    },
    /// File lengths whose sum does not fit in 64 bits.
    #[error("file lengths add up to more than 2^64 bytes")]
    TotalOverflow,
    /// A name or file path that could escape the output directory or is not a
    /// usable file name.
    #[error("file path {path:?} is refused: {problem}")]
    UnsafePath {
        /// The path as written in the torrent, components joined with `/`.
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// Two files with the same path, or a path that is both a file and a directory.
    #[error("file path {0:?} is used twice (as two files, or as a file and a directory)")]
    PathClash(String),
}

/// What makes a file path unsafe or unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// No components at all.
    Empty,
    /// A leading empty component, which would make the joined path absolute.
    Absolute,
    /// An empty component elsewhere.
    EmptyComponent,
    /// A `.` component.
    CurrentDir,
    /// A `..` component.
    ParentDir,
    /// A component containing `/` or `\`.
    Separator(String),
    /// A component containing a NUL byte.
    Nul,
    /// A component starting with a drive letter and a colon, like `C:`.
    DrivePrefix(String),
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathProblem::Empty => f.write_str("it has no components"),
            PathProblem::Absolute => {
                f.write_str("it starts with an empty component, which makes it absolute")
            }
            PathProblem::EmptyComponent => f.write_str("it has an empty component"),
            PathProblem::CurrentDir => f.write_str("component \".\" names no file"),
            PathProblem::ParentDir => {
                f.write_str("component \"..\" would leave the output directory")
            }
            PathProblem::Separator(c) => write!(f, "component {c:?} contains a path separator"),
            PathProblem::Nul => f.write_str("it contains a NUL byte"),
            PathProblem::DrivePrefix(c) => {
                write!(f, "component {c:?} starts with a Windows drive prefix")
            }
        }
    }
}
