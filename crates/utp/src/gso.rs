//! Sends the driver's datagrams, a run of equal-sized ones to one address
//! as a single UDP GSO write (`UDP_SEGMENT`): the kernel takes one system
//! call and one pass down its UDP and IP layers for the run, and cuts it
//! into the same datagrams at the end. A uTP sender's window goes out as
//! such runs (every data packet of a flush has the same size but the
//! last), and per-datagram sends were most of a seeder's CPU.
//!
//! tokio's `UdpSocket` cannot attach control messages, so the run goes
//! through `nix`'s `sendmsg` inside tokio's readiness loop.
//!
//! A refused run is never lost: it goes again one datagram at a time. What
//! the refusal says decides what follows. A route that cannot take a run
//! (an MTU below the segment size, as on a tunnel or an IPv6 path of 1280
//! bytes; a device without checksum offload) refuses only runs to that
//! destination, whose datagrams then go alone and fragment if they must; a
//! kernel without segmentation stops runs for good.

use std::collections::HashSet;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::sockopt::UdpGsoSegment;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, getsockopt, sendmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams in one write: the kernel's own limit (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one write: a UDP payload's limit, less IPv6's larger header.
const MAX_BYTES: usize = 65_000;
/// Destinations remembered as too narrow for a run. A full set is emptied:
/// forgetting costs each of them one refused write, never a datagram.
const MAX_NARROW: usize = 1024;

/// Sends datagrams, in runs where it can.
#[derive(Debug)]
pub(crate) struct Batcher {
    /// The kernel segments: it knew the socket option when asked, and has
    /// not refused a run since for want of segmentation.
    gso: bool,
    /// Destinations whose route refused a run ([`Refusal::Route`]): their
    /// datagrams go alone.
    narrow: HashSet<IpAddr>,
}

impl Batcher {
    /// Uses GSO if the kernel has it, as asked through `socket`. A kernel
    /// before 4.18 does not know the socket option, and it might not refuse
    /// a run either, but skip the control message it does not know and
    /// send the whole run as one oversized datagram.
    pub(crate) fn new(socket: Option<&UdpSocket>) -> Self {
        let gso = match socket.map(|socket| getsockopt(socket, UdpGsoSegment)) {
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                tracing::debug!("uTP: no UDP GSO here ({e}); sending datagrams one by one");
                false
            }
            None => false,
        };
        Batcher {
            gso,
            narrow: HashSet::new(),
        }
    }

    /// Whether a run to `to` is tried.
    fn runs_to(&self, to: &SocketAddr) -> bool {
        self.gso && !self.narrow.contains(&to.ip())
    }

    /// Takes note of a failed run; true if the kernel refused the run
    /// itself, so its datagrams should go again one at a time.
    fn refused(&mut self, to: &SocketAddr, e: &io::Error) -> bool {
        match refusal(e) {
            Some(Refusal::Route) => {
                tracing::debug!("uTP: UDP GSO refused for {to} ({e}); its datagrams go one by one");
                if self.narrow.len() == MAX_NARROW {
                    self.narrow.clear();
                }
                self.narrow.insert(to.ip());
                true
            }
            Some(Refusal::Kernel) => {
                tracing::debug!("uTP: UDP GSO refused ({e}); sending datagrams one by one");
                self.gso = false;
                true
            }
            None => false,
        }
    }

    /// Sends `datagrams` in order, each to its address, through the socket
    /// `socket_for` picks for that address (none: the datagram is dropped).
    /// A failed send is logged and dropped like a lost packet: uTP resends.
    pub(crate) async fn send<'s>(
        &mut self,
        datagrams: &[(SocketAddr, Bytes)],
        socket_for: impl Fn(&SocketAddr) -> Option<&'s UdpSocket>,
    ) {
        let mut rest = datagrams;
        while let Some(((to, first), _)) = rest.split_first() {
            let Some(socket) = socket_for(to) else {
                rest = &rest[1..];
                continue;
            };
            let len = if self.runs_to(to) { run_len(rest) } else { 1 };
            let (run, after) = rest.split_at(len);
            rest = after;
            if len > 1 {
                match self.send_run(socket, *to, first.len(), run).await {
                    Ok(()) => continue,
                    Err(e) if !self.refused(to, &e) => {
                        tracing::trace!("uTP send to {to} failed: {e}");
                        continue;
                    }
                    Err(_) => {}
                }
            }
            for (to, bytes) in run {
                if let Err(e) = socket.send_to(bytes, to).await {
                    tracing::trace!("uTP send to {to} failed: {e}");
                }
            }
        }
    }

    /// One GSO write of `run`, whose datagrams are `segment` bytes but the
    /// last, which may be shorter. Each datagram is one element of the
    /// write's vector: the kernel joins and cuts them, so nothing is copied
    /// here.
    async fn send_run(
        &self,
        socket: &UdpSocket,
        to: SocketAddr,
        segment: usize,
        run: &[(SocketAddr, Bytes)],
    ) -> io::Result<()> {
        let mut slices = [IoSlice::new(&[]); MAX_SEGMENTS];
        for (slice, (_, bytes)) in slices.iter_mut().zip(run) {
            *slice = IoSlice::new(bytes);
        }
        let slices = &slices[..run.len().min(MAX_SEGMENTS)];
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let segment = u16::try_from(segment).map_err(|_| io::ErrorKind::InvalidInput)?;
        let address = SockaddrStorage::from(to);
        let sent = socket
            .async_io(Interest::WRITABLE, || {
                sendmsg(
                    socket.as_raw_fd(),
                    slices,
                    &[ControlMessage::UdpGsoSegments(&segment)],
                    MsgFlags::empty(),
                    Some(&address),
                )
                .map_err(io::Error::from)
            })
            .await?;
        if sent == total {
            Ok(())
        } else {
            // A datagram socket sends all or nothing; say so if not.
            Err(io::Error::other(format!("sent {sent} of {total} bytes")))
        }
    }
}

/// Why the kernel refused a run, when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The destination's route cannot take it: an MTU below the segment
    /// size, a device without checksum offload, or IPsec.
    Route,
    /// The kernel does not segment at all.
    Kernel,
}

/// Whether `e` refuses segmentation rather than this one send. A run over
/// the route's MTU fails with EMSGSIZE (seen on Linux 6.1 with a /24 of
/// `mtu 1200` in the loopback table) or, from the kernel's later segment
/// check, EINVAL; a device without checksum offload or an IPsec route, with
/// EIO. ENOPROTOOPT and EOPNOTSUPP are for a kernel that passed the probe
/// yet does not know the control message.
fn refusal(e: &io::Error) -> Option<Refusal> {
    match e.raw_os_error().map(Errno::from_raw)? {
        Errno::EMSGSIZE | Errno::EINVAL | Errno::EIO => Some(Refusal::Route),
        Errno::ENOPROTOOPT | Errno::EOPNOTSUPP => Some(Refusal::Kernel),
        _ => None,
    }
}

/// How many datagrams from the start of `datagrams` form one run: the same
/// address and the first one's size, except the last, which may be
/// shorter; at most [`MAX_SEGMENTS`] and [`MAX_BYTES`].
fn run_len(datagrams: &[(SocketAddr, Bytes)]) -> usize {
    let Some(((to, first), _)) = datagrams.split_first() else {
        return 0;
    };
    let size = first.len();
    if size == 0 {
        return 1;
    }
    let mut len = 1;
    let mut bytes = size;
    for (addr, d) in &datagrams[1..] {
        if len == MAX_SEGMENTS || addr != to || d.len() > size || bytes + d.len() > MAX_BYTES {
            break;
        }
        len += 1;
        bytes += d.len();
        if d.len() < size {
            break;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(to: SocketAddr, len: usize, tag: u8) -> (SocketAddr, Bytes) {
        (to, Bytes::from(vec![tag; len]))
    }

    #[test]
    fn a_run_is_one_address_and_one_size_with_a_shorter_tail() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let d = |to, len| datagram(to, len, 0);
        assert_eq!(run_len(&[]), 0);
        assert_eq!(run_len(&[d(a, 100), d(a, 100), d(a, 40), d(a, 100)]), 3);
        assert_eq!(run_len(&[d(a, 100), d(a, 100), d(b, 100)]), 2);
        assert_eq!(run_len(&[d(a, 100), d(a, 120)]), 1);
        assert_eq!(run_len(&[d(a, 0), d(a, 0)]), 1);
        let many = vec![d(a, 10); 100];
        assert_eq!(run_len(&many), MAX_SEGMENTS);
        let big = vec![d(a, 1500); 60];
        assert_eq!(run_len(&big), MAX_BYTES / 1500);
    }

    #[tokio::test]
    async fn datagrams_arrive_as_sent_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        // Two runs (a shorter tail ends the first) and a lone bare ack.
        let mut sent: Vec<(SocketAddr, Bytes)> = (0..10).map(|i| datagram(to, 1400, i)).collect();
        sent.push(datagram(to, 300, 10));
        sent.extend((11..15).map(|i| datagram(to, 1400, i)));
        sent.push(datagram(to, 20, 15));
        let mut batcher = Batcher::new(Some(&sender));
        batcher.send(&sent, |_| Some(&sender)).await;
        let mut buf = [0u8; 2048];
        for (i, (_, want)) in sent.iter().enumerate() {
            let (n, _) = receiver.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &want[..], "datagram {i}");
        }
        assert!(batcher.gso, "the kernel refused GSO on loopback");
        assert!(batcher.narrow.is_empty());
    }

    lodestone_tests::isolated_test! {
        /// A route too narrow for a run (its MTU below the segment size)
        /// refuses runs to its addresses only: their datagrams go alone and
        /// fragment, none is lost, and runs to everyone else carry on.
        /// Before, the refusal was taken for a failed send and the whole run
        /// dropped, every time the window grew into one.
        async fn a_narrow_route_loses_nothing_and_keeps_runs_for_others() {
            let route = std::process::Command::new("ip")
                .args(["route", "add", "local", "127.0.9.0/24", "dev", "lo"])
                .args(["table", "local", "mtu", "1200"])
                .status()
                .expect("running ip");
            assert!(route.success(), "ip route add failed");
            let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let narrow = UdpSocket::bind("127.0.9.1:0").await.unwrap();
            let wide = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to_narrow = narrow.local_addr().unwrap();
            let to_wide = wide.local_addr().unwrap();
            let mut sent: Vec<(SocketAddr, Bytes)> =
                (0..8).map(|i| datagram(to_narrow, 1400, i)).collect();
            sent.extend((8..16).map(|i| datagram(to_wide, 1400, i)));
            sent.extend((16..24).map(|i| datagram(to_narrow, 1400, i)));
            let mut batcher = Batcher::new(Some(&sender));
            batcher.send(&sent, |_| Some(&sender)).await;
            for (socket, to) in [(&narrow, to_narrow), (&wide, to_wide)] {
                let mut buf = [0u8; 2048];
                for (i, (_, want)) in sent.iter().enumerate().filter(|(_, (a, _))| *a == to) {
                    let received = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        socket.recv_from(&mut buf),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("datagram {i} to {to} never arrived"));
                    let (n, _) = received.unwrap();
                    assert_eq!(&buf[..n], &want[..], "datagram {i}");
                }
            }
            assert!(batcher.gso);
            assert!(batcher.narrow.contains(&to_narrow.ip()));
            assert!(!batcher.narrow.contains(&to_wide.ip()));
        }
    }
}
