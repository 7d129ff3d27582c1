//! A TCP relay that counts connections: put in front of a peer (a real
//! client or a fake), it lets a test assert, at the peer's side, how many
//! times a client connected to it.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// A running relay; it stops accepting when the test process ends.
#[derive(Debug, Clone)]
pub struct CountingRelay {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl CountingRelay {
    /// Listens on `ip` (any port) and relays every connection to `to`.
    pub fn start(ip: Ipv4Addr, to: SocketAddr) -> io::Result<CountingRelay> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    if let Ok(outbound) = TcpStream::connect(to) {
                        pipe(inbound, outbound);
                    }
                });
            }
        });
        Ok(CountingRelay { addr, count })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Copies both directions until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let forward = thread::spawn(move || copy_then_close(a, b));
    copy_then_close(b2, a2);
    let _ = forward.join();
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
