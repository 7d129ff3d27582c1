//! Whether a peer's UDP port is closed, from the ICMP error it draws.
//!
//! A uTP SYN to a closed port draws an ICMP "port unreachable", but the
//! DHT's shared socket that sent it cannot hear it (see the TCP/uTP race in
//! `dialer`), so the dial would wait out its SYN retries. A socket of its
//! own, connected to the peer, hears it without any option: Linux, the BSDs
//! and macOS report the ICMP error as `ECONNREFUSED` on a connected UDP
//! socket, and only that socket sees its readiness change.
//!
//! [`refusal`] sends one empty datagram from such a socket and waits for
//! that error. An empty datagram is no valid uTP packet or KRPC message, so
//! a peer that is listening drops it.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Resolves with the error once `addr`'s UDP port is known to be closed;
/// never resolves when it is open, silent or cannot be probed, so it only
/// ever shortens a wait that something else bounds.
pub async fn refusal(addr: SocketAddr) -> io::Error {
    match probe(addr).await {
        Ok(Some(refused)) => refused,
        _ => std::future::pending().await,
    }
}

/// The refusal, `None` when the port answered instead, or a local error.
async fn probe(addr: SocketAddr) -> io::Result<Option<io::Error>> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(addr).await?;
    socket.send(&[]).await?;
    // One wait, no loop: whatever woke it is read once, so a readiness
    // that stays set cannot spin.
    socket.ready(Interest::READABLE | Interest::ERROR).await?;
    let pending = match socket.take_error()? {
        Some(e) => Err(e),
        None => socket.try_recv(&mut [0u8; 1]).map(|_| ()),
    };
    Ok(match pending {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(e),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A port of `ip` where nothing listens: a UDP port just let go of.
    fn closed_port(ip: &str) -> SocketAddr {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind");
        socket.local_addr().expect("local address")
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_refused() {
        // ICMPv6 says it as ICMP does.
        for ip in ["127.0.0.1", "::1"] {
            let addr = closed_port(ip);
            let refused = tokio::time::timeout(Duration::from_secs(30), refusal(addr))
                .await
                .expect("the ICMP error arrives");
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{addr}");
        }
    }

    #[tokio::test]
    async fn an_open_port_is_not() {
        let listener = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let mut probe = std::pin::pin!(refusal(addr));
        let mut buf = [0u8; 16];
        // The probe's datagram reaches the listener: the port was probed.
        let received = tokio::select! {
            r = listener.recv_from(&mut buf) => r.expect("receive").0,
            e = &mut probe => panic!("an open port reported closed: {e}"),
        };
        assert_eq!(received, 0);
        // Port unreachable would have come back at once on loopback.
        let waited = tokio::time::timeout(Duration::from_millis(200), probe).await;
        assert!(waited.is_err(), "an open port reported closed");
    }
}
