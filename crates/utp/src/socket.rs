//! The socket: every connection on one UDP port, keyed by the peer's address
//! and the connection id on its packets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::conn::{Conn, Io};
use crate::packet::{HEADER_LEN, Header, Packet, PacketType};
use crate::{Config, Error, Event, StreamId};

/// Datagrams handled since the transmit queue was last emptied, at most;
/// more are dropped, as UDP may drop them, until it is. The receiving side
/// feeds the socket directly, so this is what bounds the replies (acks,
/// RESETs, each well under 100 bytes) a flood can queue while the driver
/// is busy elsewhere. At 1024 an honest loopback download from three
/// seeders lost up to a thousand packets a round this way; at 8192, none
/// in ten rounds.
const UNDRAINED_DATAGRAMS: usize = 8192;

/// A sans-IO uTP socket.
///
/// Feed it datagrams ([`Socket::handle_datagram`]) and the time
/// ([`Socket::handle_timeout`] at [`Socket::poll_timeout`]); after every
/// input drain [`Socket::poll_transmit`] and [`Socket::poll_event`]. It never
/// reads a clock or a socket, so a simulation can run it on virtual time.
#[derive(Debug)]
pub struct Socket {
    config: Config,
    rng: StdRng,
    /// Timestamps on our packets count microseconds from here.
    epoch: Instant,
    /// Ordered by our own sequential ids, which no peer chooses: a B-tree
    /// finds one among a few connections without hashing, where SipHash
    /// took 2.6 % of a uTP download's CPU over three lookups per datagram.
    conns: BTreeMap<StreamId, Conn>,
    /// (peer, the connection id its packets carry) → connection. Peers
    /// choose these keys, so they keep the standard keyed hash.
    by_key: HashMap<(SocketAddr, u16), StreamId>,
    next_id: u64,
    /// Connections written to or read from since the last flush.
    dirty: Vec<StreamId>,
    transmits: VecDeque<(SocketAddr, Bytes)>,
    /// Datagrams handled since `transmits` was last emptied.
    undrained: usize,
    events: VecDeque<Event>,
}

impl Socket {
    /// A socket with no connections; `now` starts its timestamp clock and
    /// `rng_seed` draws its connection ids and sequence numbers.
    pub fn new(config: Config, rng_seed: u64, now: Instant) -> Self {
        Socket {
            config,
            rng: StdRng::seed_from_u64(rng_seed),
            epoch: now,
            conns: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            dirty: Vec::new(),
            transmits: VecDeque::new(),
            undrained: 0,
            events: VecDeque::new(),
        }
    }

    fn io<'a>(
        epoch: Instant,
        now: Instant,
        transmits: &'a mut VecDeque<(SocketAddr, Bytes)>,
        events: &'a mut VecDeque<Event>,
    ) -> Io<'a> {
        Io {
            now,
            // Wrapping microseconds: the peer only ever takes differences.
            timestamp_us: now.saturating_duration_since(epoch).as_micros() as u32,
            transmits,
            events,
        }
    }

    fn new_id(&mut self) -> StreamId {
        self.next_id += 1;
        StreamId(self.next_id)
    }

    /// Opens a connection to `addr`: [`Event::Connected`] or
    /// [`Event::Closed`] follows.
    pub fn connect(&mut self, now: Instant, addr: SocketAddr) -> Result<StreamId, Error> {
        if self.conns.len() >= self.config.max_connections {
            return Err(Error::TooManyConnections);
        }
        // A connection id free for this peer in both directions.
        let recv_id = loop {
            let id: u16 = self.rng.random();
            if !self.by_key.contains_key(&(addr, id))
                && !self.by_key.contains_key(&(addr, id.wrapping_add(1)))
            {
                break id;
            }
        };
        let id = self.new_id();
        let seq = self.rng.random();
        let mut conn = Conn::dial(id, addr, recv_id, seq, &self.config);
        let mut io = Self::io(self.epoch, now, &mut self.transmits, &mut self.events);
        conn.syn(&mut io);
        self.by_key.insert((addr, recv_id), id);
        self.conns.insert(id, conn);
        Ok(id)
    }

    /// One datagram from `from`. Anything that isn't a valid packet for a
    /// known connection (or a SYN) is dropped; a stray non-SYN is answered
    /// with RESET so the peer stops.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.undrained >= UNDRAINED_DATAGRAMS {
            return;
        }
        self.undrained += 1;
        let Ok(packet) = Packet::parse(bytes) else {
            return;
        };
        let h = packet.header;
        let key = if h.kind == PacketType::Syn {
            (from, h.connection_id.wrapping_add(1))
        } else {
            (from, h.connection_id)
        };
        if let Some(id) = self
            .by_key
            .get(&key)
            .copied()
            .or_else(|| self.reset_by_send_id(from, &h))
        {
            let mut io = Self::io(self.epoch, now, &mut self.transmits, &mut self.events);
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.on_packet(&packet, &mut io);
                conn.flush(&mut io);
                if conn.is_done() {
                    self.remove(id);
                }
            }
            return;
        }
        match h.kind {
            PacketType::Syn if self.conns.len() < self.config.max_connections => {
                let id = self.new_id();
                let seq = self.rng.random();
                let mut io = Self::io(self.epoch, now, &mut self.transmits, &mut self.events);
                let conn = Conn::accept(id, from, &h, seq, &self.config, &mut io);
                io.events.push_back(Event::Incoming(id, from));
                self.by_key.insert(key, id);
                self.conns.insert(id, conn);
            }
            PacketType::Reset => {}
            _ => self
                .transmits
                .push_back((from, reset_for(&h, now, self.epoch).into())),
        }
    }

    /// The connection a RESET names by our send id. libutp answers a packet
    /// it has no connection for with the id that packet carried, which is
    /// our send id, one off our receive id either way (libtorrent names our
    /// receive id); lodestone's own [`reset_for`] does as libutp does.
    fn reset_by_send_id(&self, from: SocketAddr, h: &Header) -> Option<StreamId> {
        if h.kind != PacketType::Reset {
            return None;
        }
        let id = h.connection_id;
        [id.wrapping_add(1), id.wrapping_sub(1)]
            .into_iter()
            .filter_map(|recv_id| self.by_key.get(&(from, recv_id)).copied())
            .find(|stream| self.conns.get(stream).is_some_and(|c| c.send_id() == id))
    }

    /// Drops a closed connection once nothing is left for the reader.
    fn reap(&mut self, id: StreamId) {
        if self.conns.get(&id).is_some_and(Conn::is_done) {
            self.remove(id);
        }
    }

    /// Forgets a connection that is done.
    fn remove(&mut self, id: StreamId) {
        if let Some(conn) = self.conns.remove(&id) {
            self.by_key.remove(&(conn.addr(), conn.recv_id));
        }
    }

    /// Queues bytes on a connection; returns how many fit in its send
    /// buffer (0: wait for [`Event::Writable`]).
    pub fn write(&mut self, id: StreamId, bytes: &[u8]) -> Result<usize, Error> {
        let conn = self.conns.get_mut(&id).ok_or(Error::UnknownStream)?;
        let n = conn.write(bytes);
        self.dirty.push(id);
        Ok(n)
    }

    /// Hands up to `max` delivered bytes to `sink`, in order, in one or two
    /// parts: `Ok(None)` when nothing is there yet (wait for
    /// [`Event::Readable`]), `Ok(Some(0))` at the end of the stream.
    pub fn read(
        &mut self,
        id: StreamId,
        max: usize,
        sink: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, Error> {
        let conn = self.conns.get_mut(&id).ok_or(Error::UnknownStream)?;
        let n = conn.read(max, sink);
        if conn.wants_flush() {
            self.dirty.push(id);
        }
        if conn.is_done() {
            self.remove(id);
        }
        Ok(n)
    }

    /// Closes gracefully: a FIN after everything written; the connection
    /// leaves once both sides are done ([`Event::Closed`]). What arrives
    /// meanwhile can still be read.
    pub fn close(&mut self, id: StreamId) {
        self.closing(id, Conn::close);
    }

    /// [`Self::close`] for a stream nobody will read again (it was
    /// dropped): what arrives meanwhile is acked and not kept.
    pub fn release(&mut self, id: StreamId) {
        self.closing(id, Conn::release);
    }

    fn closing(&mut self, id: StreamId, how: fn(&mut Conn)) {
        if let Some(conn) = self.conns.get_mut(&id) {
            how(conn);
            self.dirty.push(id);
            self.reap(id);
        }
    }

    /// Aborts with a RESET; no event follows.
    pub fn reset(&mut self, now: Instant, id: StreamId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let mut io = Self::io(self.epoch, now, &mut self.transmits, &mut self.events);
            conn.reset(&mut io);
            self.reap(id);
        }
    }

    /// The next datagram to send. Packetises data written since the last
    /// call first, so a burst of small writes shares packets.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Bytes)> {
        if self.transmits.is_empty() && !self.dirty.is_empty() {
            self.dirty.sort_unstable();
            self.dirty.dedup();
            let mut io = Self::io(self.epoch, now, &mut self.transmits, &mut self.events);
            for id in self.dirty.drain(..) {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.flush(&mut io);
                }
            }
        }
        let next = self.transmits.pop_front();
        if next.is_none() {
            self.undrained = 0;
        }
        next
    }

    /// The next thing the application should know.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Socket::handle_timeout`] is next due (exact).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.values().filter_map(Conn::deadline).min()
    }

    /// Time passed: retransmissions, dial and linger timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<StreamId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(conn) = self.conns.get_mut(&id) {
                let mut io = Self::io(self.epoch, now, &mut self.transmits, &mut self.events);
                conn.on_timeout(&mut io);
            }
            self.reap(id);
        }
    }

    /// Reads or writes left something to send: the driver should call
    /// [`Socket::poll_transmit`].
    pub fn needs_flush(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A connection's peer.
    pub fn peer_addr(&self, id: StreamId) -> Option<SocketAddr> {
        self.conns.get(&id).map(Conn::addr)
    }

    /// A connection's congestion window in bytes, for tests and logs.
    pub fn window(&self, id: StreamId) -> Option<usize> {
        self.conns.get(&id).map(Conn::window)
    }

    /// A connection's last measured queueing delay, for tests and logs.
    pub fn queuing_delay(&self, id: StreamId) -> Option<std::time::Duration> {
        self.conns.get(&id).map(Conn::queuing_delay)
    }
}

/// A RESET answering a packet for a connection we don't have.
fn reset_for(h: &Header, now: Instant, epoch: Instant) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    Packet {
        header: Header {
            kind: PacketType::Reset,
            connection_id: h.connection_id,
            timestamp_us: now.saturating_duration_since(epoch).as_micros() as u32,
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: 0,
            ack_nr: h.seq_nr,
        },
        sack: None,
        payload: &[],
    }
    .encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 6881))
    }

    fn packet(kind: PacketType, conn_id: u16, seq_nr: u16, payload: &[u8]) -> Vec<u8> {
        packet_acking(kind, conn_id, seq_nr, 0, payload)
    }

    fn packet_acking(
        kind: PacketType,
        conn_id: u16,
        seq_nr: u16,
        ack_nr: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        Packet {
            header: Header {
                kind,
                connection_id: conn_id,
                timestamp_us: 1,
                timestamp_diff_us: 0,
                wnd_size: 1 << 20,
                seq_nr,
                ack_nr,
            },
            sack: None,
            payload,
        }
        .encode(&mut out);
        out
    }

    fn syn(conn_id: u16) -> Vec<u8> {
        packet(PacketType::Syn, conn_id, 100, &[])
    }

    /// A socket with one connection accepted from `peer(1)`, whose SYN
    /// (id 4, sequence 100) is answered: its data starts at sequence 101
    /// and carries id 5 and the ack [`Accepted::ack`].
    fn accepted(now: Instant) -> Accepted {
        let mut s = Socket::new(Config::default(), 1, now);
        s.handle_datagram(now, peer(1), &syn(4));
        let Some(Event::Incoming(id, _)) = s.poll_event() else {
            panic!("no incoming connection");
        };
        let answer = acks(&mut s, now);
        // The peer acks the sequence our answer came before.
        let ack = answer[0].seq_nr.wrapping_sub(1);
        Accepted { s, id, ack }
    }

    struct Accepted {
        s: Socket,
        id: StreamId,
        /// The ack the peer's packets carry.
        ack: u16,
    }

    impl Accepted {
        /// A DATA packet from the peer.
        fn data(&self, seq: u16, payload: &[u8]) -> Vec<u8> {
            packet_acking(PacketType::Data, 5, seq, self.ack, payload)
        }
    }

    /// The STATE packets `s` sends now.
    fn acks(s: &mut Socket, now: Instant) -> Vec<Header> {
        std::iter::from_fn(|| s.poll_transmit(now))
            .filter_map(|(_, bytes)| Packet::parse(&bytes).ok().map(|p| p.header))
            .filter(|h| h.kind == PacketType::State)
            .collect()
    }

    #[test]
    fn in_order_data_is_acked_in_batches_or_after_a_short_delay() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        let every = u16::try_from(crate::conn::ACK_EVERY).expect("small");
        for seq in 101..101 + every - 1 {
            let data = a.data(seq, b"x");
            a.s.handle_datagram(t0, peer(1), &data);
            assert!(acks(&mut a.s, t0).is_empty(), "packet {seq} acked alone");
        }
        let data = a.data(100 + every, b"x");
        a.s.handle_datagram(t0, peer(1), &data);
        let batch = acks(&mut a.s, t0);
        assert_eq!(batch.len(), 1, "one ack for the batch");
        assert_eq!(batch[0].ack_nr, 100 + every);

        // A lone packet is acked once the delay runs out, not before.
        let data = a.data(101 + every, b"x");
        a.s.handle_datagram(t0, peer(1), &data);
        assert!(acks(&mut a.s, t0).is_empty());
        assert_eq!(a.s.poll_timeout(), Some(t0 + crate::conn::ACK_DELAY));
        a.s.handle_timeout(t0 + crate::conn::ACK_DELAY);
        let late = acks(&mut a.s, t0 + crate::conn::ACK_DELAY);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].ack_nr, 101 + every);
        assert_eq!(a.s.poll_timeout(), None, "nothing left to ack");
    }

    #[test]
    fn a_hole_is_acked_at_once_and_packets_a_window_past_it_are_kept() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        // 101 is lost; 800 packets of 1 KiB follow it (past the old reach of
        // 512, within the 1 MiB window).
        let payload = [7u8; 1024];
        for seq in 102..902 {
            let data = a.data(seq, &payload);
            a.s.handle_datagram(t0, peer(1), &data);
            let acked = acks(&mut a.s, t0);
            assert_eq!(acked.len(), 1, "packet {seq} past the hole acked at once");
            assert_eq!(acked[0].ack_nr, 100);
        }
        let data = a.data(101, &payload);
        a.s.handle_datagram(t0, peer(1), &data);
        let acked = acks(&mut a.s, t0);
        assert_eq!(acked.len(), 1, "the hole filled: acked at once");
        assert_eq!(acked[0].ack_nr, 901, "every packet past the hole was kept");
        let mut read = 0;
        while let Ok(Some(n)) = a.s.read(a.id, 65536, |_| {}) {
            if n == 0 {
                break;
            }
            read += n;
        }
        assert_eq!(read, 801 * 1024);
    }

    #[test]
    fn a_connection_closed_for_writing_still_reads() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        let state = packet_acking(PacketType::State, 5, 101, a.ack, &[]);
        a.s.handle_datagram(t0, peer(1), &state);
        a.s.close(a.id);
        while a.s.poll_transmit(t0).is_some() {}
        // Our FIN took a sequence number; the peer's ack may still lag.
        let data = a.data(101, b"reply");
        a.s.handle_datagram(t0, peer(1), &data);
        assert_eq!(a.s.read(a.id, 10, |_| {}), Ok(Some(5)));
    }

    #[test]
    fn a_released_connection_keeps_no_data_it_receives() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        // The peer is heard from, so our close sends a FIN and lingers.
        let state = packet_acking(PacketType::State, 5, 101, a.ack, &[]);
        a.s.handle_datagram(t0, peer(1), &state);
        a.s.release(a.id);
        while a.s.poll_transmit(t0).is_some() {}
        // Past a hole at 101, so none of it could be delivered anyway.
        for seq in 102..802 {
            let data = a.data(seq, &[0; 1400]);
            a.s.handle_datagram(t0, peer(1), &data);
        }
        let window = acks(&mut a.s, t0).last().expect("acked").wnd_size as usize;
        assert_eq!(window, Config::default().recv_buffer, "the window shrank");
    }

    #[test]
    fn a_packet_acking_nothing_we_sent_is_dropped_unheard() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        // A sender spoofing peer(1) knows the ids and its own sequence
        // numbers, not the ack: what it guesses wrong is dropped unread.
        for wrong in [
            a.ack.wrapping_add(1),
            a.ack.wrapping_sub(100),
            a.ack ^ 0x8000,
        ] {
            let spoofed = packet_acking(PacketType::Data, 5, 101, wrong, b"x");
            a.s.handle_datagram(t0, peer(1), &spoofed);
            assert!(acks(&mut a.s, t0).is_empty(), "ack {wrong} answered");
            assert_eq!(a.s.read(a.id, 10, |_| {}), Ok(None), "ack {wrong} read");
        }
        // The same packet with the right ack is taken.
        let data = a.data(101, b"x");
        a.s.handle_datagram(t0, peer(1), &data);
        assert_eq!(a.s.read(a.id, 10, |_| {}), Ok(Some(1)));
    }

    /// A RESET ends the connection only if its ack names something we
    /// sent, as a real peer's does; a spoofer knew the id and nothing else.
    #[test]
    fn a_reset_acking_nothing_we_sent_is_ignored() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        for wrong in [
            a.ack.wrapping_sub(100),
            a.ack ^ 0x8000,
            a.ack.wrapping_add(2),
        ] {
            let spoofed = packet_acking(PacketType::Reset, 5, 7, wrong, &[]);
            a.s.handle_datagram(t0, peer(1), &spoofed);
            assert!(a.s.poll_event().is_none(), "ack {wrong} reset us");
        }
        // One answering our STATE (which carries the next number) does.
        let reset = packet_acking(PacketType::Reset, 5, 7, a.ack.wrapping_add(1), &[]);
        a.s.handle_datagram(t0, peer(1), &reset);
        assert_eq!(
            a.s.poll_event(),
            Some(Event::Closed(a.id, crate::CloseReason::Reset))
        );
    }

    /// libutp's RESET carries the id of the packet that drew it: our send
    /// id (4 here, where we receive on 5). It was taken for a stray.
    #[test]
    fn a_reset_naming_our_send_id_ends_the_connection() {
        let t0 = Instant::now();
        let mut a = accepted(t0);
        let reset = packet_acking(PacketType::Reset, 4, 7, a.ack.wrapping_add(1), &[]);
        a.s.handle_datagram(t0, peer(1), &reset);
        assert_eq!(
            a.s.poll_event(),
            Some(Event::Closed(a.id, crate::CloseReason::Reset))
        );
        // Nor is a stray RESET answered.
        assert!(a.s.poll_transmit(t0).is_none());
    }

    #[test]
    fn syn_flood_is_bounded() {
        let now = Instant::now();
        let config = Config {
            max_connections: 8,
            ..Config::default()
        };
        let mut s = Socket::new(config, 1, now);
        for i in 0..100u16 {
            s.handle_datagram(now, peer(1), &syn(i * 2));
        }
        assert_eq!(s.len(), 8);
        // A repeated SYN is the same connection, answered again.
        while s.poll_transmit(now).is_some() {}
        s.handle_datagram(now, peer(1), &syn(0));
        assert_eq!(s.len(), 8);
        assert!(s.poll_transmit(now).is_some());
    }

    #[test]
    fn spoofed_syns_free_their_slots_when_closed() {
        let now = Instant::now();
        let mut s = Socket::new(Config::default(), 1, now);
        for i in 0..4u16 {
            s.handle_datagram(now, peer(3), &syn(i * 2));
        }
        let ids: Vec<StreamId> = std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                Event::Incoming(id, _) => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 4);
        while s.poll_transmit(now).is_some() {}
        // Nobody spoke after the SYN: closing frees the slot at once, with
        // no FIN to retransmit for a minute and a half.
        for id in ids {
            s.close(id);
        }
        assert_eq!(s.len(), 0);
        assert!(s.poll_transmit(now).is_none());
        assert!(s.poll_timeout().is_none());
    }

    /// A data packet for a connection nobody opened.
    fn stray_data() -> Vec<u8> {
        let mut data = syn(5);
        data[0] = 0x01; // ST_DATA, version 1
        data
    }

    #[test]
    fn stray_packets_are_reset_but_resets_are_not() {
        let now = Instant::now();
        let mut s = Socket::new(Config::default(), 1, now);
        s.handle_datagram(now, peer(2), &stray_data());
        let (to, reset) = s.poll_transmit(now).expect("a RESET");
        assert_eq!(to, peer(2));
        assert_eq!(
            Packet::parse(&reset).map(|p| p.header.kind),
            Ok(PacketType::Reset)
        );
        s.handle_datagram(now, peer(2), &reset);
        assert!(s.poll_transmit(now).is_none());
    }

    /// A flood of stray packets, fed with nobody draining the socket,
    /// queues at most [`UNDRAINED_DATAGRAMS`] RESETs; once drained, the
    /// socket takes datagrams again.
    #[test]
    fn a_flood_fed_without_draining_queues_a_bounded_number_of_replies() {
        let now = Instant::now();
        let mut s = Socket::new(Config::default(), 1, now);
        let data = stray_data();
        for i in 0..4 * UNDRAINED_DATAGRAMS {
            let from = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 6881));
            s.handle_datagram(now, from, &data);
        }
        let queued = std::iter::from_fn(|| s.poll_transmit(now)).count();
        assert_eq!(queued, UNDRAINED_DATAGRAMS);
        s.handle_datagram(now, peer(2), &data);
        assert!(s.poll_transmit(now).is_some(), "drained: a RESET again");
    }

    proptest! {
        /// Arbitrary datagrams, some with a valid header for the open
        /// connection, never panic and never grow the socket unboundedly.
        #[test]
        fn hostile_datagrams_are_survived(
            packets in proptest::collection::vec(
                (any::<u8>(), any::<[u8; 19]>(), proptest::collection::vec(any::<u8>(), 0..64)),
                0..64,
            )
        ) {
            let t0 = Instant::now();
            let mut s = Socket::new(Config { max_connections: 4, ..Config::default() }, 3, t0);
            let dial = s.connect(t0, peer(9)).expect("room");
            for (i, (first, rest, tail)) in packets.iter().enumerate() {
                let now = t0 + std::time::Duration::from_millis(i as u64 * 50);
                let mut bytes = vec![(first & 0xf0) | 1];
                bytes.extend_from_slice(rest);
                bytes.extend_from_slice(tail);
                s.handle_datagram(now, peer(9), &bytes);
                s.handle_timeout(now);
                let _ = s.write(dial, b"x");
                let _ = s.read(dial, 32, |_| {});
                while s.poll_transmit(now).is_some() {}
                while s.poll_event().is_some() {}
                prop_assert!(s.len() <= 4);
            }
        }
    }
}
