//! What a download reports while it runs and when it ends.

use std::time::Duration;

/// Where a download is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Starting: reading the resume record and preparing the files. Any
    /// re-check of data on disk then runs during [`Phase::Downloading`]
    /// (see [`DownloadProgress::pieces_checking`]).
    #[default]
    Checking,
    /// Fetching pieces.
    Downloading,
    /// Every wanted piece is verified; serving others.
    Seeding,
    /// Stopped (complete, policy met, or shut down).
    Finished,
}

/// Why no data is flowing, when none is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// No address to try. The download itself never knows this (addresses
    /// are the session's); the session says it in place of
    /// [`Stuck::NotConnected`] when its address book is empty.
    NoPeersKnown,
    /// No connection is up.
    NotConnected,
    /// Connected peers have none of the missing pieces.
    NobodyHasMissing,
    /// Every peer that has what we miss is choking us.
    AllChoking,
}

/// A snapshot of a running download.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DownloadProgress {
    /// Where the download is.
    pub phase: Phase,
    /// Bytes of wanted pieces verified (counting whole pieces, so files
    /// sharing a piece with a selected file count too).
    pub verified_bytes: u64,
    /// Bytes of all wanted pieces.
    pub wanted_bytes: u64,
    /// Wanted pieces verified.
    pub pieces_done: u32,
    /// Wanted pieces in all.
    pub pieces_wanted: u32,
    /// Pieces found on disk whose re-check has not answered yet; they are
    /// not requested from peers meanwhile.
    pub pieces_checking: u32,
    /// Piece data received this session, including discarded duplicates.
    pub downloaded: u64,
    /// Piece data sent this session.
    pub uploaded: u64,
    /// Receive rate over the last seconds, bytes per second.
    pub download_rate: f64,
    /// Send rate over the last seconds, bytes per second.
    pub upload_rate: f64,
    /// Peers connected now.
    pub peers_connected: usize,
    /// Why nothing can move, while downloading: no peer, or no peer that
    /// has what we miss and lets us ask for it.
    pub stuck: Option<Stuck>,
}

/// How a download ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Every wanted piece is verified on disk.
    pub complete: bool,
    /// Wanted pieces found valid on disk: trusted from the resume record or
    /// hashed again.
    pub pieces_resumed: u32,
    /// Pieces on disk that the resume record could not vouch for, hashed
    /// again (0 when every file was unchanged since the record).
    pub pieces_rechecked: u32,
    /// Pieces downloaded and verified this session.
    pub pieces_verified: u32,
    /// Pieces that failed their hash.
    pub hash_failures: u32,
    /// Peers banned for sending bad data.
    pub peers_banned: u32,
    /// Piece data received, including discarded duplicates.
    pub downloaded: u64,
    /// Received piece data we already had (endgame duplicates, late blocks).
    pub wasted: u64,
    /// Piece data sent.
    pub uploaded: u64,
    /// Time from start to the end of the download phase (or to the stop).
    pub download_time: Duration,
    /// Time from start to the end.
    pub elapsed: Duration,
}
