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
    served: Arc<AtomicUsize>,
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
        let served = Arc::new(AtomicUsize::new(0));
        let (counted, seen, sent) = (count.clone(), plaintext.clone(), served.clone());
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let (seen, sent) = (seen.clone(), sent.clone());
                thread::spawn(move || {
                    if let Ok(outbound) = TcpStream::connect(to) {
                        pipe(inbound, outbound, &seen, sent);
                    }
                });
            }
        });
        Ok(CountingRelay {
            addr,
            count,
            plaintext,
            served,
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

    /// Bytes the peer sent to clients so far.
    pub fn bytes_served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// Copies both directions until either side closes, counting plaintext
/// handshakes in the client's direction into `seen` and the bytes of the
/// peer's into `sent`.
fn pipe(a: TcpStream, b: TcpStream, seen: &AtomicUsize, sent: Arc<AtomicUsize>) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let backward = thread::spawn(move || {
        copy_then_close(b2, a2, |chunk| {
            sent.fetch_add(chunk.len(), Ordering::SeqCst);
        });
    });
    // The tail of the previous read, so a header split across reads counts.
    let mut carry: Vec<u8> = Vec::new();
    copy_then_close(a, b, |chunk| {
        carry.extend_from_slice(chunk);
        let found = carry
            .windows(HANDSHAKE_HEADER.len())
            .filter(|w| *w == HANDSHAKE_HEADER)
            .count();
        seen.fetch_add(found, Ordering::SeqCst);
        // Too short to hold a whole header, so none is counted twice.
        carry.drain(..carry.len().saturating_sub(HANDSHAKE_HEADER.len() - 1));
    });
    let _ = backward.join();
}

/// Copies until either side closes, showing each chunk to `watch` before
/// passing it on (so it has seen every byte the receiver has).
fn copy_then_close(mut from: TcpStream, mut to: TcpStream, mut watch: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        watch(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
