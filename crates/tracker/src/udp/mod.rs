//! UDP trackers (BEP 15): the packets, the sans-IO exchange, and the thin
//! tokio pump that moves its datagrams.

mod machine;
pub mod packet;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use lodestone_core::Family;
use tokio::net::UdpSocket;
use tokio::time::Instant;

pub use machine::{UdpConfig, UdpDone, UdpRequest, UdpTracker};

use crate::error::TrackerError;

/// A socket and exchange state for one UDP tracker, kept between
/// announces so the connection id is reused while it is fresh.
#[derive(Debug)]
pub struct UdpLink {
    socket: UdpSocket,
    tracker: SocketAddr,
    machine: UdpTracker,
}

impl UdpLink {
    /// Binds a socket of the tracker's family on an ephemeral port.
    pub async fn open(tracker: SocketAddr, config: UdpConfig) -> Result<UdpLink, TrackerError> {
        let family = Family::of(&tracker);
        let local: SocketAddr = match family {
            Family::V4 => (Ipv4Addr::UNSPECIFIED, 0).into(),
            Family::V6 => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        Ok(UdpLink {
            socket,
            tracker,
            machine: UdpTracker::new(config, family, rand::random()),
        })
    }

    /// The tracker's address.
    pub fn tracker(&self) -> SocketAddr {
        self.tracker
    }

    /// Runs `request` to its end: the machine's retries bound the time.
    pub async fn exchange(&mut self, request: UdpRequest) -> Result<UdpDone, TrackerError> {
        let mut buf = vec![0u8; packet::MAX_DATAGRAM];
        self.machine.start(Instant::now().into_std(), request);
        loop {
            while let Some(datagram) = self.machine.poll_transmit() {
                self.socket.send_to(&datagram, self.tracker).await?;
            }
            if let Some(done) = self.machine.poll_event() {
                return done;
            }
            let Some(wake) = self.machine.poll_timeout() else {
                // Unreachable: a started request has a timer until it ends.
                return Err(TrackerError::Malformed("exchange ended without a result"));
            };
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, from) = received?;
                    // Only the tracker's own address speaks for it.
                    if from == self.tracker {
                        self.machine.handle_datagram(Instant::now().into_std(), &buf[..n]);
                    }
                }
                () = tokio::time::sleep_until(Instant::from_std(wake)) => {
                    self.machine.handle_timeout(Instant::now().into_std());
                }
            }
        }
    }
}
