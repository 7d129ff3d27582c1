//! The validated contents of an info dictionary and the piece/file geometry
//! a downloader needs.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One file of a torrent, placed in the concatenated byte stream that the
/// pieces hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Validated components relative to the output directory, **including the
    /// torrent name**: `[name]` for a single-file torrent, `[name, dir.., file]`
    /// for a multi-file one. No component is empty, `.`, `..`, holds a
    /// separator or NUL, or starts with a drive prefix.
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte stream.
    pub offset: u64,
    /// A BEP 47 padding file (`attr` contains `p`): zeros that align the next
    /// file to a piece boundary. Never written to disk.
    pub padding: bool,
}

impl FileEntry {
    /// The file's path as the torrent names it, relative to the output
    /// directory: what `inspect` shows and `--select` matches.
    pub fn relative_path(&self) -> PathBuf {
        self.path.iter().collect()
    }

    /// Where the file is written, relative to the output directory: the
    /// torrent's path with each component too long for a file system cut
    /// as libtorrent cuts it (see [`super::disk_component`]). The parser
    /// refused a torrent in which two files would share one.
    pub fn disk_path(&self) -> PathBuf {
        let mut path = PathBuf::new();
        for component in &self.path {
            path.push(&*super::disk_component(component));
        }
        path
    }

    /// The byte range of the file within the torrent's stream.
    pub fn range(&self) -> Range<u64> {
        // Cannot overflow: the parser checked that offsets plus lengths fit.
        self.offset..self.offset + self.length
    }
}

/// A validated v1 info dictionary.
///
/// Invariants established by the parser: `piece_length` is in
/// `1..=MAX_PIECE_LENGTH`; `total_length` is the sum of the file lengths and
/// is above zero; there are exactly `ceil(total_length / piece_length)` piece
/// hashes (so at most about 3.3 million, bounded by the input size); files
/// are in stream order with consecutive offsets; paths are safe and distinct.
#[derive(Clone, PartialEq, Eq)]
pub struct Info {
    /// The suggested name of the file (single-file) or directory (multi-file).
    pub name: String,
    /// Bytes per piece; the last piece may be shorter.
    pub piece_length: u32,
    /// SHA-1 of each piece, in order.
    pub piece_hashes: Vec<[u8; 20]>,
    /// Files in stream order, padding files included.
    pub files: Vec<FileEntry>,
    /// Bytes in the whole stream, padding included.
    pub total_length: u64,
    /// BEP 27: peers come from the torrent's trackers only (no DHT, no PEX).
    pub private: bool,
}

impl Info {
    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        // Fits: the parser bounds the count by the input size (under 2^32 / 20).
        self.piece_hashes.len() as u32
    }

    /// Bytes in piece `index`: `piece_length` except for the last piece,
    /// which holds the rest; 0 for an index past the end.
    pub fn piece_size(&self, index: u32) -> u32 {
        let range = self.piece_range(index);
        // At most piece_length, a u32.
        (range.end - range.start) as u32
    }

    /// The bytes of the stream that piece `index` covers; empty past the end.
    pub fn piece_range(&self, index: u32) -> Range<u64> {
        let start = u64::from(index) * u64::from(self.piece_length);
        let start = start.min(self.total_length);
        let end = start
            .saturating_add(u64::from(self.piece_length))
            .min(self.total_length);
        start..end
    }

    /// The expected SHA-1 of piece `index`.
    pub fn piece_hash(&self, index: u32) -> Option<&[u8; 20]> {
        self.piece_hashes.get(index as usize)
    }

    /// Whether this is a multi-file torrent (its files live in a directory
    /// named [`Info::name`]).
    pub fn is_multi_file(&self) -> bool {
        self.files.first().is_some_and(|f| f.path.len() > 1)
    }

    /// The parts of files that the stream bytes `offset..offset + len` cover,
    /// in order. Zero-length files are skipped; padding files are included
    /// (check [`FileEntry::padding`]: they read as zeros and are not written).
    pub fn files_in_range(&self, offset: u64, len: u64) -> FilesInRange<'_> {
        let end = offset.saturating_add(len).min(self.total_length);
        // Ends of files never decrease along the stream, so this is a valid
        // partition: the first file that ends after `offset`.
        let next = self
            .files
            .partition_point(|f| f.offset + f.length <= offset);
        FilesInRange {
            files: &self.files,
            next,
            start: offset,
            end,
        }
    }

    /// The parts of files that piece `index` covers.
    pub fn files_in_piece(&self, index: u32) -> FilesInRange<'_> {
        let range = self.piece_range(index);
        self.files_in_range(range.start, range.end - range.start)
    }
}

impl fmt::Debug for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Info")
            .field("name", &self.name)
            .field("piece_length", &self.piece_length)
            .field(
                "piece_hashes",
                &format_args!("[{} hashes]", self.piece_hashes.len()),
            )
            .field("files", &self.files)
            .field("total_length", &self.total_length)
            .field("private", &self.private)
            .finish()
    }
}

/// The part of one file inside a byte range of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    /// Index into [`Info::files`].
    pub file_index: usize,
    /// Where the part starts within the file.
    pub file_offset: u64,
    /// Where the part starts within the requested range (an offset into the
    /// caller's buffer).
    pub range_offset: u64,
    /// Bytes in the part.
    pub len: u64,
}

/// Iterator returned by [`Info::files_in_range`].
#[derive(Debug, Clone)]
pub struct FilesInRange<'a> {
    files: &'a [FileEntry],
    next: usize,
    start: u64,
    end: u64,
}

impl Iterator for FilesInRange<'_> {
    type Item = FileSlice;

    fn next(&mut self) -> Option<FileSlice> {
        loop {
            let index = self.next;
            let file = self.files.get(index)?;
            if file.offset >= self.end {
                return None;
            }
            self.next += 1;
            let from = self.start.max(file.offset);
            let to = self.end.min(file.offset + file.length);
            if from < to {
                return Some(FileSlice {
                    file_index: index,
                    file_offset: from - file.offset,
                    range_offset: from - self.start,
                    len: to - from,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lengths: &[u64], piece_length: u32) -> Info {
        let mut offset = 0;
        let files = lengths
            .iter()
            .enumerate()
            .map(|(i, &length)| {
                let file = FileEntry {
                    path: vec!["t".into(), i.to_string()],
                    length,
                    offset,
                    padding: false,
                };
                offset += length;
                file
            })
            .collect();
        let count = offset.div_ceil(u64::from(piece_length)) as usize;
        Info {
            name: "t".into(),
            piece_length,
            piece_hashes: vec![[0; 20]; count],
            files,
            total_length: offset,
            private: false,
        }
    }

    #[test]
    fn last_piece_is_shorter() {
        let i = info(&[10, 15], 8);
        assert_eq!(i.piece_count(), 4);
        let sizes: Vec<u32> = (0..5).map(|p| i.piece_size(p)).collect();
        assert_eq!(sizes, [8, 8, 8, 1, 0]);
        assert_eq!(i.piece_size(u32::MAX), 0);
        assert_eq!(i.piece_range(3), 24..25);
    }

    #[test]
    fn ranges_split_across_files_and_skip_empty_ones() {
        let i = info(&[10, 0, 5, 0, 10], 8);
        let got: Vec<(usize, u64, u64, u64)> = i
            .files_in_range(8, 10)
            .map(|s| (s.file_index, s.file_offset, s.range_offset, s.len))
            .collect();
        assert_eq!(got, [(0, 8, 0, 2), (2, 0, 2, 5), (4, 0, 7, 3)]);
        let piece: Vec<usize> = i.files_in_piece(1).map(|s| s.file_index).collect();
        assert_eq!(piece, [0, 2, 4]);
        assert_eq!(i.files_in_range(25, 10).count(), 0);
        assert_eq!(i.files_in_range(u64::MAX, u64::MAX).count(), 0);
        assert_eq!(i.files_in_range(0, 0).count(), 0);
    }

    #[test]
    fn slices_cover_every_byte_once() {
        let i = info(&[3, 0, 7, 1, 1, 20], 4);
        for p in 0..i.piece_count() {
            let total: u64 = i.files_in_piece(p).map(|s| s.len).sum();
            assert_eq!(total, u64::from(i.piece_size(p)));
        }
    }

    #[test]
    fn relative_path_joins_components() {
        let i = info(&[1, 1], 1);
        assert_eq!(i.files[1].relative_path(), PathBuf::from("t/1"));
        assert!(i.is_multi_file());
    }
}
