//! Why an announce or a scrape failed, by whose fault.

use std::time::Duration;

/// A tracker exchange that failed. The tracker's own fault
/// ([`TrackerError::Malformed`], [`TrackerError::Refused`]) and the
/// network's ([`TrackerError::Http`], [`TrackerError::Timeout`],
/// [`TrackerError::Io`]) lead to the same action: try the next tracker of
/// the tier, and this one again later.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The URL names no transport we speak (the torrent's input).
    #[error("unsupported tracker URL {0}")]
    UnsupportedUrl(String),
    /// An HTTP tracker on this machine at a path other than `/announce`.
    /// Any torrent or magnet may name a tracker, and a GET to a local
    /// service (an admin page, a REST API trusting loopback) could change
    /// its state; trackers use `/announce` by convention, and libtorrent
    /// holds local ones to it too.
    #[error("tracker {0} is on this machine but not at /announce")]
    LocalNotAnnounce(String),
    /// The tracker's host did not resolve to any address.
    #[error("cannot resolve the tracker {0}")]
    Resolve(String),
    /// The reply broke the protocol (the tracker's fault).
    #[error("malformed tracker reply: {0}")]
    Malformed(&'static str),
    /// The tracker answered with a failure reason or an error action.
    #[error("the tracker refused: {0}")]
    Refused(String),
    /// The HTTP exchange failed (network, status, a body over the cap, or
    /// a redirect that led to this machine).
    #[error("HTTP tracker")]
    Http(#[from] lodestone_http::HttpError),
    /// A UDP tracker did not answer after every retry.
    #[error("no answer from the UDP tracker after {0:?}")]
    Timeout(Duration),
    /// A local socket failed.
    #[error("tracker socket")]
    Io(#[from] std::io::Error),
}
