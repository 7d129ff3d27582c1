//! The state directory: what lodestone keeps between runs, in one place.
//!
//! ```text
//! dht.state                 DHT node id and good contacts (bencoded)
//! dht.lock                  held by the process using dht.state
//! torrents/<infohash>.torrent  metadata fetched for a magnet link
//! resume/<infohash>.resume  verified pieces and file stamps of a torrent
//! ```
//!
//! By default it is `$XDG_STATE_HOME/lodestone` (`~/.local/state/lodestone`)
//! or the platform's local data directory; `--state-dir` moves it. Every
//! file in it is untrusted input when read back: a damaged file is logged
//! and ignored (the DHT bootstraps again, the metadata is fetched again, the
//! data is hashed again), never fatal.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lodestone_core::{InfoHash, Metainfo, state_file};

/// Largest cached .torrent read back: the metadata fetch refuses bigger
/// info dictionaries, so a bigger file is not one we wrote.
const MAX_TORRENT_BYTES: u64 = 40 << 20;

/// The lock on `dht.lock`, held until the process exits.
static DHT_LOCK: OnceLock<File> = OnceLock::new();

/// Where this run keeps its state.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `--state-dir` if given, else the platform's default; `None` (with a
    /// warning) when the platform names none, e.g. without a home directory.
    pub fn resolve(flag: Option<&Path>) -> Option<Self> {
        let root = flag.map(Path::to_path_buf).or_else(|| {
            let dirs = directories::ProjectDirs::from("", "", "lodestone")?;
            Some(
                dirs.state_dir()
                    .unwrap_or_else(|| dirs.data_local_dir())
                    .to_path_buf(),
            )
        });
        if root.is_none() {
            tracing::warn!("no state directory found (no home?): pass --state-dir to keep state");
        }
        root.map(|root| Self { root })
    }

    /// The DHT state file, if this process may use it: the first process to
    /// lock `dht.lock` owns it until it exits; another one running at the
    /// same time gets `None` and a fresh node id, because two nodes must
    /// not share an id.
    pub fn dht_state(&self) -> Option<PathBuf> {
        if DHT_LOCK.get().is_none() {
            let lock = std::fs::create_dir_all(&self.root)
                .and_then(|()| {
                    File::options()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(self.root.join("dht.lock"))
                })
                .and_then(|file| {
                    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
                    Ok(file)
                });
            match lock {
                Ok(file) => {
                    let _ = DHT_LOCK.set(file);
                }
                Err(e) => {
                    tracing::info!(
                        "not using {}: {e} (another lodestone runs?)",
                        self.root.join("dht.state").display()
                    );
                    return None;
                }
            }
        }
        Some(self.root.join("dht.state"))
    }

    /// Where the resume record of a torrent lives.
    pub fn resume_record(&self, info_hash: InfoHash) -> PathBuf {
        self.root
            .join("resume")
            .join(format!("{}.resume", info_hash.to_hex()))
    }

    fn torrent_path(&self, info_hash: InfoHash) -> PathBuf {
        self.root
            .join("torrents")
            .join(format!("{}.torrent", info_hash.to_hex()))
    }

    /// The metadata kept for `info_hash` by an earlier fetch, if it is there
    /// and really is that torrent's (its info dictionary hashes to it).
    pub fn cached_metainfo(&self, info_hash: InfoHash) -> Option<Metainfo> {
        let path = self.torrent_path(info_hash);
        let bytes = match state_file::read(&path, MAX_TORRENT_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                return None;
            }
        };
        match Metainfo::from_torrent_bytes(&bytes) {
            Ok(m) if m.info_hash == info_hash => {
                tracing::info!("metadata of {info_hash} read from {}", path.display());
                Some(m)
            }
            Ok(m) => {
                tracing::warn!("ignoring {}: it holds {}", path.display(), m.info_hash);
                None
            }
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// Keeps fetched metadata so the next run of the same magnet needs no
    /// peer to start. Failure only costs a fetch next time: logged.
    pub fn keep_metainfo(&self, metainfo: &Metainfo) {
        let path = self.torrent_path(metainfo.info_hash);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, metainfo.to_torrent_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!("cannot keep the metadata in {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lodestone-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn metainfo() -> Metainfo {
        Metainfo::create("t", 16, &[(vec!["a".into()], &[1u8; 40][..])]).expect("valid torrent")
    }

    #[test]
    fn metadata_round_trips_and_a_wrong_or_damaged_file_is_ignored() {
        let root = scratch("meta");
        let state = StateDir::resolve(Some(&root)).expect("given");
        let m = metainfo();
        assert!(state.cached_metainfo(m.info_hash).is_none());
        state.keep_metainfo(&m);
        let back = state.cached_metainfo(m.info_hash).expect("kept");
        assert_eq!(back.info_hash, m.info_hash);
        // Another torrent's bytes under this name are not this torrent.
        let other =
            Metainfo::create("u", 16, &[(vec!["b".into()], &[2u8; 40][..])]).expect("valid");
        std::fs::write(state.torrent_path(m.info_hash), other.to_torrent_bytes()).expect("write");
        assert!(state.cached_metainfo(m.info_hash).is_none());
        std::fs::write(state.torrent_path(m.info_hash), b"d4:infoi1ee").expect("write");
        assert!(state.cached_metainfo(m.info_hash).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn paths_are_keyed_by_infohash_hex() {
        let state = StateDir::resolve(Some(Path::new("/s"))).expect("given");
        let hash = InfoHash([0xab; 20]);
        assert_eq!(
            state.resume_record(hash),
            Path::new("/s/resume").join(format!("{}.resume", "ab".repeat(20)))
        );
    }
}
