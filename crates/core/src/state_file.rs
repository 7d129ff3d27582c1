//! Reading the files lodestone keeps for itself: the DHT state, a bootstrap
//! node's pool log, resume records and cached torrents.
//!
//! They live in a state directory that a crash, a backup tool or a user may
//! have left in any shape, and every loader must neither hang nor take
//! memory out of proportion to what it expects. So a read here
//! - opens the file non-blocking and refuses anything but a regular file:
//!   opening a FIFO for reading would wait for a writer forever, and a
//!   device could be read without end;
//! - refuses a file larger than the caller's cap, and reads at most one
//!   byte past it, so a file too large to be one of ours is never read whole.
//!
//! Files a user names on the command line are not read through this: a
//! `.torrent` given as `<(curl …)` is a FIFO, and waiting on it is right.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Opening or reading it failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A FIFO, socket, device or directory stands where the file should be.
    #[error("not a regular file")]
    NotAFile,
    /// Larger than the caller's cap: damaged, or not ours.
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The cap it passed.
        max: u64,
    },
}

impl From<StateFileError> for io::Error {
    fn from(e: StateFileError) -> io::Error {
        match e {
            StateFileError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Opens the state file at `path` for reading, if there is one, when it is
/// a regular file of at most `max` bytes. For loaders that stream a large
/// file rather than read it whole.
pub fn open(path: &Path, max: u64) -> Result<Option<File>, StateFileError> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io::Error::from(e).into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(StateFileError::NotAFile);
    }
    if meta.len() > max {
        return Err(StateFileError::TooLarge { max });
    }
    Ok(Some(file))
}

/// The contents of the state file at `path`, at most `max` bytes; `None`
/// when there is no file.
pub fn read(path: &Path, max: u64) -> Result<Option<Vec<u8>>, StateFileError> {
    let Some(file) = open(path, max)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    // One byte past the cap: the file may have grown since it was opened.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(StateFileError::TooLarge { max });
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lodestone-state-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn reads_up_to_the_cap_and_refuses_past_it() {
        let path = scratch("capped");
        assert!(read(&path, 4).unwrap().is_none());
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(read(&path, 4).unwrap().unwrap(), b"abcd");
        assert!(matches!(
            read(&path, 3),
            Err(StateFileError::TooLarge { max: 3 })
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_without_waiting() {
        let path = scratch("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::RUSR | Mode::WUSR).unwrap();
        // Without the non-blocking open this would wait for a writer forever.
        assert!(matches!(read(&path, 4), Err(StateFileError::NotAFile)));
        std::fs::remove_file(&path).unwrap();
        let dir = path.parent().unwrap();
        assert!(matches!(read(dir, 4), Err(StateFileError::NotAFile)));
    }

    #[test]
    fn a_device_is_refused_rather_than_read_without_end() {
        let zero = Path::new("/dev/zero");
        assert!(matches!(read(zero, 4), Err(StateFileError::NotAFile)));
    }
}
