//! What a metadata fetch is doing, for progress displays and for saying
//! which stage came up empty.

use std::fmt;

/// Counters of a metadata fetch. The driver fills the connection and
/// metadata counters; the dialing counters (`peers_known`, `connecting`,
/// `connect_failures`) belong to whoever dials (the session), which fills
/// them in before showing the whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Distinct peer addresses known. Filled by the dialer; the driver
    /// leaves it 0.
    pub peers_known: usize,
    /// Connections being opened now. Filled by the dialer; the driver
    /// leaves it 0.
    pub connecting: usize,
    /// Connections handshaken and held by the fetch now.
    pub connected: usize,
    /// Connected peers offering ut_metadata now.
    pub with_ut_metadata: usize,
    /// Connections ever taken on by the fetch.
    pub ever_connected: usize,
    /// Peers that ever offered ut_metadata.
    pub ever_ut_metadata: usize,
    /// Connect or handshake attempts that failed. Filled by the dialer; the
    /// driver leaves it 0.
    pub connect_failures: usize,
    /// Size being assembled, once known.
    pub metadata_size: Option<u32>,
    /// Pieces of the metadata.
    pub pieces_total: u32,
    /// Pieces held of the current attempt.
    pub pieces_have: u32,
    /// Pieces received over all attempts.
    pub pieces_received: u64,
    /// Assembled metadata that failed the SHA-1 check.
    pub hash_failures: u32,
    /// Peers dropped for misbehaving or being useless.
    pub peers_dropped: u32,
}

impl fmt::Display for Progress {
    /// Names the furthest stage reached and where it stopped. Stages are
    /// tested from the last one back, so the driver's own counters tell the
    /// truth even while the dialing counters are still 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ever_ut_metadata > 0 {
            write!(
                f,
                "{} peers offered ut_metadata but the metadata is incomplete \
                 ({}/{} pieces, {} hash failures, {} peers dropped)",
                self.ever_ut_metadata,
                self.pieces_have,
                self.pieces_total,
                self.hash_failures,
                self.peers_dropped
            )
        } else if self.ever_connected > 0 {
            write!(
                f,
                "none of {} connected peers offers ut_metadata",
                self.ever_connected
            )
        } else if self.peers_known > 0 {
            write!(
                f,
                "could not connect to any of {} peers ({} failed, {} still trying)",
                self.peers_known, self.connect_failures, self.connecting
            )
        } else {
            write!(f, "no peers found")
        }
    }
}
