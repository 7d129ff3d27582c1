//! Sends the driver's datagrams, a run of equal-sized ones to one address
//! as a single UDP GSO write (`UDP_SEGMENT`): the kernel takes one system
//! call and one pass down its UDP and IP layers for the run, and cuts it
//! into the same datagrams at the end. A uTP sender's window goes out as
//! such runs (every data packet of a flush has the same size but the
//! last), and per-datagram sends were most of a seeder's CPU.
//!
//! tokio's `UdpSocket` cannot attach control messages, so the run goes
//! through `nix`'s `sendmsg` inside tokio's readiness loop.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams in one write: the kernel's own limit (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one write: a UDP payload's limit, less IPv6's larger header.
const MAX_BYTES: usize = 65_000;

/// Sends datagrams, in runs where it can.
#[derive(Debug)]
pub(crate) struct Batcher {
    /// Cleared for good when the kernel refuses a run (an old kernel, or a
    /// device without checksum offload): then every datagram goes alone.
    gso: bool,
}

impl Batcher {
    /// Uses GSO until the kernel refuses it.
    pub(crate) fn new() -> Self {
        Batcher { gso: true }
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
            let len = if self.gso { run_len(rest) } else { 1 };
            let (run, after) = rest.split_at(len);
            rest = after;
            let Some(socket) = socket_for(to) else {
                continue;
            };
            if len > 1 {
                match self.send_run(socket, *to, first.len(), run).await {
                    Ok(()) => continue,
                    Err(e) if refuses_gso(&e) => {
                        tracing::debug!("uTP: UDP GSO refused ({e}); sending datagrams one by one");
                        self.gso = false;
                    }
                    Err(e) => {
                        tracing::trace!("uTP send to {to} failed: {e}");
                        continue;
                    }
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

/// Whether `e` says the kernel or the device cannot segment (a kernel
/// before 4.18, no checksum offload, or datagrams over the route's MTU,
/// which one-by-one sends fragment instead), not that this send failed.
fn refuses_gso(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
    )
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
        let mut batcher = Batcher::new();
        batcher.send(&sent, |_| Some(&sender)).await;
        let mut buf = [0u8; 2048];
        for (i, (_, want)) in sent.iter().enumerate() {
            let (n, _) = receiver.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &want[..], "datagram {i}");
        }
        assert!(batcher.gso, "the kernel refused GSO on loopback");
    }
}
