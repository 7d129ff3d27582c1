//! A TCP relay that counts connections: put in front of a peer (a real
//! client or a fake), it lets a test assert, at the peer's side, how many
//! times a client connected to it, whether the client ever sent a
//! plaintext BitTorrent handshake, and how many connections the peer hung
//! up in an encryption handshake's key exchange.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use lodestone_mse::{KEY_LEN, MAX_PAD};

/// A running relay; it stops accepting when the test process ends.
#[derive(Debug, Clone)]
pub struct CountingRelay {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    plaintext: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    key_exchange_hangups: Arc<AtomicUsize>,
}

/// The start of a plaintext BitTorrent handshake.
const HANDSHAKE_HEADER: &[u8] = b"\x13BitTorrent protocol";

/// What an MSE receiver sends before it has read the initiator's request:
/// its public key and up to [`MAX_PAD`] bytes of padding.
const MSE_KEY_EXCHANGE: std::ops::RangeInclusive<usize> = KEY_LEN..=KEY_LEN + MAX_PAD;

impl CountingRelay {
    /// Listens on `ip` (any port) and relays every connection to `to`.
    pub fn start(ip: Ipv4Addr, to: SocketAddr) -> io::Result<CountingRelay> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicUsize::new(0));
        let plaintext = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let key_exchange_hangups = Arc::new(AtomicUsize::new(0));
        let relay = CountingRelay {
            addr,
            count,
            plaintext,
            served,
            key_exchange_hangups,
        };
        let counters = relay.clone();
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                counters.count.fetch_add(1, Ordering::SeqCst);
                let counters = counters.clone();
                thread::spawn(move || {
                    if let Ok(outbound) = TcpStream::connect(to) {
                        pipe(inbound, outbound, &counters);
                    }
                });
            }
        });
        Ok(relay)
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

    /// Connections the peer closed first, having sent no more than an MSE
    /// key exchange: libtorrent 2.0 hangs up so on one encrypted handshake
    /// in 256 (it misreads a shared secret that begins with a zero byte).
    pub fn key_exchange_hangups(&self) -> usize {
        self.key_exchange_hangups.load(Ordering::SeqCst)
    }

    /// Connections of the client's own making: all of them but those the
    /// peer hung up in the key exchange, after which the client's redial
    /// with fresh keys is the same dial again.
    pub fn client_connections(&self) -> usize {
        self.connections() - self.key_exchange_hangups()
    }
}

/// Copies both directions until either side closes, counting into
/// `counters` the plaintext handshakes in the client's direction, the bytes
/// of the peer's, and whether the peer hung up first within a key exchange.
fn pipe(a: TcpStream, b: TcpStream, counters: &CountingRelay) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (sent, hangups) = (
        counters.served.clone(),
        counters.key_exchange_hangups.clone(),
    );
    // Set once the client has closed: a peer that closes after it only
    // answers the client's close.
    let client_closed = Arc::new(AtomicBool::new(false));
    let closed = client_closed.clone();
    let backward = thread::spawn(move || {
        copy_then_close(
            b2,
            a2,
            |chunk| {
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            },
            |total| {
                if !closed.load(Ordering::SeqCst) && MSE_KEY_EXCHANGE.contains(&total) {
                    hangups.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
    });
    let seen = &counters.plaintext;
    // The tail of the previous read, so a header split across reads counts.
    let mut carry: Vec<u8> = Vec::new();
    let watch = |chunk: &[u8]| {
        carry.extend_from_slice(chunk);
        let found = carry
            .windows(HANDSHAKE_HEADER.len())
            .filter(|w| *w == HANDSHAKE_HEADER)
            .count();
        seen.fetch_add(found, Ordering::SeqCst);
        // Too short to hold a whole header, so none is counted twice.
        carry.drain(..carry.len().saturating_sub(HANDSHAKE_HEADER.len() - 1));
    };
    copy_then_close(a, b, watch, |_| client_closed.store(true, Ordering::SeqCst));
    let _ = backward.join();
}

/// Copies until either side closes, showing each chunk to `watch` before
/// passing it on (so it has seen every byte the receiver has), then tells
/// `closing` how many bytes it copied before it passes the close on (so
/// the far side cannot have answered it yet).
fn copy_then_close(
    mut from: TcpStream,
    mut to: TcpStream,
    mut watch: impl FnMut(&[u8]),
    closing: impl FnOnce(usize),
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        watch(&buf[..n]);
        total += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    closing(total);
    let _ = to.shutdown(Shutdown::Write);
}
