//! Locating the external programs the end-to-end tests drive.
//!
//! Every lookup fails with [`HarnessError::MissingTool`], never a skip: a
//! test that quietly does nothing when a client is absent proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{HarnessError, Result};

/// The interpreter that has Debian's `python3-libtorrent`. A pyenv or venv
/// `python3` earlier in `PATH` would not see the module, so the path is fixed.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Finds `program` in `PATH`.
pub fn require(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| HarnessError::MissingTool {
            what: program.to_owned(),
            detail: format!("not found in PATH={}", path.to_string_lossy()),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `/usr/bin/python3`, checked once per process to import `libtorrent`.
pub fn python_with_libtorrent() -> Result<&'static Path> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = CHECK.get_or_init(|| {
        let output = Command::new(SYSTEM_PYTHON)
            .args(["-c", "import libtorrent"])
            .output()
            .map_err(|e| format!("cannot run {SYSTEM_PYTHON}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{SYSTEM_PYTHON} cannot import libtorrent: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    });
    match outcome {
        Ok(()) => Ok(Path::new(SYSTEM_PYTHON)),
        Err(detail) => Err(HarnessError::MissingTool {
            what: "python3-libtorrent".to_owned(),
            detail: detail.clone(),
        }),
    }
}

/// The path of a driver script in `tests/py/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name)
}
