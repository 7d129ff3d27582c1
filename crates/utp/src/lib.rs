//! uTP, the uTorrent transport protocol (BEP 29): reliable, ordered byte
//! streams over UDP whose congestion control (LEDBAT) yields to other
//! traffic once it sees its own queueing delay pass a 100 ms target.
//!
//! [`Socket`] is sans-IO, like the DHT node: one state machine for every
//! connection on a UDP port, fed datagrams and the time, drained of datagrams
//! and events. [`net`] is the tokio driver around it and the stream type;
//! the session feeds it from the DHT's port through the demultiplexer.
//!
//! What it does: SYN/STATE connection setup, wrapping sequence and ack
//! numbers, selective acks both ways, in-order data acked in batches (every
//! 16th packet or after 2 ms; holes at once), retransmission on timeout
//! (RTT estimated per BEP 29, at least 500 ms) and on three duplicate or
//! selective acks past a hole, MTU-sized packets (no MTU discovery), a
//! LEDBAT window with a base-delay history, an advertised receive window,
//! FIN and RESET. Every buffer is bounded: send, receive and reorder buffers,
//! packets in flight and the number of connections.

mod congestion;
mod conn;
mod gso;
pub mod net;
pub mod packet;
mod socket;

use std::time::Duration;

pub use packet::{ParseError, looks_like_utp};
pub use socket::Socket;

/// Packets we keep in flight per connection at most.
pub(crate) const MAX_INFLIGHT_PACKETS: usize = 512;

/// How far past the next expected packet the reorder buffer reaches, in
/// packets: past a whole advertised window ([`Config::recv_buffer`], 1 MiB)
/// of packets of 1 KiB or more. At 512, a libtorrent sender whose window
/// had outgrown it saw every packet past the 512th after a hole dropped,
/// and recovered them one retransmission timeout at a time.
pub(crate) const REORDER_REACH: usize = 1024;

/// One connection on a [`Socket`]; ids are never reused by a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// Something the application should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A dial finished its handshake: the stream is open.
    Connected(StreamId),
    /// A peer opened a connection to us.
    Incoming(StreamId, std::net::SocketAddr),
    /// Bytes (or the end of the stream) arrived where there were none.
    Readable(StreamId),
    /// The send buffer has room again after a short write.
    Writable(StreamId),
    /// The connection is gone; its id is dead.
    Closed(StreamId, CloseReason),
}

/// Why a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished (FIN each way).
    Done,
    /// The peer sent RESET.
    Reset,
    /// The peer stopped answering (or never answered the SYN).
    TimedOut,
}

/// Why a call on a [`Socket`] failed: local misuse or limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The stream is closed or never existed.
    #[error("no such uTP stream")]
    UnknownStream,
    /// [`Config::max_connections`] are open.
    #[error("too many uTP connections")]
    TooManyConnections,
}

/// Limits and tunables of a [`Socket`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Payload bytes per packet: fits a 1500-byte MTU with IPv6 and UDP
    /// headers and a selective ack.
    pub max_payload: usize,
    /// Bytes written and not yet sent, per connection.
    pub send_buffer: usize,
    /// Bytes received and not yet read (in order or not), per connection:
    /// the window we advertise.
    pub recv_buffer: usize,
    /// Largest congestion window in bytes per millisecond of the path's
    /// least round trip, and the largest on paths of a millisecond or less;
    /// so at most about 64 MB/s per connection at any distance by default.
    ///
    /// On a short path a window arrives almost as one burst, and the
    /// default, 64 KiB, keeps that burst inside a receiver's default UDP
    /// receive buffer (208 KiB on Linux, counted with the kernel's
    /// per-packet overhead). With 128 KiB a libtorrent downloader on
    /// loopback dropped packets whenever it fell behind, then never acked
    /// that connection's retransmissions: each stall lasted until the
    /// connection timed out, and 256 MiB took 130-200 s; with 64 KiB it took
    /// 2-3 s. On a long path the acks spread the window over the round
    /// trip, and a fixed 64 KiB would hold a connection to 64 KiB per round
    /// trip, 1.3 MB/s at 50 ms: so the cap grows with the round trip.
    pub max_window_per_ms: usize,
    /// LEDBAT's queueing-delay target.
    pub target_delay: Duration,
    /// Open connections at most; more SYNs are dropped.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_payload: 1400,
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            max_window_per_ms: 64 << 10,
            target_delay: Duration::from_millis(100),
            max_connections: 1024,
        }
    }
}
