//! Scratch directories for one test, removed when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{HarnessError, Result};

/// Set this variable to keep work directories after the test, for debugging.
pub const KEEP_ENV: &str = "LODESTONE_KEEP_WORKDIR";

/// A fresh directory under the system temp dir, deleted on drop unless
/// [`KEEP_ENV`] is set.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `<tmp>/lodestone-tests/<label>-<pid>-<n>`.
    pub fn new(label: &str) -> Result<WorkDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("lodestone-tests")
            .join(format!("{label}-{}-{n}", std::process::id()));
        // A leftover from a killed run with a recycled pid must not leak in.
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(HarnessError::io(format!(
                "removing stale {}",
                path.display()
            )))?;
        }
        std::fs::create_dir_all(&path)
            .map_err(HarnessError::io(format!("creating {}", path.display())))?;
        Ok(WorkDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created if needed.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::create_dir_all(&path)
            .map_err(HarnessError::io(format!("creating {}", path.display())))?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("keeping work directory {}", self.path.display());
        } else {
            // Best effort: a leftover temp dir must not turn a pass into a failure.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
