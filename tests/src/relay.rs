//! A TCP relay that counts connections: put in front of a peer (a real
//! client or a fake), it lets a test assert, at the peer's side, how many
//! times a client connected to it, and whether the client ever sent a
//! plaintext BitTorrent handshake.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// A running relay; it stops accepting when the test process ends.
#[derive(Debug, Clone)]
pub struct CountingRelay {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    plaintext: Arc<AtomicUsize>,
}

/// The start of a plaintext BitTorrent handshake.
const HANDSHAKE_HEADER: &[u8] = b"\x13BitTorrent protocol";

impl CountingRelay {
    /// Listens on `ip` (any port) and relays every connection to `to`.
    pub fn start(ip: Ipv4Addr, to: SocketAddr) -> io::Result<CountingRelay> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicUsize::new(0));
        let plaintext = Arc::new(AtomicUsize::new(0));
        let (counted, seen) = (count.clone(), plaintext.clone());
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                thread::spawn(move || {
                    if let Ok(outbound) = TcpStream::connect(to) {
                        pipe(inbound, outbound, &seen);
                    }
                });
            }
        });
        Ok(CountingRelay {
            addr,
            count,
            plaintext,
        })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Times `\x13BitTorrent protocol` appeared in what clients sent
    /// (anywhere in a connection, not only at its start).
    pub fn plaintext_handshakes(&self) -> usize {
        self.plaintext.load(Ordering::SeqCst)
    }
}

/// Copies both directions until either side closes, counting plaintext
/// handshakes in the client's direction into `seen`.
fn pipe(a: TcpStream, b: TcpStream, seen: &AtomicUsize) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let backward = thread::spawn(move || copy_then_close(b2, a2));
    watch_then_close(a, b, seen);
    let _ = backward.join();
}

/// Like [`copy_then_close`], counting every `HANDSHAKE_HEADER` that passes,
/// also across reads.
fn watch_then_close(mut from: TcpStream, mut to: TcpStream, seen: &AtomicUsize) {
    let mut buf = vec![0u8; 64 * 1024];
    // The tail of the previous read, so a header split across reads counts.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let found = carry
            .windows(HANDSHAKE_HEADER.len())
            .filter(|w| *w == HANDSHAKE_HEADER)
            .count();
        seen.fetch_add(found, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let keep = HANDSHAKE_HEADER.len() - 1;
        carry.drain(..carry.len().saturating_sub(keep));
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
