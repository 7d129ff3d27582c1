//! The transport seam: how a connection to a peer is made before the
//! BitTorrent handshake: TCP, uTP (BEP 29, on the DHT's UDP port), or both
//! at once. MSE/PE encryption plugs in here too, so that everything after
//! the handshake stays the same.
//!
//! The dial policy for [`Transport::Both`]: both transports are tried at
//! once and the first to complete the BitTorrent handshake is kept; the
//! other attempt is dropped (a TCP close, a uTP FIN). A peer speaking only
//! one of them therefore costs no timeout, and a peer speaking both gets
//! the faster path (on a LAN usually TCP; behind a UDP-only NAT, uTP). The
//! price, a second handshake to peers that speak both, is paid once per
//! peer and is cheaper than making every TCP-only peer wait out a uTP
//! fallback timer.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use lodestone_utp::net::UtpHandle;
use lodestone_wire::{ByteStream, Connection, ConnectionError, Established, Handshake};

/// Which transports the session speaks to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP only.
    Tcp,
    /// uTP only (BEP 29).
    Utp,
    /// Both: dial both at once, keep the first handshake; accept both.
    #[default]
    Both,
}

impl Transport {
    /// TCP is used.
    pub fn tcp(self) -> bool {
        self != Transport::Utp
    }

    /// uTP is used.
    pub fn utp(self) -> bool {
        self != Transport::Tcp
    }
}

/// Connects to `addr` over the transports given (TCP when `utp` is
/// `None`, uTP when `tcp` is false) and exchanges handshakes within
/// `timeout`.
pub async fn dial(
    addr: SocketAddr,
    timeout: Duration,
    ours: Handshake,
    tcp: bool,
    utp: Option<&UtpHandle>,
) -> Result<Established, ConnectionError> {
    match (tcp, utp) {
        (true, None) => dial_tcp(addr, timeout, ours).await,
        (false, Some(utp)) => dial_utp(utp, addr, timeout, ours).await,
        (true, Some(utp)) => {
            let mut over_tcp = pin!(dial_tcp(addr, timeout, ours));
            let mut over_utp = pin!(dial_utp(utp, addr, timeout, ours));
            tokio::select! {
                r = &mut over_tcp => match r {
                    Ok(conn) => Ok(conn),
                    Err(_) => over_utp.await,
                },
                r = &mut over_utp => match r {
                    Ok(conn) => Ok(conn),
                    Err(_) => over_tcp.await,
                },
            }
        }
        (false, None) => Err(ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no transport enabled",
        ))),
    }
}

async fn dial_tcp(
    addr: SocketAddr,
    timeout: Duration,
    ours: Handshake,
) -> Result<Established, ConnectionError> {
    let (conn, theirs) = Connection::connect(addr, timeout, ours).await?;
    Ok(Established::new(conn, theirs, addr, false))
}

async fn dial_utp(
    utp: &UtpHandle,
    addr: SocketAddr,
    timeout: Duration,
    ours: Handshake,
) -> Result<Established, ConnectionError> {
    let stream = tokio::time::timeout(timeout, utp.connect(addr))
        .await
        .map_err(|_| ConnectionError::Timeout)??;
    let (conn, theirs) =
        Connection::initiate(ByteStream::Other(Box::new(stream), addr), timeout, ours).await?;
    Ok(Established::new(conn, theirs, addr, false))
}
