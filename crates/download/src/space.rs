//! Room on the disk: a download is refused before any file is created or
//! grown when the output directory's file system has less free space than
//! the selected files still need. Without the check a download too large
//! for its disk runs until the disk fills, maybe hours later, and then stops
//! with the bandwidth spent and another program's writes failing beside it.
//!
//! What is still needed is the smaller of two upper bounds: the selected
//! files' bytes not yet allocated on disk, and the bytes of the wanted pieces
//! not verified (a piece cannot need more room than its own bytes). The
//! first is exact where the file system reports allocated blocks; the second
//! keeps one that reports none (some FUSE mounts) from refusing a torrent
//! whose resume record vouches for it. A file's last partial block and the
//! file system's own metadata are not counted: a download that fits to
//! within a few blocks may still meet a full disk, which then stops it with
//! the OS error.
//!
//! Free space is what `statvfs` gives an unprivileged user (`f_bavail`, as
//! `df` shows it), on the output directory's file system; a file system
//! mounted inside the output directory is not asked about. Each download is
//! checked on its own as it starts: nothing is reserved for others starting
//! beside it. When the free space cannot be learned, nothing is refused.

use std::path::Path;

use crate::storage::{Storage, StorageError};

/// Refuses with [`StorageError::NoRoom`] when the file system under
/// `storage`'s output directory has less free space than the selected
/// files still need, `unverified` being the bytes of the wanted pieces not
/// verified. Reads metadata only.
pub fn ensure_room(storage: &Storage, unverified: u64) -> Result<(), StorageError> {
    if unverified == 0 {
        return Ok(());
    }
    let needed = storage.unallocated_bytes()?.min(unverified);
    let Some(free) = free_bytes(storage.root()) else {
        return Ok(());
    };
    match needed > free {
        true => Err(StorageError::NoRoom {
            dir: storage.root().to_path_buf(),
            needed,
            free,
        }),
        false => Ok(()),
    }
}

/// Bytes free to an unprivileged user on the file system holding `dir`, or
/// on that of its nearest existing ancestor while `dir` is not made yet;
/// `None` when none can be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    // Absolute, so that a relative path not made yet has ancestors to ask.
    let dir = std::path::absolute(dir).ok()?;
    dir.ancestors().find_map(|d| match rustix::fs::statvfs(d) {
        Ok(fs) => Some(fs.f_bavail.saturating_mul(fs.f_frsize)),
        Err(e) => {
            tracing::debug!("free space of {}: {e}", d.display());
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::Layout;
    use crate::storage::TempDir;

    /// Pieces of 64 MiB, so that a file larger than the disk is few pieces.
    fn storage(dir: &Path, lengths: &[u64]) -> Storage {
        let layout = Layout::new(1 << 26, lengths.iter().map(|&l| (l, false))).unwrap();
        let paths = (0..lengths.len())
            .map(|i| format!("t/f{i}").into())
            .collect();
        Storage::new(dir.to_path_buf(), Arc::new(layout), paths, &[]).unwrap()
    }

    #[test]
    fn a_file_not_on_disk_needs_its_whole_length() {
        let dir = TempDir::new("space-fresh");
        let s = storage(&dir.0, &[100_000, 30_000]);
        assert_eq!(s.unallocated_bytes().unwrap(), 130_000);
    }

    #[test]
    fn a_file_system_with_room_lets_the_download_start() {
        let dir = TempDir::new("space-room");
        let s = storage(&dir.0, &[100_000]);
        ensure_room(&s, 100_000).unwrap();
        assert!(!dir.0.join("t").exists(), "the check creates nothing");
    }

    #[test]
    fn more_than_the_disk_holds_is_refused_before_anything_is_created() {
        let dir = TempDir::new("space-none");
        let free = free_bytes(&dir.0).expect("statvfs of a temporary directory");
        let huge = free.saturating_add(1 << 30);
        let s = storage(&dir.0, &[huge]);
        let err = ensure_room(&s, huge).unwrap_err();
        assert!(
            matches!(err, StorageError::NoRoom { needed, .. } if needed == huge),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("not enough free space for "),
            "{err}"
        );
        assert!(!dir.0.join("t").exists(), "the check creates nothing");
        // A torrent whose every piece is verified needs nothing, whatever
        // the file system says of its blocks.
        ensure_room(&s, 0).unwrap();
    }

    #[test]
    fn a_directory_not_made_yet_is_judged_by_its_nearest_ancestor() {
        let dir = TempDir::new("space-ancestor");
        assert!(free_bytes(&dir.0.join("not/made/yet")).is_some());
        assert!(free_bytes(Path::new("not/made/yet")).is_some(), "relative");
    }
}
