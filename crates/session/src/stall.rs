//! Why a torrent made no progress, for a run that gives up after
//! `AddOptions::stall_timeout`: the furthest stage it reached, in words
//! for people and a code for scripts.

use std::fmt;

use lodestone_download::swarm::Stuck;

/// The stage at which a stalled torrent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StallReason {
    /// No DHT node answered; these are the bootstrap addresses tried.
    NoDhtNodes(Vec<String>),
    /// The DHT (or the magnet) named no peer.
    NoPeersFound,
    /// Peers were found, but none accepted a connection.
    NoneAccepted,
    /// Peers were found, but the torrent holds no connection: the
    /// session's other torrents hold every one it allows
    /// (`SessionConfig::max_connections`), and none of its own dials failed
    /// since it last made progress.
    ConnectionCap,
    /// Connected peers lack the missing pieces.
    PeersLackPieces,
    /// Every peer that has missing pieces is choking us.
    AllChoking,
    /// Peers let us ask, but send nothing.
    NothingSent,
}

impl StallReason {
    /// A stable machine-readable code (for `--json`).
    pub fn code(&self) -> &'static str {
        match self {
            StallReason::NoDhtNodes(_) => "no_dht_nodes",
            StallReason::NoPeersFound => "no_peers_found",
            StallReason::NoneAccepted => "none_accepted",
            StallReason::ConnectionCap => "connection_cap",
            StallReason::PeersLackPieces => "peers_lack_pieces",
            StallReason::AllChoking => "all_choking",
            StallReason::NothingSent => "nothing_sent",
        }
    }

    /// The reason for a download whose address book holds `peers_known`
    /// addresses, whose DHT knows `dht_nodes` nodes (`None`: no DHT,
    /// or a private torrent that does not use it), whose download says
    /// `stuck`, and which the session's connection cap kept from dialing
    /// (`shut_out`: it holds no place, and none of its dials failed in the
    /// stall).
    pub(crate) fn diagnose(
        peers_known: usize,
        dht_nodes: Option<usize>,
        bootstrap: &[String],
        stuck: Option<Stuck>,
        shut_out: bool,
    ) -> Self {
        if peers_known == 0 {
            return match dht_nodes {
                Some(0) => StallReason::NoDhtNodes(bootstrap.to_vec()),
                _ => StallReason::NoPeersFound,
            };
        }
        match stuck {
            Some(Stuck::NoPeersKnown) => StallReason::NoPeersFound,
            Some(Stuck::NotConnected) if shut_out => StallReason::ConnectionCap,
            Some(Stuck::NotConnected) => StallReason::NoneAccepted,
            Some(Stuck::NobodyHasMissing) => StallReason::PeersLackPieces,
            Some(Stuck::AllChoking) => StallReason::AllChoking,
            None => StallReason::NothingSent,
        }
    }
}

impl fmt::Display for StallReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StallReason::NoDhtNodes(bootstrap) => write!(
                f,
                "no DHT node answered (bootstrap: {}); check --bootstrap and the network",
                bootstrap.join(", ")
            ),
            StallReason::NoPeersFound => write!(f, "no peers found"),
            StallReason::NoneAccepted => {
                write!(f, "peers were found, but none accepted a connection")
            }
            StallReason::ConnectionCap => write!(
                f,
                "peers were found, but other torrents held every connection the session \
                 allows; raise --max-connections or run fewer torrents at once"
            ),
            StallReason::PeersLackPieces => write!(f, "connected peers lack the missing pieces"),
            StallReason::AllChoking => write!(f, "every peer with missing pieces is choking us"),
            StallReason::NothingSent => write!(f, "peers are unchoked but send nothing"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_has_its_reason() {
        let boot = vec!["192.0.2.1:6881".to_owned()];
        let d = |known, nodes, stuck| StallReason::diagnose(known, nodes, &boot, stuck, false);
        assert_eq!(d(0, Some(0), None), StallReason::NoDhtNodes(boot.clone()));
        assert!(d(0, Some(0), None).to_string().contains("192.0.2.1:6881"));
        assert_eq!(d(0, Some(12), None), StallReason::NoPeersFound);
        assert_eq!(d(0, None, None), StallReason::NoPeersFound);
        assert_eq!(
            d(3, Some(12), Some(Stuck::NotConnected)),
            StallReason::NoneAccepted
        );
        assert_eq!(
            d(3, None, Some(Stuck::NobodyHasMissing)),
            StallReason::PeersLackPieces
        );
        assert_eq!(d(3, None, Some(Stuck::AllChoking)), StallReason::AllChoking);
        assert_eq!(d(3, None, None), StallReason::NothingSent);
        assert_eq!(d(3, None, None).code(), "nothing_sent");
    }

    #[test]
    fn a_torrent_held_back_by_the_cap_says_so_only_when_unconnected() {
        let held = |stuck| StallReason::diagnose(3, None, &[], stuck, true);
        assert_eq!(held(Some(Stuck::NotConnected)), StallReason::ConnectionCap);
        assert!(
            held(Some(Stuck::NotConnected))
                .to_string()
                .contains("--max-connections")
        );
        // Connected peers are what it waits on, whatever the cap.
        assert_eq!(held(Some(Stuck::AllChoking)), StallReason::AllChoking);
        // No address to dial: the cap is not what holds it.
        assert_eq!(
            StallReason::diagnose(0, None, &[], Some(Stuck::NotConnected), true),
            StallReason::NoPeersFound
        );
    }
}
