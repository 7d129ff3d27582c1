//! The share ratio that ends seeding, computed the way users of other
//! clients read it.
//!
//! libtorrent-based clients (qBittorrent, Deluge) and transmission show
//! uploaded / downloaded. A torrent that was already on disk at start has
//! downloaded (almost) nothing, and would reach any ratio at its first
//! uploaded byte, or never: qBittorrent then divides by the bytes it holds
//! instead, and so do we. "Almost nothing" is its threshold too: less than
//! 1 % of the bytes held.

/// Uploaded / downloaded, with the bytes held (`have`) as the denominator
/// when less than 1 % of them was downloaded in this run. Infinite when
/// nothing was held nor downloaded: with nothing to share, every target is met.
pub fn share_ratio(uploaded: u64, downloaded: u64, have: u64) -> f64 {
    let denominator = if downloaded.saturating_mul(100) < have {
        have
    } else {
        downloaded
    };
    if denominator == 0 {
        f64::INFINITY
    } else {
        uploaded as f64 / denominator as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_over_downloaded() {
        assert_eq!(share_ratio(50, 100, 100), 0.5);
        // Duplicates and failed pieces count as downloaded, as in libtorrent.
        assert_eq!(share_ratio(100, 200, 100), 0.5);
    }

    #[test]
    fn a_torrent_complete_at_start_divides_by_its_size() {
        assert_eq!(share_ratio(0, 0, 1000), 0.0);
        assert_eq!(share_ratio(500, 0, 1000), 0.5);
        assert_eq!(share_ratio(1000, 9, 1000), 1.0);
        // From 1 % downloaded on, the download counts.
        assert_eq!(share_ratio(20, 10, 1000), 2.0);
    }

    #[test]
    fn nothing_held_nor_downloaded() {
        assert_eq!(share_ratio(0, 0, 0), f64::INFINITY);
    }
}
