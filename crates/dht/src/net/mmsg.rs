//! Many datagrams per system call: `recvmmsg`/`sendmmsg` on Linux (through
//! nix's safe wrappers; the workspace forbids `unsafe`), one `recv_from` /
//! `send_to` per datagram elsewhere.
//!
//! A bootstrap node's profile is mostly the kernel's UDP path; batching
//! takes the system-call entry, the file lookup and the socket locking of
//! all but one datagram of a burst off it.
//!
//! Both functions are non-blocking attempts for `UdpSocket::try_io`: they
//! return `WouldBlock` when nothing could be done, which clears the
//! socket's readiness. They are public for the node benchmark's load
//! generator, which pays the same per-datagram costs as the node.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::node::Transmit;

/// Most datagrams one [`send`] call passes to the kernel.
pub const MAX_BATCH: usize = 64;

/// Bytes per receive slot. KRPC datagrams stay under about 1.5 KB; a longer
/// one arrives cut (and flagged) and is dropped.
pub const SLOT: usize = 4096;

/// Receives up to `buf.len() / SLOT` datagrams, the i-th into the i-th slot
/// of `buf`, and appends each one's sender and length to `got` (cut ones
/// are skipped, but keep their slot so the rest stay aligned: their length
/// is recorded as 0, which the decoder refuses).
#[cfg(target_os = "linux")]
pub fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
    got: &mut Vec<(SocketAddr, usize)>,
) -> io::Result<()> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

    let mut slices: Vec<[IoSliceMut<'_>; 1]> = buf
        .chunks_mut(SLOT)
        .map(|slot| [IoSliceMut::new(slot)])
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
    let received = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slices.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    for msg in received {
        let from = msg.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        });
        let cut = msg.flags.contains(MsgFlags::MSG_TRUNC);
        // A datagram without a usable sender is dropped like a cut one.
        let (from, len) = match from {
            Some(from) if !cut => (from, msg.bytes),
            _ => (SocketAddr::from(([0, 0, 0, 0], 0)), 0),
        };
        got.push((from, len));
    }
    Ok(())
}

/// Sends `out` (all of one family) with as few calls as the kernel allows;
/// returns how many went. An error concerns the first datagram.
#[cfg(target_os = "linux")]
pub fn send(socket: &UdpSocket, out: &[Transmit]) -> io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    let out = &out[..out.len().min(MAX_BATCH)];
    let slices: Vec<[IoSlice<'_>; 1]> = out.iter().map(|t| [IoSlice::new(&t.bytes)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = out
        .iter()
        .map(|t| Some(SockaddrStorage::from(t.to)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(out.len(), None);
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        &addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

/// One datagram per call where there is no `recvmmsg`.
#[cfg(not(target_os = "linux"))]
pub fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
    got: &mut Vec<(SocketAddr, usize)>,
) -> io::Result<()> {
    for slot in buf.chunks_mut(SLOT) {
        match socket.try_recv_from(slot) {
            Ok((len, from)) => got.push((from, len)),
            Err(e) if !got.is_empty() && e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One datagram per call where there is no `sendmmsg`.
#[cfg(not(target_os = "linux"))]
pub fn send(socket: &UdpSocket, out: &[Transmit]) -> io::Result<usize> {
    let first = out
        .first()
        .map_or(Ok(0), |t| socket.try_send_to(&t.bytes, t.to));
    first.map(|_| 1)
}
