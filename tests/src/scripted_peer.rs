//! Hand-written misbehaving peers for end-to-end tests: a listener that
//! takes any number of connections, reads each one's 68-byte BitTorrent
//! handshake and hands the socket to a script, on a thread per connection.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

/// Starts a scripted peer on `ip` (any port) and returns its address.
/// `script` runs for every connection whose handshake arrived whole; what
/// it writes first should be our handshake.
pub fn scripted_peer<F>(ip: Ipv4Addr, script: F) -> SocketAddr
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).expect("bind a scripted peer");
    let addr = listener.local_addr().expect("scripted peer address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let script = script.clone();
            std::thread::spawn(move || {
                let mut theirs = [0u8; 68];
                if stream.read_exact(&mut theirs).is_ok() {
                    script(stream);
                }
            });
        }
    });
    addr
}
