//! The torrent's files on disk, addressed by stream offset.
//!
//! Writes and reads are positional (`pwrite`/`pread`), so any number of
//! threads can use one [`Storage`] at once and no file is ever held in
//! memory. Calls block: run them on a blocking thread (see [`crate::verify`]),
//! never on an async worker.
//!
//! Safety: the metainfo's path components are validated by the parser, and
//! are checked again here (relative, no `..`). Files already present in the
//! output directory are not trusted either: a symlink met on the way to a
//! file is followed only if it resolves inside the output directory.
//!
//! Selection: only selected files are created and written. The bytes of a
//! verified piece that fall into unselected files (or padding) are dropped;
//! such a piece cannot be read back, so [`Storage::is_stored`] tells the
//! caller whether a piece can be served or re-verified.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use lodestone_core::{FileEntry, FileSelection, Info};
use thiserror::Error;

use crate::bitfield::Bitfield;
use crate::layout::{FileIndex, Layout, PieceIndex};

/// A file's length and modification time: if both are unchanged since a
/// resume record was written, the pieces it recorded are trusted without
/// reading them again (the same bet `make` and `rsync` make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub len: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: i64,
    /// Nanoseconds within that second.
    pub mtime_nanos: i64,
}

/// Open file handles kept by default; beyond this the least recently used
/// one is closed.
pub const DEFAULT_OPEN_FILES: usize = 64;

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StorageError {
    /// A path from the metainfo is absolute or leaves its directory (malformed
    /// input; the metainfo parser should already have refused it).
    #[error("unsafe file path in the metainfo: {path:?}")]
    BadPath {
        /// The offending relative path.
        path: PathBuf,
    },
    /// The number of paths does not match the layout (a local bug).
    #[error("{paths} paths given for {files} files")]
    PathCount {
        /// Paths given.
        paths: usize,
        /// Files in the layout.
        files: usize,
    },
    /// A symlink in the output directory points outside it (local state
    /// we refuse to trust).
    #[error("refusing to follow {path}: symlink leads outside the output directory")]
    SymlinkEscape {
        /// The symlink.
        path: PathBuf,
    },
    /// The bytes asked for lie in a file that is not selected, so they were
    /// never stored.
    #[error("stream offset {offset} lies in an unselected file")]
    NotStored {
        /// The first stream offset that is not stored.
        offset: u64,
    },
    /// The file system has less room than the selected files still need,
    /// found before any of them was created or grown (see [`crate::space`]).
    #[error(
        "not enough free space for {}: the files still need {needed} bytes and {free} are free",
        dir.display()
    )]
    NoRoom {
        /// The output directory.
        dir: PathBuf,
        /// Bytes the selected files still need.
        needed: u64,
        /// Bytes free to an unprivileged user on its file system.
        free: u64,
    },
    /// The operating system refused (local failure). The OS error is the
    /// [`source`](std::error::Error::source), not part of the message, so an
    /// error chain names it once.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct StoredFile {
    relative: PathBuf,
    selected: bool,
}

#[derive(Debug, Default)]
struct HandlePool {
    open: HashMap<FileIndex, (Arc<File>, u64)>,
    clock: u64,
}

/// The files of one torrent under an output directory.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    layout: Arc<Layout>,
    files: Vec<StoredFile>,
    pool: Mutex<HandlePool>,
    max_open: usize,
}

impl Storage {
    /// Describes the files without touching the disk. `paths[i]` is file `i`'s
    /// path relative to `root`; `selected[i]` says whether to store it
    /// (missing entries count as selected; padding is never stored).
    pub fn new(
        root: PathBuf,
        layout: Arc<Layout>,
        paths: Vec<PathBuf>,
        selected: &[bool],
    ) -> Result<Self, StorageError> {
        if paths.len() != layout.file_count() {
            return Err(StorageError::PathCount {
                paths: paths.len(),
                files: layout.file_count(),
            });
        }
        let files = paths
            .into_iter()
            .zip(layout.files())
            .map(|(relative, f)| {
                let normal = relative.components().count() > 0
                    && relative
                        .components()
                        .all(|c| matches!(c, Component::Normal(_)));
                if !normal {
                    return Err(StorageError::BadPath { path: relative });
                }
                let selected = !layout.is_padding(f) && *selected.get(f.get()).unwrap_or(&true);
                Ok(StoredFile { relative, selected })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            root,
            layout,
            files,
            pool: Mutex::new(HandlePool::default()),
            max_open: DEFAULT_OPEN_FILES,
        })
    }

    /// The storage of a parsed torrent under `root` (file paths include the
    /// torrent name), storing the files the magnet's `so=` selects (all of
    /// them when `select_only` is `None`).
    pub fn for_info(
        root: PathBuf,
        layout: Arc<Layout>,
        info: &Info,
        select_only: Option<&[FileSelection]>,
    ) -> Result<Self, StorageError> {
        Self::for_files(root, layout, info, |i| {
            select_only.is_none_or(|ranges| {
                u32::try_from(i).is_ok_and(|i| ranges.iter().any(|r| r.selects(i)))
            })
        })
    }

    /// The storage of a parsed torrent under `root`, storing file `i` when
    /// `selected(i)`. Each file is at its [`FileEntry::disk_path`], the one
    /// place that chooses where a torrent's files go.
    pub fn for_files(
        root: PathBuf,
        layout: Arc<Layout>,
        info: &Info,
        selected: impl Fn(usize) -> bool,
    ) -> Result<Self, StorageError> {
        let paths = info.files.iter().map(FileEntry::disk_path).collect();
        let selected: Vec<bool> = (0..info.files.len()).map(selected).collect();
        Self::new(root, layout, paths, &selected)
    }

    /// The pieces to download: those holding bytes of selected files.
    pub fn wanted_pieces(&self) -> Bitfield {
        let mut wanted = Bitfield::new(self.layout.piece_count());
        for f in self.layout.files() {
            if self.is_selected(f) {
                for p in self.layout.file_pieces(f) {
                    wanted.set(p);
                }
            }
        }
        wanted
    }

    /// Changes how many file handles stay open (at least one).
    pub fn with_max_open_files(mut self, max_open: usize) -> Self {
        self.max_open = max_open.max(1);
        self
    }

    /// The layout the storage was built on.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// Where file `file` lives on disk.
    pub fn path(&self, file: FileIndex) -> PathBuf {
        self.root.join(&self.files[file.get()].relative)
    }

    /// Whether the file is written to disk.
    pub fn is_selected(&self, file: FileIndex) -> bool {
        self.files[file.get()].selected
    }

    /// Whether every byte of the piece is either stored or padding, so it
    /// can be read back (to serve it, or to re-verify it on resume).
    pub fn is_stored(&self, piece: PieceIndex) -> bool {
        self.layout
            .slices(
                self.layout.piece_offset(piece),
                u64::from(self.layout.piece_len(piece)),
            )
            .all(|s| s.padding || self.files[s.file.get()].selected)
    }

    /// Whether any byte of the piece belongs to a selected file: the pieces
    /// we want to download.
    pub fn is_wanted(&self, piece: PieceIndex) -> bool {
        self.layout
            .piece_files(piece)
            .any(|f| self.files[f.get()].selected)
    }

    /// What a selected file looks like on disk now (length and modification
    /// time), or `None` when it does not exist yet. Creates nothing; resume
    /// compares it with the stamp in its record, before [`Storage::prepare`].
    pub fn stamp(&self, file: FileIndex) -> Result<Option<FileStamp>, StorageError> {
        Ok(self.metadata(file)?.map(|m| FileStamp {
            len: m.len(),
            mtime_secs: m.mtime(),
            mtime_nanos: m.mtime_nsec(),
        }))
    }

    /// A selected file's metadata, or `None` when it does not exist yet.
    fn metadata(&self, file: FileIndex) -> Result<Option<fs::Metadata>, StorageError> {
        let path = self.checked_path(file)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    /// Whether bytes `[offset, offset + len)` of a selected, existing file
    /// may hold data: `false` only when the file system reports the whole
    /// range as a hole (never written since [`Storage::prepare`] extended
    /// the file), which reads as zeros and is not worth hashing. Where holes
    /// cannot be asked about, every range may hold data.
    pub fn holds_data(&self, file: FileIndex, offset: u64, len: u64) -> Result<bool, StorageError> {
        let handle = self.handle(file)?;
        // Moves the file position, which positional IO never uses.
        match rustix::fs::seek(&*handle, rustix::fs::SeekFrom::Data(offset)) {
            Ok(next) => Ok(next < offset.saturating_add(len)),
            Err(rustix::io::Errno::NXIO) => Ok(false),
            Err(_) => Ok(true),
        }
    }

    /// The output directory the files live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bytes the selected files still need from the file system: each one's
    /// length less the blocks already allocated to it (a file not yet on
    /// disk needs all of it). Reads metadata only; creates nothing.
    pub fn unallocated_bytes(&self) -> Result<u64, StorageError> {
        let mut needed = 0u64;
        for f in self.layout.files().filter(|&f| self.is_selected(f)) {
            // `st_blocks` counts 512-byte units whatever the block size.
            let allocated = self
                .metadata(f)?
                .map_or(0, |m| m.blocks().saturating_mul(512));
            needed = needed.saturating_add(self.layout.file_len(f).saturating_sub(allocated));
        }
        Ok(needed)
    }

    /// Creates the directories and selected files and sets each file to its
    /// final length (sparse where the filesystem allows).
    pub fn prepare(&self) -> Result<(), StorageError> {
        for f in self.layout.files() {
            if !self.is_selected(f) {
                continue;
            }
            let file = self.handle(f)?;
            let want = self.layout.file_len(f);
            let path = self.path(f);
            let have = file.metadata().map_err(io_err("stat", &path))?.len();
            if have != want {
                file.set_len(want).map_err(io_err("resize", &path))?;
            }
        }
        Ok(())
    }

    /// Writes `data` at stream offset `offset`. Bytes falling in padding or
    /// unselected files are dropped.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        for s in self.layout.slices(offset, data.len() as u64) {
            if s.padding || !self.is_selected(s.file) {
                continue;
            }
            // In range: slices lie inside `[0, data.len())`.
            let chunk = &data[s.buf_offset as usize..(s.buf_offset + s.len) as usize];
            let file = self.handle(s.file)?;
            file.write_all_at(chunk, s.file_offset)
                .map_err(io_err("write", &self.path(s.file)))?;
        }
        Ok(())
    }

    /// Fills `buf` from stream offset `offset`; padding reads as zeros.
    /// Fails with [`StorageError::NotStored`] if part of the range lies in an
    /// unselected file, and with an IO error if a file is too short.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.layout.total_length() {
            return Err(StorageError::NotStored {
                offset: self.layout.total_length(),
            });
        }
        for s in self.layout.slices(offset, buf.len() as u64) {
            let chunk = &mut buf[s.buf_offset as usize..(s.buf_offset + s.len) as usize];
            if s.padding {
                chunk.fill(0);
                continue;
            }
            if !self.is_selected(s.file) {
                return Err(StorageError::NotStored {
                    offset: offset + s.buf_offset,
                });
            }
            let file = self.handle(s.file)?;
            file.read_exact_at(chunk, s.file_offset)
                .map_err(io_err("read", &self.path(s.file)))?;
        }
        Ok(())
    }

    /// The file's path after checking every existing component: a symlink is
    /// followed only if it resolves inside the output directory.
    fn checked_path(&self, file: FileIndex) -> Result<PathBuf, StorageError> {
        let full = self.path(file);
        let mut path = self.root.clone();
        let mut canonical_root = None;
        for component in self.files[file.get()].relative.components() {
            path.push(component);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Nothing further down exists yet; we will create it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_err("stat", &path)(e)),
            };
            if meta.file_type().is_symlink() {
                if canonical_root.is_none() {
                    canonical_root =
                        Some(fs::canonicalize(&self.root).map_err(io_err("resolve", &self.root))?);
                }
                let target = fs::canonicalize(&path);
                let inside =
                    matches!((&target, &canonical_root), (Ok(t), Some(r)) if t.starts_with(r));
                if !inside {
                    return Err(StorageError::SymlinkEscape { path });
                }
            }
        }
        Ok(full)
    }

    /// An open handle to a selected file, from the pool or freshly opened
    /// (creating parent directories and the file itself).
    fn handle(&self, file: FileIndex) -> Result<Arc<File>, StorageError> {
        // A poisoned lock only means another thread panicked mid-update of
        // the cache; the map is still a valid cache, so keep using it.
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.clock += 1;
        let now = pool.clock;
        if let Some((handle, used)) = pool.open.get_mut(&file) {
            *used = now;
            return Ok(handle.clone());
        }
        let path = self.checked_path(file)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        let handle = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("open", &path))?,
        );
        if pool.open.len() >= self.max_open
            && let Some(oldest) = pool
                .open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(f, _)| *f)
        {
            pool.open.remove(&oldest);
        }
        pool.open.insert(file, (handle.clone(), now));
        Ok(handle)
    }
}

/// A scratch directory for tests, removed on drop.
#[cfg(test)]
pub(crate) struct TempDir(pub PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lodestone-download-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn storage(dir: &Path, files: &[(&str, u64, bool)], selected: &[bool]) -> Storage {
        let layout = Layout::new(7, files.iter().map(|(_, l, p)| (*l, *p))).unwrap();
        let paths = files.iter().map(|(p, _, _)| PathBuf::from(p)).collect();
        Storage::new(dir.to_path_buf(), Arc::new(layout), paths, selected).unwrap()
    }

    #[test]
    fn writes_across_files_and_skips_padding() {
        let dir = TempDir::new("span");
        let s = storage(
            &dir.0,
            &[
                ("t/a", 5, false),
                ("t/.pad/3", 3, true),
                ("t/sub/b", 6, false),
            ],
            &[],
        );
        s.prepare().unwrap();
        let data: Vec<u8> = (1..=14).collect();
        let mut expected = data.clone();
        expected[5..8].fill(0);
        s.write(0, &expected).unwrap();
        assert_eq!(fs::read(dir.0.join("t/a")).unwrap(), &data[..5]);
        assert_eq!(fs::read(dir.0.join("t/sub/b")).unwrap(), &data[8..]);
        assert!(!dir.0.join("t/.pad").exists());
        let mut back = vec![0xff; 10];
        s.read(3, &mut back).unwrap();
        assert_eq!(back, &expected[3..13]);
        assert!(s.read(10, &mut [0; 5]).is_err());
    }

    #[test]
    fn unselected_files_are_not_written_nor_readable() {
        let dir = TempDir::new("select");
        let s = storage(&dir.0, &[("a", 5, false), ("b", 5, false)], &[false, true]);
        s.prepare().unwrap();
        assert!(!dir.0.join("a").exists());
        assert_eq!(fs::metadata(dir.0.join("b")).unwrap().len(), 5);
        s.write(0, &[9; 10]).unwrap();
        assert!(!dir.0.join("a").exists());
        assert_eq!(fs::read(dir.0.join("b")).unwrap(), vec![9; 5]);
        let mut buf = [0; 4];
        assert!(matches!(
            s.read(3, &mut buf),
            Err(StorageError::NotStored { offset: 3 })
        ));
        let layout = s.layout().clone();
        let pieces: Vec<_> = layout.pieces().collect();
        // Piece 0 = bytes 0..7 spans both files; piece 1 = 7..10 only b.
        assert!(!s.is_stored(pieces[0]) && s.is_wanted(pieces[0]));
        assert!(s.is_stored(pieces[1]) && s.is_wanted(pieces[1]));
        assert_eq!(s.stamp(layout.file(0).unwrap()).unwrap(), None);
    }

    #[test]
    fn selection_from_magnet_ranges() {
        let (a, b, c) = (vec![1u8; 30], vec![2u8; 30], vec![3u8; 30]);
        let m = lodestone_core::Metainfo::create(
            "t",
            16,
            &[
                (vec!["a".into()], &a[..]),
                (vec!["b".into()], &b[..]),
                (vec!["c".into()], &c[..]),
            ],
        )
        .unwrap();
        let layout = Arc::new(Layout::from_info(&m.info).unwrap());
        let dir = TempDir::new("so");
        let so = [FileSelection { first: 1, last: 1 }];
        let s = Storage::for_info(dir.0.clone(), layout.clone(), &m.info, Some(&so)).unwrap();
        let selected: Vec<bool> = layout.files().map(|f| s.is_selected(f)).collect();
        assert_eq!(selected, vec![false, true, false]);
        // b is bytes 30..60: pieces 1, 2, 3 of 16 bytes.
        assert_eq!(
            s.wanted_pieces().iter_ones().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(s.path(layout.file(1).unwrap()), dir.0.join("t/b"));
        let all = Storage::for_info(dir.0.clone(), layout, &m.info, None).unwrap();
        assert!(all.wanted_pieces().is_full());
    }

    #[test]
    fn prepare_sets_lengths_and_keeps_data() {
        let dir = TempDir::new("len");
        fs::write(dir.0.join("a"), b"hello world, too long").unwrap();
        let s = storage(&dir.0, &[("a", 5, false), ("empty", 0, false)], &[]);
        assert_eq!(
            s.stamp(s.layout().file(0).unwrap())
                .unwrap()
                .map(|st| st.len),
            Some(21)
        );
        s.prepare().unwrap();
        assert_eq!(fs::read(dir.0.join("a")).unwrap(), b"hello");
        assert_eq!(fs::metadata(dir.0.join("empty")).unwrap().len(), 0);
    }

    /// The CLI prints an error with its whole chain of causes: the OS error
    /// must appear in it once, not in the message and again as the source.
    #[test]
    fn an_os_error_is_named_once_in_the_chain() {
        let dir = TempDir::new("not-a-dir");
        fs::write(dir.0.join("t"), b"a file where a directory belongs").unwrap();
        let s = storage(&dir.0, &[("t/a", 5, false)], &[]);
        let err = s.prepare().unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
        let chain = lodestone_core::ErrorChain(&err).to_string();
        assert_eq!(chain.matches("(os error").count(), 1, "{chain}");
        assert!(
            chain.contains(&dir.0.join("t").display().to_string()),
            "{chain}"
        );
    }

    #[test]
    fn refuses_symlink_escaping_the_output_dir() {
        let outside = TempDir::new("outside");
        let dir = TempDir::new("escape");
        std::os::unix::fs::symlink(&outside.0, dir.0.join("t")).unwrap();
        let s = storage(&dir.0, &[("t/a", 5, false)], &[]);
        let err = s.prepare().unwrap_err();
        assert!(
            matches!(&err, StorageError::SymlinkEscape { path } if *path == dir.0.join("t")),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&dir.0.join("t").display().to_string())
        );
        assert!(!outside.0.join("a").exists());
        // A symlinked file pointing outside is refused too.
        fs::remove_file(dir.0.join("t")).unwrap();
        fs::create_dir(dir.0.join("t")).unwrap();
        std::os::unix::fs::symlink(outside.0.join("x"), dir.0.join("t/a")).unwrap();
        assert!(matches!(
            s.write(0, &[1; 5]),
            Err(StorageError::SymlinkEscape { .. })
        ));
        assert!(!outside.0.join("x").exists());
    }

    #[test]
    fn follows_symlink_inside_the_output_dir() {
        let dir = TempDir::new("inside");
        fs::create_dir(dir.0.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.0.join("real"), dir.0.join("t")).unwrap();
        let s = storage(&dir.0, &[("t/a", 5, false)], &[]);
        s.prepare().unwrap();
        s.write(0, b"abcde").unwrap();
        assert_eq!(fs::read(dir.0.join("real/a")).unwrap(), b"abcde");
    }

    #[test]
    fn rejects_unsafe_relative_paths() {
        let layout = Arc::new(Layout::new(4, [(1, false)]).unwrap());
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let r = Storage::new(PathBuf::from("/tmp"), layout.clone(), vec![bad.into()], &[]);
            assert!(matches!(r, Err(StorageError::BadPath { .. })), "{bad}");
        }
        let r = Storage::new(PathBuf::from("/tmp"), layout, vec![], &[]);
        assert!(matches!(r, Err(StorageError::PathCount { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Whatever the file split and the pool size, writing the stream in
        /// random chunks and reading it back gives the stream (padding = 0).
        #[test]
        fn write_read_round_trip(
            lens in proptest::collection::vec(0u64..40, 1..6),
            cuts in proptest::collection::vec(1usize..30, 1..20),
            max_open in 1usize..3,
        ) {
            let total: u64 = lens.iter().sum();
            prop_assume!(total > 0);
            let dir = TempDir::new("prop");
            let names: Vec<String> = (0..lens.len()).map(|i| format!("d{}/f{i}", i % 2)).collect();
            let files: Vec<(&str, u64, bool)> = names
                .iter()
                .zip(&lens)
                .enumerate()
                .map(|(i, (n, l))| (n.as_str(), *l, i == 1))
                .collect();
            let s = storage(&dir.0, &files, &[]).with_max_open_files(max_open);
            s.prepare().unwrap();
            let mut stream: Vec<u8> = (0..total).map(|i| (i % 251) as u8 + 1).collect();
            for sl in s.layout().slices(0, total) {
                if sl.padding {
                    stream[sl.buf_offset as usize..(sl.buf_offset + sl.len) as usize].fill(0);
                }
            }
            let mut at = 0usize;
            for c in cuts.iter().cycle() {
                if at >= stream.len() { break; }
                let end = (at + c).min(stream.len());
                s.write(at as u64, &stream[at..end]).unwrap();
                at = end;
            }
            let mut back = vec![0xee; stream.len()];
            s.read(0, &mut back).unwrap();
            prop_assert_eq!(back, stream);
        }
    }
}
