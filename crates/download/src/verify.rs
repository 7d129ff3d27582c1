//! SHA-1 checks of pieces, away from the async threads.
//!
//! [`HashPool`] takes assembled pieces, hashes them and writes the good ones
//! to [`Storage`] on a few plain threads, so neither hashing (about 1.5 GB/s
//! per core with SHA-NI) nor disk writes stall a tokio worker. Results come
//! back on a tokio channel together with the buffer, for reuse.
//!
//! [`Recheck`] hashes pieces already on disk (those a resume record cannot
//! vouch for) in the background, in parallel, while the download runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;

use sha1::{Digest, Sha1};
use tokio::sync::mpsc::UnboundedSender;

use crate::layout::{LayoutError, PieceIndex};
use crate::storage::{Storage, StorageError};

/// The SHA-1 of one piece, from the metainfo.
pub type PieceHash = [u8; 20];

/// Whether `data` hashes to `expected`.
pub fn piece_matches(data: &[u8], expected: &PieceHash) -> bool {
    Sha1::digest(data).as_slice() == expected
}

/// What became of a piece handed to the [`HashPool`].
#[derive(Debug)]
pub enum CheckOutcome {
    /// The hash matched and the piece is on disk.
    Verified,
    /// The hash did not match: some peer sent bad data.
    HashMismatch,
    /// The hash matched but writing failed (local failure).
    WriteFailed(StorageError),
}

/// A piece checked by the [`HashPool`].
#[derive(Debug)]
pub struct Checked {
    /// The piece.
    pub piece: PieceIndex,
    /// The verdict.
    pub outcome: CheckOutcome,
    /// The buffer that held the piece, handed back for reuse.
    pub buffer: Vec<u8>,
}

/// A few threads that hash pieces and write the good ones to storage,
/// shared by every torrent of a session (clones share the threads): the
/// number of hashing threads is the machine's, however many torrents run.
///
/// A torrent joins with [`HashPool::attach`] and submits through the
/// [`PieceHasher`] it gets back. The threads stop once the last clone and
/// the last hasher are gone.
#[derive(Clone)]
pub struct HashPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// One torrent's side of the pool: where its pieces go and how many are
/// still being hashed.
struct Target {
    storage: Arc<Storage>,
    hashes: Arc<[PieceHash]>,
    results: UnboundedSender<Checked>,
    pending: Mutex<usize>,
    idle: Condvar,
}

struct Job {
    target: Arc<Target>,
    piece: PieceIndex,
    data: Vec<u8>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let threads = self.inner.threads.lock().map_or(0, |t| t.len());
        write!(f, "HashPool({threads} threads)")
    }
}

impl HashPool {
    /// Starts `threads` (at least one) workers.
    pub fn new(threads: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    loop {
                        // Hold the lock only to take one job. A poisoned lock
                        // means a sibling panicked; the receiver is intact.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(Job {
                            target,
                            piece,
                            data,
                        }) = job
                        else {
                            return;
                        };
                        let outcome =
                            check_and_store(&target.storage, &target.hashes, piece, &data);
                        let _ = target.results.send(Checked {
                            piece,
                            outcome,
                            buffer: data,
                        });
                        target.done_one();
                    }
                })
            })
            .collect();
        Self {
            inner: Arc::new(PoolInner {
                jobs: Mutex::new(Some(tx)),
                threads: Mutex::new(threads),
            }),
        }
    }

    /// Joins the torrent stored in `storage`, whose piece hashes are
    /// `hashes` (one per piece). Outcomes go to `results`; if that channel
    /// closes, work continues and outcomes are dropped.
    pub fn attach(
        &self,
        storage: Arc<Storage>,
        hashes: Arc<[PieceHash]>,
        results: UnboundedSender<Checked>,
    ) -> Result<PieceHasher, LayoutError> {
        storage.layout().check_hash_count(hashes.len())?;
        Ok(PieceHasher {
            pool: self.clone(),
            target: Arc::new(Target {
                storage,
                hashes,
                results,
                pending: Mutex::new(0),
                idle: Condvar::new(),
            }),
        })
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Target {
    fn pending(&self) -> std::sync::MutexGuard<'_, usize> {
        // A plain counter: a poisoned lock still holds a usable number.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done_one(&self) {
        let mut pending = self.pending();
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.idle.notify_all();
        }
    }
}

/// One torrent's way into a [`HashPool`].
pub struct PieceHasher {
    pool: HashPool,
    target: Arc<Target>,
}

impl std::fmt::Debug for PieceHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PieceHasher({:?}, {} pending)",
            self.pool,
            *self.target.pending()
        )
    }
}

impl PieceHasher {
    /// Queues a completed piece (exactly its bytes, padding zeros included).
    /// Never blocks; the caller bounds how many pieces are in flight.
    pub fn submit(&self, piece: PieceIndex, data: Vec<u8>) {
        let jobs = self
            .pool
            .inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(jobs) = jobs.as_ref() else { return };
        *self.target.pending() += 1;
        let job = Job {
            target: self.target.clone(),
            piece,
            data,
        };
        // Send fails only if every worker is gone, i.e. panicked; the piece
        // is then lost and will be picked again after a timeout.
        if jobs.send(job).is_err() {
            self.target.done_one();
        }
    }

    /// Waits until every piece submitted is hashed and written (blocking:
    /// call it on a blocking thread).
    pub fn finish(self) {
        let mut pending = self.target.pending();
        while *pending > 0 {
            pending = self
                .target
                .idle
                .wait(pending)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn check_and_store(
    storage: &Storage,
    hashes: &[PieceHash],
    piece: PieceIndex,
    data: &[u8],
) -> CheckOutcome {
    let layout = storage.layout();
    let expected = &hashes[piece.get() as usize];
    if data.len() != layout.piece_len(piece) as usize || !piece_matches(data, expected) {
        return CheckOutcome::HashMismatch;
    }
    match storage.write(layout.piece_offset(piece), data) {
        Ok(()) => CheckOutcome::Verified,
        Err(e) => CheckOutcome::WriteFailed(e),
    }
}

/// Pieces already on disk being hashed again, on a few plain threads, while
/// the download goes on: the start never waits for a re-check.
///
/// Each verdict `(piece, matches)` goes to the channel given to
/// [`Recheck::spawn`] as soon as it is known; the channel closes when every
/// piece is done. A piece that cannot be read counts as not matching.
/// Dropping the handle stops the threads after their current piece and
/// joins them (blocking: drop it on a blocking thread).
pub struct Recheck {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Recheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recheck({} threads)", self.threads.len())
    }
}

impl Recheck {
    /// Starts hashing `pieces` (each must be stored, see
    /// [`Storage::is_stored`]) on `threads` threads (at least one). `hashes`
    /// must hold one hash per piece of the storage's layout.
    pub fn spawn(
        storage: Arc<Storage>,
        hashes: Arc<[PieceHash]>,
        pieces: Vec<PieceIndex>,
        threads: usize,
        results: UnboundedSender<(PieceIndex, bool)>,
    ) -> Result<Self, LayoutError> {
        storage.layout().check_hash_count(hashes.len())?;
        let stop = Arc::new(AtomicBool::new(false));
        let pieces: Arc<[PieceIndex]> = pieces.into();
        let next = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads.max(1).min(pieces.len()))
            .map(|_| {
                let (storage, hashes, pieces) = (storage.clone(), hashes.clone(), pieces.clone());
                let (next, stop, results) = (next.clone(), stop.clone(), results.clone());
                std::thread::spawn(move || {
                    let layout = storage.layout();
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed)
                        && let Some(&piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        buf.resize(layout.piece_len(piece) as usize, 0);
                        let good = storage.read(layout.piece_offset(piece), &mut buf).is_ok()
                            && piece_matches(&buf, &hashes[piece.get() as usize]);
                        if results.send((piece, good)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Ok(Self { stop, threads })
    }
}

impl Drop for Recheck {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::storage::TempDir;
    use std::path::PathBuf;

    /// A torrent of two files with deterministic content, and its hashes.
    fn torrent(dir: &TempDir, selected: &[bool]) -> (Arc<Storage>, Vec<u8>, Arc<[PieceHash]>) {
        let layout =
            Arc::new(Layout::new(1000, [(2500, false), (500, true), (1700, false)]).unwrap());
        let mut stream: Vec<u8> = (0..4700u32).map(|i| (i * 7 % 251) as u8).collect();
        stream[2500..3000].fill(0);
        let hashes: Arc<[PieceHash]> = stream
            .chunks(1000)
            .map(|c| Sha1::digest(c).into())
            .collect();
        let storage = Storage::new(
            dir.0.clone(),
            layout,
            vec![PathBuf::from("a"), PathBuf::from("pad"), PathBuf::from("b")],
            selected,
        )
        .unwrap();
        (Arc::new(storage), stream, hashes)
    }

    #[test]
    fn pool_verifies_writes_and_rejects() {
        let dir = TempDir::new("pool");
        let (storage, stream, hashes) = torrent(&dir, &[]);
        storage.prepare().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pool = HashPool::new(2)
            .attach(storage.clone(), hashes, tx)
            .unwrap();
        let layout = storage.layout().clone();
        for p in layout.pieces() {
            let at = layout.piece_offset(p) as usize;
            let mut data = stream[at..at + layout.piece_len(p) as usize].to_vec();
            if p.get() == 1 {
                data[3] ^= 1;
            }
            pool.submit(p, data);
        }
        pool.finish();
        let mut outcomes = Vec::new();
        while let Ok(c) = rx.try_recv() {
            outcomes.push((c.piece.get(), matches!(c.outcome, CheckOutcome::Verified)));
        }
        outcomes.sort();
        assert_eq!(
            outcomes,
            vec![(0, true), (1, false), (2, true), (3, true), (4, true)]
        );
        let a = std::fs::read(dir.0.join("a")).unwrap();
        assert_eq!(&a[..1000], &stream[..1000]);
        assert_eq!(&a[1000..2000], &[0; 1000][..], "bad piece not written");
    }

    #[test]
    fn one_pool_hashes_for_two_torrents_and_each_waits_for_its_own() {
        let (dir_a, dir_b) = (TempDir::new("pool-a"), TempDir::new("pool-b"));
        let pool = HashPool::new(2);
        let mut runs = Vec::new();
        for dir in [&dir_a, &dir_b] {
            let (storage, stream, hashes) = torrent(dir, &[]);
            storage.prepare().unwrap();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let hasher = pool.attach(storage.clone(), hashes, tx).unwrap();
            let layout = storage.layout().clone();
            for p in layout.pieces() {
                let at = layout.piece_offset(p) as usize;
                hasher.submit(p, stream[at..at + layout.piece_len(p) as usize].to_vec());
            }
            runs.push((hasher, rx, layout.piece_count()));
        }
        for (hasher, mut rx, pieces) in runs {
            // After finish, every verdict of this torrent is in its channel.
            hasher.finish();
            let mut verified = 0;
            while let Ok(c) = rx.try_recv() {
                assert!(matches!(c.outcome, CheckOutcome::Verified));
                verified += 1;
            }
            assert_eq!(verified, pieces);
        }
    }

    #[test]
    fn recheck_reports_each_piece_and_closes() {
        let dir = TempDir::new("recheck");
        let (storage, stream, hashes) = torrent(&dir, &[]);
        // File a complete but piece 1 corrupted; file b truncated mid piece 4.
        let mut a = stream[..2500].to_vec();
        a[1500] ^= 0xff;
        std::fs::write(dir.0.join("a"), a).unwrap();
        std::fs::write(dir.0.join("b"), &stream[3000..4500]).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pieces: Vec<_> = storage.layout().pieces().collect();
        let check = Recheck::spawn(storage, hashes, pieces, 2, tx).unwrap();
        let mut verdicts = Vec::new();
        while let Some((piece, good)) = rx.blocking_recv() {
            verdicts.push((piece.get(), good));
        }
        drop(check);
        verdicts.sort();
        assert_eq!(
            verdicts,
            vec![(0, true), (1, false), (2, true), (3, true), (4, false)]
        );
    }

    #[test]
    fn recheck_of_nothing_closes_at_once() {
        let dir = TempDir::new("recheck-none");
        let (storage, _, hashes) = torrent(&dir, &[]);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _check = Recheck::spawn(storage, hashes, Vec::new(), 2, tx).unwrap();
        assert!(rx.blocking_recv().is_none());
    }

    #[test]
    fn pool_refuses_wrong_hash_count() {
        let dir = TempDir::new("count");
        let (storage, _, _) = torrent(&dir, &[]);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let pool = HashPool::new(1);
        assert!(
            pool.attach(storage, Arc::from(vec![[0; 20]; 2]), tx)
                .is_err()
        );
    }
}
