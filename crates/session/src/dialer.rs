//! The transport seam: how a connection to a peer is made before the
//! BitTorrent handshake. TCP in plaintext today; uTP and MSE/PE
//! encryption plug in here, choosing a transport and a wrapping per
//! address, so that everything after the handshake stays the same.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_wire::{Connection, ConnectionError, Established, Handshake};

/// Connects to `addr` over TCP and exchanges handshakes within `timeout`.
pub async fn dial(
    addr: SocketAddr,
    timeout: Duration,
    ours: Handshake,
) -> Result<Established, ConnectionError> {
    let (conn, theirs) = Connection::connect(addr, timeout, ours).await?;
    Ok(Established::new(conn, theirs, addr, false))
}
