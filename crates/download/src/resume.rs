//! The resume record: which pieces were verified on disk, and what each
//! file looked like (length, modification time) when that was true.
//!
//! With it a restart trusts the pieces of every unchanged file without
//! reading a byte, and re-hashes only the pieces of files whose stamp moved
//! (or all existing data, with no usable record). Our own writes only ever
//! add verified data, so a record that is older than the files is a subset
//! of the truth, never a lie about our writes; a file changed by someone
//! else changes its stamp and is checked again.
//!
//! The record is a file, so it is untrusted input: it is read with a size
//! cap through the bounded bencode scanner, every field is checked against
//! the torrent, and any damage is a typed [`ResumeError`] the caller answers
//! with a full re-check, never a panic. It is written atomically: a
//! temporary file, `fsync`, rename over the old one, `fsync` of the
//! directory.
//!
//! Format, a bencoded dictionary: `v` (format version, 1), `infohash` (20
//! bytes), `root` (the output directory, absolute), `pieces` (the verified
//! pieces as a BEP 3 bitfield) and `files` (one list per file: `[length,
//! mtime seconds, mtime nanoseconds]`, or empty when the file was absent).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use lodestone_bencode::{Limits, Writer, parse};
use lodestone_core::InfoHash;
use lodestone_core::state_file::{self, StateFileError};
use thiserror::Error;

use crate::bitfield::Bitfield;
use crate::layout::{FileSlice, PieceIndex};
use crate::storage::{FileStamp, Storage, StorageError};

/// The format version written and understood.
const VERSION: i64 = 1;

/// The largest record read: enough for a million files and pieces.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

const LIMITS: Limits = Limits {
    max_depth: 3,
    max_input: MAX_RECORD_BYTES as usize,
    max_items: 5_000_000,
    max_string: 16 << 20,
};

/// Why a resume record was not used. Every variant means the same to the
/// caller: check what is on disk instead.
#[derive(Debug, Error)]
pub enum ResumeError {
    /// Reading or writing the record failed (local failure).
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The record file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The record could not be read: an OS error, a FIFO or device where
    /// it should be, or larger than [`MAX_RECORD_BYTES`] (not ours).
    #[error("resume record {path}: {source}")]
    Unreadable {
        /// The record file.
        path: PathBuf,
        /// Why.
        source: StateFileError,
    },
    /// The bytes are not a record (damaged, truncated, or another format).
    #[error("damaged resume record: {0}")]
    Malformed(String),
    /// A valid record, but of another torrent, directory or file list.
    #[error("resume record does not match: {0}")]
    Mismatch(&'static str),
}

fn malformed(what: impl Into<String>) -> ResumeError {
    ResumeError::Malformed(what.into())
}

/// What one run knew about the torrent's data on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The output directory, absolute and canonical.
    pub root: PathBuf,
    /// Pieces verified and stored on disk.
    pub verified: Bitfield,
    /// Per file of the torrent: its stamp when the record was made, `None`
    /// when it did not exist (unselected, padding, not created yet).
    pub files: Vec<Option<FileStamp>>,
}

impl ResumeRecord {
    /// Records `verified` (pieces verified and stored) with the current
    /// stamps of the storage's files. Blocking (one `stat` per file).
    pub fn capture(
        storage: &Storage,
        info_hash: InfoHash,
        verified: Bitfield,
    ) -> Result<Self, StorageError> {
        let root = fs::canonicalize(storage.root()).map_err(|source| StorageError::Io {
            op: "resolve",
            path: storage.root().to_path_buf(),
            source,
        })?;
        Ok(Self {
            info_hash,
            root,
            verified,
            files: stamps(storage)?,
        })
    }

    /// The record as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Writer::new(&mut out).dict(|d| {
            d.key(b"files").list(|l| {
                for stamp in &self.files {
                    l.list(|f| {
                        if let Some(s) = stamp {
                            // Lengths above i64::MAX cannot exist on disk.
                            f.int(i64::try_from(s.len).unwrap_or(i64::MAX));
                            f.int(s.mtime_secs);
                            f.int(s.mtime_nanos);
                        }
                    });
                }
            });
            d.bytes(b"infohash", self.info_hash.as_bytes());
            d.int(b"piece count", i64::from(self.verified.len()));
            d.bytes(b"pieces", self.verified.as_wire());
            d.bytes(b"root", self.root.as_os_str().as_bytes());
            d.int(b"v", VERSION);
        });
        out
    }

    /// Parses a record; anything but a well-formed version-1 record is an
    /// error.
    pub fn decode(bytes: &[u8]) -> Result<Self, ResumeError> {
        let doc = parse(bytes, &LIMITS).map_err(|e| malformed(e.to_string()))?;
        let dict = doc
            .root()
            .as_dict()
            .ok_or_else(|| malformed("not a dictionary"))?;
        match dict.get_int(b"v") {
            Some(VERSION) => {}
            Some(v) => return Err(malformed(format!("unknown version {v}"))),
            None => return Err(malformed("no version")),
        }
        let info_hash = dict
            .get_bytes(b"infohash")
            .and_then(InfoHash::from_slice)
            .ok_or_else(|| malformed("bad infohash"))?;
        let root = dict
            .get_bytes(b"root")
            .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(b)))
            .filter(|p| p.is_absolute())
            .ok_or_else(|| malformed("bad root"))?;
        let count = dict
            .get_int(b"piece count")
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| malformed("bad piece count"))?;
        let verified = dict
            .get_bytes(b"pieces")
            .ok_or_else(|| malformed("no pieces"))
            .and_then(|b| Bitfield::from_wire(b, count).map_err(|e| malformed(e.to_string())))?;
        let files = dict
            .get_list(b"files")
            .ok_or_else(|| malformed("no files"))?
            .map(|entry| {
                let mut ints = entry
                    .as_list()
                    .ok_or_else(|| malformed("file entry is not a list"))?
                    .map(|v| v.as_int());
                match (ints.next(), ints.next(), ints.next(), ints.next()) {
                    (None, ..) => Ok(None),
                    (Some(Some(len)), Some(Some(mtime_secs)), Some(Some(mtime_nanos)), None) => {
                        Ok(Some(FileStamp {
                            len: u64::try_from(len).map_err(|_| malformed("negative length"))?,
                            mtime_secs,
                            mtime_nanos,
                        }))
                    }
                    _ => Err(malformed("file entry is not [length, secs, nanos]")),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            info_hash,
            root,
            verified,
            files,
        })
    }

    /// Reads the record at `path`: `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, ResumeError> {
        let read =
            state_file::read(path, MAX_RECORD_BYTES).map_err(|source| ResumeError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
        let Some(bytes) = read else {
            return Ok(None);
        };
        Self::decode(&bytes).map(Some)
    }

    /// Writes the record to `path` atomically and durably: a temporary file
    /// beside it, `fsync`, rename, `fsync` of the directory. Creates the
    /// directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), ResumeError> {
        let io = |op, at: &Path| {
            let at = at.to_path_buf();
            move |source| ResumeError::Io {
                op,
                path: at,
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&self.encode()).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io("rename", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))
    }
}

/// What the start of a download knows about the data on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    /// Pieces the record vouches for: verified, and every file they touch is
    /// unchanged. Not read again.
    pub trusted: Bitfield,
    /// Pieces whose bytes exist on disk but that nothing vouches for: they
    /// touch a changed file, or there was no usable record. Hashed again,
    /// in the background.
    pub to_check: Vec<PieceIndex>,
}

impl ResumePlan {
    /// Bytes of the wanted pieces the record does not vouch for: an upper
    /// bound on what the download still has to write (see [`crate::space`]).
    /// Pieces to be checked count, as any of them may be mostly holes.
    pub fn unverified_bytes(&self, storage: &Storage) -> u64 {
        let layout = storage.layout();
        layout
            .pieces()
            .filter(|&p| storage.is_wanted(p) && !self.trusted.get(p.get()))
            .map(|p| u64::from(layout.piece_len(p)))
            .sum()
    }
}

/// Decides, before [`Storage::prepare`] changes any file, which wanted
/// pieces to trust and which to hash again. `record` is the one loaded for
/// this torrent, if any; with `recheck` it is ignored. Pieces whose bytes
/// do not all exist (beyond a file's current end, or in a missing file), or
/// lie entirely in holes of sparse files, are neither: they are simply
/// missing, and zeros that were never written are not hashed. Blocking (one
/// `stat` per file, one `lseek` per piece to check).
pub fn plan(
    storage: &Storage,
    info_hash: InfoHash,
    record: Option<&ResumeRecord>,
    recheck: bool,
) -> Result<ResumePlan, StorageError> {
    let layout = storage.layout();
    let current = stamps(storage)?;
    let record = record
        .filter(|_| !recheck)
        .map(|r| usable(r, storage, info_hash).map(|()| r))
        .and_then(|r| {
            r.inspect_err(|e| tracing::info!("checking the files again: {e}"))
                .ok()
        });
    let unchanged: Vec<bool> = match record {
        Some(r) => r
            .files
            .iter()
            .zip(&current)
            .map(|(then, now)| then.is_some() && then == now)
            .collect(),
        None => vec![false; current.len()],
    };
    let mut trusted = Bitfield::new(layout.piece_count());
    let mut to_check = Vec::new();
    for piece in layout.pieces() {
        if !storage.is_wanted(piece) || !storage.is_stored(piece) {
            continue;
        }
        let slices: Vec<_> = layout
            .slices(
                layout.piece_offset(piece),
                u64::from(layout.piece_len(piece)),
            )
            .filter(|s| !s.padding)
            .collect();
        if slices.iter().all(|s| unchanged[s.file.get()]) {
            if record.is_some_and(|r| r.verified.get(piece.get())) {
                trusted.set(piece.get());
            }
        } else if slices
            .iter()
            .all(|s| current[s.file.get()].is_some_and(|st| s.file_offset + s.len <= st.len))
            && any_data(storage, &slices)?
        {
            to_check.push(piece);
        }
    }
    Ok(ResumePlan { trusted, to_check })
}

/// Whether any slice may hold data rather than a hole (see
/// [`Storage::holds_data`]).
fn any_data(storage: &Storage, slices: &[FileSlice]) -> Result<bool, StorageError> {
    for s in slices {
        if storage.holds_data(s.file, s.file_offset, s.len)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The stamp of every file of the torrent; `None` for those not selected
/// or not on disk.
fn stamps(storage: &Storage) -> Result<Vec<Option<FileStamp>>, StorageError> {
    storage
        .layout()
        .files()
        .map(|f| {
            if storage.is_selected(f) {
                storage.stamp(f)
            } else {
                Ok(None)
            }
        })
        .collect()
}

/// Whether a record was made for this torrent in this directory.
fn usable(
    record: &ResumeRecord,
    storage: &Storage,
    info_hash: InfoHash,
) -> Result<(), ResumeError> {
    if record.info_hash != info_hash {
        return Err(ResumeError::Mismatch("another torrent"));
    }
    if record.verified.len() != storage.layout().piece_count()
        || record.files.len() != storage.layout().file_count()
    {
        return Err(ResumeError::Mismatch("another piece or file count"));
    }
    if fs::canonicalize(storage.root()).ok().as_deref() != Some(record.root.as_path()) {
        return Err(ResumeError::Mismatch("another output directory"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
