//! Properties of the uTP packet parser and the sans-IO socket, fed raw
//! datagrams.
//!
//! The input is a script: each step is a tag byte, then for datagrams a
//! length byte and that many bytes. Datagrams come from one peer, to which
//! the socket has dialed, and the script may patch in the connection id the
//! socket chose so that hostile packets reach the live connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_utp::packet::{HEADER_LEN, MAX_SACK_BYTES, Packet, PacketType};
use lodestone_utp::{Config, Event, Socket, StreamId};

const MAX_CONNECTIONS: usize = 4;

/// Parse → encode → parse agrees on every field.
fn round_trip(bytes: &[u8]) {
    let Ok(p) = Packet::parse(bytes) else {
        assert!(!bytes.is_empty() || Packet::parse(bytes).is_err());
        return;
    };
    assert!(
        lodestone_utp::looks_like_utp(bytes),
        "parsed but not recognised"
    );
    let mut out = Vec::new();
    p.encode(&mut out);
    let again = Packet::parse(&out).expect("an encoded packet parses");
    assert_eq!(again.header, p.header);
    assert_eq!(again.sack, p.sack);
    assert_eq!(again.payload, p.payload);
}

/// Runs the script; panics when a property fails.
pub fn check(data: &[u8]) {
    let t0 = Instant::now();
    let peer = SocketAddr::from(([10, 0, 0, 2], 6881));
    let config = Config {
        max_connections: MAX_CONNECTIONS,
        ..Config::default()
    };
    let max_datagram = HEADER_LEN + 2 + MAX_SACK_BYTES + config.max_payload;
    let mut socket = Socket::new(config, 7, t0);
    let dial = socket.connect(t0, peer).expect("room for one dial");
    // The SYN names the id the peer must answer to.
    let (_, syn) = socket.poll_transmit(t0).expect("a SYN");
    let conn_id = Packet::parse(&syn)
        .expect("our SYN parses")
        .header
        .connection_id;
    let mut streams: Vec<StreamId> = vec![dial];
    let mut now = t0;
    let mut rest = data;
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        match tag % 5 {
            0 | 1 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                let mut datagram = tail[..len].to_vec();
                rest = &tail[len..];
                round_trip(&datagram);
                if tag % 5 == 1 && datagram.len() >= 4 {
                    // Aim at the live connection: version 1, its id.
                    datagram[0] = (datagram[0] & 0xf0) | 1;
                    datagram[2..4].copy_from_slice(&conn_id.to_be_bytes());
                }
                socket.handle_datagram(now, peer, &datagram);
            }
            2 => {
                now += Duration::from_millis(u64::from(tag / 5) * 40);
                socket.handle_timeout(now);
                if let Some(t) = socket.poll_timeout() {
                    assert!(
                        t > now,
                        "a deadline at or before now survived handle_timeout"
                    );
                }
            }
            3 => {
                for &id in &streams {
                    let _ = socket.write(id, &[tag; 3000]);
                }
            }
            _ => {
                for &id in &streams {
                    let _ = socket.read(id, 4096, |_| {});
                }
                if tag & 0x80 != 0 {
                    socket.close(dial);
                }
            }
        }
        while let Some((to, datagram)) = socket.poll_transmit(now) {
            assert_eq!(to, peer, "sent to someone who never spoke");
            assert!(datagram.len() <= max_datagram, "oversized datagram");
            let p = Packet::parse(&datagram).expect("what we send parses");
            assert!(p.payload.len() <= 1400);
            if p.header.kind == PacketType::Syn {
                assert_eq!(p.header.connection_id, conn_id);
            }
        }
        while let Some(event) = socket.poll_event() {
            if let Event::Incoming(id, _) = event {
                streams.push(id);
            }
        }
        assert!(socket.len() <= MAX_CONNECTIONS);
        streams.truncate(64);
    }
}
