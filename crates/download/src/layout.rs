//! Where every byte of a torrent lives: pieces, blocks and files.
//!
//! BEP 3 treats a torrent as one byte stream, the files concatenated in
//! order; piece `i` covers `[i * piece_length, min((i + 1) * piece_length,
//! total))`. A piece or a block can therefore span several files. Padding
//! files (BEP 47) take part in the stream (their bytes are zeros and are
//! hashed) but are never written to disk.
//!
//! [`PieceIndex`], [`BlockIndex`] and [`FileIndex`] can only be obtained from a
//! [`Layout`], which checks the range once: code holding one never re-checks
//! it and cannot index out of bounds. Indices from one layout must not be used
//! with another (the session owns exactly one layout per torrent).

use std::ops::Range;

use lodestone_core::Info;
use thiserror::Error;

/// The size of a request: 16 KiB, what every client sends and accepts. The
/// last block of a piece is shorter when the piece length is not a multiple.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Metainfo whose numbers do not describe a torrent we can lay out.
///
/// Metainfo comes from a `.torrent` file or a peer, so this is a fault of the
/// input, not a local failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// `piece length` is zero.
    #[error("piece length is zero")]
    ZeroPieceLength,
    /// The files add up to nothing.
    #[error("the torrent holds no bytes")]
    Empty,
    /// The file lengths overflow a `u64`, or the pieces a `u32`.
    #[error("the torrent is too large to address")]
    TooLarge,
    /// The number of piece hashes does not match the length.
    #[error("{hashes} piece hashes for {pieces} pieces")]
    HashCount {
        /// Hashes in the metainfo.
        hashes: usize,
        /// Pieces implied by the lengths.
        pieces: u32,
    },
}

/// A piece of this torrent; always `< piece_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceIndex(u32);

impl PieceIndex {
    /// The index as sent on the wire.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "piece {}", self.0)
    }
}

/// A 16 KiB block of a piece of this torrent; always inside the piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockIndex {
    piece: PieceIndex,
    block: u32,
}

impl BlockIndex {
    /// The piece the block belongs to.
    pub fn piece(self) -> PieceIndex {
        self.piece
    }

    /// The block's position within its piece (0, 1, ...).
    pub fn index_in_piece(self) -> u32 {
        self.block
    }

    /// The block's byte offset within its piece: the `begin` of a request.
    pub fn begin(self) -> u32 {
        // Cannot overflow: `block < block_count(piece)`, so `begin < piece_len`.
        self.block * BLOCK_SIZE
    }
}

/// A file of this torrent, in metainfo order; always `< file_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileIndex(usize);

impl FileIndex {
    /// The position in the metainfo's file list.
    pub fn get(self) -> usize {
        self.0
    }
}

/// One contiguous run of a stream range that falls inside a single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    /// The file.
    pub file: FileIndex,
    /// Where the run starts within the file.
    pub file_offset: u64,
    /// Where the run starts within the requested range (the caller's buffer).
    pub buf_offset: u64,
    /// Length of the run; never zero.
    pub len: u64,
    /// Whether the file is BEP 47 padding (zeros, never stored).
    pub padding: bool,
}

#[derive(Debug, Clone)]
struct FileInfo {
    offset: u64,
    length: u64,
    padding: bool,
}

/// The geometry of one torrent: piece length, file lengths and offsets.
#[derive(Debug, Clone)]
pub struct Layout {
    piece_length: u32,
    total_length: u64,
    piece_count: u32,
    files: Vec<FileInfo>,
}

impl Layout {
    /// Lays out files of the given `(length, is_padding)` in order.
    pub fn new(
        piece_length: u32,
        files: impl IntoIterator<Item = (u64, bool)>,
    ) -> Result<Self, LayoutError> {
        if piece_length == 0 {
            return Err(LayoutError::ZeroPieceLength);
        }
        let mut offset = 0u64;
        let files = files
            .into_iter()
            .map(|(length, padding)| {
                let info = FileInfo {
                    offset,
                    length,
                    padding,
                };
                offset = offset.checked_add(length).ok_or(LayoutError::TooLarge)?;
                Ok(info)
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;
        if offset == 0 {
            return Err(LayoutError::Empty);
        }
        let piece_count = u32::try_from(offset.div_ceil(u64::from(piece_length)))
            .map_err(|_| LayoutError::TooLarge)?;
        Ok(Self {
            piece_length,
            total_length: offset,
            piece_count,
            files,
        })
    }

    /// The layout of a parsed info dictionary (files in stream order,
    /// padding included), checking one hash per piece.
    pub fn from_info(info: &Info) -> Result<Self, LayoutError> {
        let layout = Self::new(
            info.piece_length,
            info.files.iter().map(|f| (f.length, f.padding)),
        )?;
        layout.check_hash_count(info.piece_hashes.len())?;
        Ok(layout)
    }

    /// Checks that there is exactly one hash per piece.
    pub fn check_hash_count(&self, hashes: usize) -> Result<(), LayoutError> {
        if hashes == self.piece_count as usize {
            Ok(())
        } else {
            Err(LayoutError::HashCount {
                hashes,
                pieces: self.piece_count,
            })
        }
    }

    /// The nominal piece length (every piece but the last).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// The length of the whole byte stream, padding included.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// The number of pieces; at least one.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Checks a piece index from the wire.
    pub fn piece(&self, index: u32) -> Option<PieceIndex> {
        (index < self.piece_count).then_some(PieceIndex(index))
    }

    /// Every piece, ascending.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> + use<> {
        (0..self.piece_count).map(PieceIndex)
    }

    /// Where the piece starts in the stream.
    pub fn piece_offset(&self, piece: PieceIndex) -> u64 {
        u64::from(piece.0) * u64::from(self.piece_length)
    }

    /// The piece's length: `piece_length`, or less for the last piece.
    pub fn piece_len(&self, piece: PieceIndex) -> u32 {
        let rest = self.total_length - self.piece_offset(piece);
        // Fits: at most `piece_length`, a u32.
        rest.min(u64::from(self.piece_length)) as u32
    }

    /// How many blocks the piece has; at least one.
    pub fn block_count(&self, piece: PieceIndex) -> u32 {
        self.piece_len(piece).div_ceil(BLOCK_SIZE)
    }

    /// Block `index` of the piece, if the piece has that many blocks.
    pub fn block(&self, piece: PieceIndex, index: u32) -> Option<BlockIndex> {
        (index < self.block_count(piece)).then_some(BlockIndex {
            piece,
            block: index,
        })
    }

    /// The piece's blocks, in order.
    pub fn blocks(&self, piece: PieceIndex) -> impl Iterator<Item = BlockIndex> + use<> {
        (0..self.block_count(piece)).map(move |block| BlockIndex { piece, block })
    }

    /// The block's length: 16 KiB, or less at the end of a piece.
    pub fn block_len(&self, block: BlockIndex) -> u32 {
        (self.piece_len(block.piece) - block.begin()).min(BLOCK_SIZE)
    }

    /// Where the block starts in the stream.
    pub fn block_offset(&self, block: BlockIndex) -> u64 {
        self.piece_offset(block.piece) + u64::from(block.begin())
    }

    /// Checks the `(index, begin, length)` of a `piece` message (or our own
    /// request echoed back): it must name exactly one of our blocks.
    pub fn block_at(&self, index: u32, begin: u32, length: u32) -> Option<BlockIndex> {
        let piece = self.piece(index)?;
        if !begin.is_multiple_of(BLOCK_SIZE) {
            return None;
        }
        let block = self.block(piece, begin / BLOCK_SIZE)?;
        (self.block_len(block) == length).then_some(block)
    }

    /// Checks a peer's `request`: a range of `1..=BLOCK_SIZE` bytes inside one
    /// piece, not necessarily block-aligned. Returns the stream offset.
    pub fn request_offset(&self, index: u32, begin: u32, length: u32) -> Option<u64> {
        let piece = self.piece(index)?;
        let end = begin.checked_add(length)?;
        (length > 0 && length <= BLOCK_SIZE && end <= self.piece_len(piece))
            .then(|| self.piece_offset(piece) + u64::from(begin))
    }

    /// The number of files, padding included.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Checks a file index.
    pub fn file(&self, index: usize) -> Option<FileIndex> {
        (index < self.files.len()).then_some(FileIndex(index))
    }

    /// Every file, in metainfo order.
    pub fn files(&self) -> impl Iterator<Item = FileIndex> + use<> {
        (0..self.files.len()).map(FileIndex)
    }

    /// The file's length.
    pub fn file_len(&self, file: FileIndex) -> u64 {
        self.files[file.0].length
    }

    /// Where the file starts in the stream.
    pub fn file_offset(&self, file: FileIndex) -> u64 {
        self.files[file.0].offset
    }

    /// Whether the file is BEP 47 padding.
    pub fn is_padding(&self, file: FileIndex) -> bool {
        self.files[file.0].padding
    }

    /// The pieces holding at least one byte of the file (empty for an empty file).
    pub fn file_pieces(&self, file: FileIndex) -> Range<u32> {
        let info = &self.files[file.0];
        if info.length == 0 {
            return 0..0;
        }
        let pl = u64::from(self.piece_length);
        // Both fit: offsets are below total_length, whose piece count fits u32.
        let first = (info.offset / pl) as u32;
        let last = ((info.offset + info.length - 1) / pl) as u32;
        first..last + 1
    }

    /// The files holding at least one byte of the piece, in order.
    pub fn piece_files(&self, piece: PieceIndex) -> impl Iterator<Item = FileIndex> + '_ {
        self.slices(self.piece_offset(piece), u64::from(self.piece_len(piece)))
            .map(|s| s.file)
    }

    /// Splits the stream range `[offset, offset + len)` into per-file runs,
    /// in order, skipping empty files. The range is clipped to the stream.
    pub fn slices(&self, offset: u64, len: u64) -> impl Iterator<Item = FileSlice> + '_ {
        let end = offset.saturating_add(len).min(self.total_length);
        // The first file that ends after `offset`; empty files end where they
        // start, so they are skipped here and below.
        let first = self
            .files
            .partition_point(|f| f.offset + f.length <= offset);
        self.files[first..]
            .iter()
            .enumerate()
            .take_while(move |(_, f)| f.offset < end)
            .filter_map(move |(i, f)| {
                let start = f.offset.max(offset);
                let stop = (f.offset + f.length).min(end);
                (stop > start).then(|| FileSlice {
                    file: FileIndex(first + i),
                    file_offset: start - f.offset,
                    buf_offset: start - offset,
                    len: stop - start,
                    padding: f.padding,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_file_pieces_and_blocks() {
        let l = Layout::new(32 * 1024, [(100_000, false)]).unwrap();
        assert_eq!(l.piece_count(), 4);
        let last = l.piece(3).unwrap();
        assert_eq!(l.piece_len(last), 100_000 - 3 * 32 * 1024);
        assert_eq!(l.block_count(last), 1);
        assert!(l.piece(4).is_none());
        let p0 = l.piece(0).unwrap();
        assert_eq!(l.block_count(p0), 2);
        let b1 = l.block(p0, 1).unwrap();
        assert_eq!((b1.begin(), l.block_len(b1)), (16384, 16384));
        assert!(l.block(p0, 2).is_none());
        assert_eq!(l.block_at(0, 16384, 16384), Some(b1));
        assert_eq!(l.block_at(0, 16383, 16384), None);
        assert_eq!(l.block_at(3, 0, 1696), l.block(last, 0));
        assert_eq!(l.block_at(3, 0, 16384), None);
    }

    #[test]
    fn from_metainfo() {
        let a = vec![1u8; 40_000];
        let b = vec![2u8; 10_000];
        let m = lodestone_core::Metainfo::create(
            "t",
            32 * 1024,
            &[
                (vec!["a".into()], &a[..]),
                (vec!["d".into(), "b".into()], &b[..]),
            ],
        )
        .unwrap();
        let l = Layout::from_info(&m.info).unwrap();
        assert_eq!(l.piece_count(), 2);
        assert_eq!(l.file_count(), m.info.files.len());
        assert_eq!(l.total_length(), 50_000);
        for (f, entry) in l.files().zip(&m.info.files) {
            assert_eq!(l.file_offset(f), entry.offset);
        }
    }

    #[test]
    fn piece_length_not_multiple_of_block() {
        let l = Layout::new(20_000, [(50_000, false)]).unwrap();
        let p0 = l.piece(0).unwrap();
        let blocks: Vec<u32> = l.blocks(p0).map(|b| l.block_len(b)).collect();
        assert_eq!(blocks, vec![16384, 20_000 - 16384]);
    }

    #[test]
    fn rejects_bad_geometry() {
        assert_eq!(
            Layout::new(0, [(1, false)]).unwrap_err(),
            LayoutError::ZeroPieceLength
        );
        assert_eq!(
            Layout::new(16, [(0, false)]).unwrap_err(),
            LayoutError::Empty
        );
        assert_eq!(
            Layout::new(16, [(u64::MAX, false), (1, false)]).unwrap_err(),
            LayoutError::TooLarge
        );
        assert_eq!(
            Layout::new(1, [(u64::from(u32::MAX) + 1, false)]).unwrap_err(),
            LayoutError::TooLarge
        );
        let l = Layout::new(16, [(33, false)]).unwrap();
        assert!(l.check_hash_count(3).is_ok());
        assert!(l.check_hash_count(2).is_err());
    }

    #[test]
    fn requests_are_bounded() {
        let l = Layout::new(32 * 1024, [(40_000, false)]).unwrap();
        assert_eq!(l.request_offset(1, 100, 1000), Some(32 * 1024 + 100));
        assert_eq!(l.request_offset(1, 0, 40_000 - 32 * 1024 + 1), None);
        assert_eq!(l.request_offset(0, 0, BLOCK_SIZE + 1), None);
        assert_eq!(l.request_offset(0, u32::MAX, 2), None);
        assert_eq!(l.request_offset(0, 0, 0), None);
        assert_eq!(l.request_offset(2, 0, 1), None);
    }

    #[test]
    fn slices_cross_files_and_skip_empty() {
        let l = Layout::new(10, [(5, false), (0, false), (3, true), (12, false)]).unwrap();
        let s: Vec<_> = l.slices(3, 10).collect();
        assert_eq!(
            s.iter()
                .map(|s| (s.file.get(), s.file_offset, s.buf_offset, s.len, s.padding))
                .collect::<Vec<_>>(),
            vec![(0, 3, 0, 2, false), (2, 0, 2, 3, true), (3, 0, 5, 5, false)]
        );
        let f3 = l.file(3).unwrap();
        assert_eq!(l.file_pieces(f3), 0..2);
        assert_eq!(l.file_pieces(l.file(1).unwrap()), 0..0);
        let p1 = l.piece(1).unwrap();
        assert_eq!(
            l.piece_files(p1).map(|f| f.get()).collect::<Vec<_>>(),
            vec![3]
        );
    }

    proptest! {
        /// Slices of any range tile it exactly, each inside its file.
        #[test]
        fn slices_tile_the_range(
            lens in proptest::collection::vec(0u64..50, 1..8),
            piece_length in 1u32..40,
            start in 0u64..300,
            len in 0u64..300,
        ) {
            let files: Vec<(u64, bool)> = lens.iter().map(|&l| (l, l.is_multiple_of(3))).collect();
            let Ok(l) = Layout::new(piece_length, files) else {
                prop_assert_eq!(lens.iter().sum::<u64>(), 0);
                return Ok(());
            };
            let end = (start + len).min(l.total_length());
            let mut covered = start.min(end);
            for s in l.slices(start, len) {
                prop_assert_eq!(start + s.buf_offset, covered);
                prop_assert!(s.len > 0);
                prop_assert!(s.file_offset + s.len <= l.file_len(s.file));
                prop_assert_eq!(l.file_offset(s.file) + s.file_offset, covered);
                covered += s.len;
            }
            prop_assert_eq!(covered, end.max(start.min(end)));
            // Every piece's blocks tile the piece.
            for p in l.pieces() {
                let total: u64 = l.blocks(p).map(|b| u64::from(l.block_len(b))).sum();
                prop_assert_eq!(total, u64::from(l.piece_len(p)));
            }
            // file_pieces agrees with piece_files.
            for f in l.files() {
                for p in l.pieces() {
                    prop_assert_eq!(l.file_pieces(f).contains(&p.get()), l.piece_files(p).any(|g| g == f));
                }
            }
        }
    }
}
