//! Checking downloaded files against what a swarm seeded.

use std::io::Read;
use std::path::Path;

use sha1::{Digest, Sha1};

use crate::swarm::FileInfo;
use crate::{HarnessError, Result};

/// Lowercase hex SHA-1 of a file, read in 1 MiB chunks.
pub fn sha1_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(HarnessError::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(HarnessError::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that every file in `files` exists under `root` with the expected
/// length and SHA-1.
pub fn verify_files(root: &Path, files: &[FileInfo]) -> Result<()> {
    for file in files {
        let path = root.join(&file.path);
        let length = std::fs::metadata(&path)
            .map_err(HarnessError::io(format!("inspecting {}", path.display())))?
            .len();
        if length != file.length {
            return Err(HarnessError::Content {
                path,
                detail: format!("length {length}, expected {}", file.length),
            });
        }
        let sha1 = sha1_file(&path)?;
        if sha1 != file.sha1 {
            return Err(HarnessError::Content {
                path,
                detail: format!("SHA-1 {sha1}, expected {}", file.sha1),
            });
        }
    }
    Ok(())
}
