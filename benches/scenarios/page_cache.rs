//! Every client starts a benchmark run from one page-cache state.
//!
//! Peak RSS includes the executable pages a process has mapped. On the
//! machine this was found on (Linux 6.18, ext4), the same lodestone code
//! read 0.4-0.8 MiB higher when its binary had just been written (by the
//! linker or `cp`), and about 0.7 MiB higher still after a `read` of the
//! whole file, than when its pages had come in through page faults:
//! probably because a file written or read that way sits in the page cache
//! in large folios, which a fault maps whole. How large the gap is depends
//! on the kernel and the filesystem. So before the first round the
//! benchmark drops the cached pages of every client executable and of the
//! shared libraries it loads (aria2c's code is in libaria2), and each
//! client, whatever wrote its files, is paged in by running. Its first run
//! then reads what it runs from disk: a few milliseconds, which a single
//! `--quick` round keeps in its figure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `statfs`'s `f_type` for tmpfs, whose pages are the files themselves and
/// cannot be dropped (linux/magic.h).
const TMPFS_MAGIC: rustix::fs::FsWord = 0x0102_1994;

/// Drops the cached pages of each of `executables` and of the shared
/// libraries they load. Returns the report's notes: what was dropped, and
/// each file that could not be, whose peak RSS then does not compare.
/// Pages some running process maps stay (the C library's, say), which is
/// the state they would be in for any client.
pub fn drop_executables(executables: &[&Path]) -> Vec<String> {
    let mut files = BTreeSet::new();
    for executable in executables {
        files.insert(executable.to_path_buf());
        files.extend(shared_libraries(executable));
    }
    let mut notes = vec![format!(
        "before the first round the cached pages of {} files (the client executables and their \
         shared libraries) were dropped, so each client is paged in by running and peak RSS \
         compares across builds and runs (see benches/README.md)",
        files.len()
    )];
    for file in &files {
        if let Err(why) = drop_pages(file) {
            notes.push(format!(
                "{}: {why}; its peak RSS may not compare",
                file.display()
            ));
        }
    }
    notes
}

/// The shared libraries `executable` loads, as `ldd` resolves them; none
/// when `ldd` cannot tell (a static binary).
fn shared_libraries(executable: &Path) -> Vec<PathBuf> {
    let Ok(output) = Command::new("ldd").arg(executable).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (_, resolved) = line.split_once("=> ")?;
            let path = resolved.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Writes `path`'s dirty pages and drops its pages from the page cache.
fn drop_pages(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let filesystem = rustix::fs::fstatfs(&file).map_err(|e| e.to_string())?;
    if filesystem.f_type == TMPFS_MAGIC {
        return Err("on tmpfs, where its pages cannot be dropped".to_owned());
    }
    // Dirty pages (a binary the linker just wrote) are not dropped.
    file.sync_data().map_err(|e| e.to_string())?;
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).map_err(|e| e.to_string())
}
