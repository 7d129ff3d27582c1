//! One uTP connection: sequence and ack numbers, the send queue with its
//! retransmissions, the receive side with its reorder buffer, and close.
//!
//! The socket owns every connection and hands each call the current time and
//! the queues it writes datagrams and events into; a connection never reads a
//! clock or touches a socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::congestion::{Ledbat, Rtt};
use crate::packet::{Header, MAX_SACK_BYTES, Packet, PacketType, seq_lt};
use crate::{CloseReason, Config, Event, StreamId};

/// SYNs sent before the dial is given up.
const SYN_ATTEMPTS: u32 = 3;
/// Retransmission timeouts in a row before the peer is declared gone.
const MAX_TIMEOUTS: u32 = 6;
/// After our FIN is acked, how long we wait for the peer's.
const LINGER: Duration = Duration::from_secs(10);
/// Dup acks (or packets sacked past a hole) that mean a loss (BEP 29).
const DUP_ACKS: u32 = 3;
/// How much older than the oldest packet in flight an ack may be, for a
/// packet reordered behind later ones (libutp allows as many as it counts
/// duplicate acks).
const ACK_SLACK: u16 = 3;
/// In-order data packets acked by one STATE. Acking every packet cost a
/// fast sender as many datagrams in as it sent out: three libtorrent
/// seeders at 170 MB/s over loopback overflowed their socket buffers with
/// our acks, lost our requests with them, and stalled on retransmission
/// timeouts, so 256 MiB took 7-17 s; acking every 16th took 1.5 s.
pub(crate) const ACK_EVERY: u32 = 16;
/// The longest an in-order packet waits for its ack: short against any
/// real round trip, so a sender with a small window is hardly held back.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(2);

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// We sent a SYN and wait for the STATE answering it.
    SynSent { attempts: u32 },
    /// Data flows.
    Connected,
    /// Closed: the socket removes it.
    Closed,
}

/// A packet sent and not yet acknowledged.
#[derive(Debug)]
struct Sent {
    seq: u16,
    kind: PacketType,
    /// The payload as first sent: a view into that datagram, shared with
    /// the transmit queue rather than copied.
    payload: Bytes,
    sent_at: Instant,
    transmissions: u32,
    /// Received, per a selective ack: out of the window, not resent.
    sacked: bool,
    /// Declared lost: resent when the window allows.
    lost: bool,
}

/// What a call gives the socket to put on the wire and to report.
pub(crate) struct Io<'a> {
    pub now: Instant,
    /// Our clock in wrapping microseconds.
    pub timestamp_us: u32,
    pub transmits: &'a mut VecDeque<(SocketAddr, Bytes)>,
    pub events: &'a mut VecDeque<Event>,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    id: StreamId,
    addr: SocketAddr,
    /// The id peers put on packets to us.
    pub recv_id: u16,
    send_id: u16,
    state: State,
    mss: usize,
    send_cap: usize,
    recv_cap: usize,

    /// Sequence number of the next DATA/FIN we send.
    seq_nr: u16,
    /// Bytes written and not yet packetised.
    send_buf: VecDeque<u8>,
    /// Sent and unacked, oldest first, consecutive sequence numbers.
    inflight: VecDeque<Sent>,
    /// Payload bytes in `inflight` neither sacked nor lost.
    inflight_bytes: usize,
    peer_wnd: usize,
    rtt: Rtt,
    cc: Ledbat,
    rto_at: Option<Instant>,
    timeouts: u32,
    last_ack: u16,
    dup_acks: u32,
    /// `write` refused bytes: say Writable when space frees.
    write_blocked: bool,
    close_requested: bool,
    /// The application dropped its stream: nothing received is read.
    reader_gone: bool,
    fin_sent: bool,
    linger_until: Option<Instant>,

    /// Last sequence number received in order.
    ack_nr: u16,
    /// In-order bytes for the reader.
    recv_buf: VecDeque<u8>,
    /// Packets past a hole: slot `i` holds sequence `ack_nr + 1 + i`.
    reorder: VecDeque<Option<Vec<u8>>>,
    reorder_bytes: usize,
    /// Sequence number of the peer's FIN, once seen.
    peer_fin: Option<u16>,
    /// Every byte up to the peer's FIN is delivered.
    eof: bool,
    /// Something arrived that the peer should hear acked now.
    ack_due: bool,
    /// In-order data packets received since our last packet to the peer
    /// (every packet we send carries the ack).
    unacked: u32,
    /// When the oldest of them must be acked at the latest.
    ack_at: Option<Instant>,
    /// A packet other than its SYN came from the peer: it exists (a SYN
    /// alone may come from a spoofed address).
    heard: bool,
    /// Our clock minus the peer's timestamp on its last packet, echoed back.
    reply_diff_us: u32,
}

impl Conn {
    /// An outgoing connection; the caller sends [`Conn::syn`].
    pub fn dial(id: StreamId, addr: SocketAddr, recv_id: u16, seq: u16, config: &Config) -> Self {
        // The SYN takes `seq`; data starts after it.
        let mut c = Conn::new(
            id,
            addr,
            recv_id,
            recv_id.wrapping_add(1),
            seq.wrapping_add(1),
            config,
        );
        c.state = State::SynSent { attempts: 0 };
        c
    }

    /// An incoming connection from `syn`; answers it with a STATE.
    pub fn accept(
        id: StreamId,
        addr: SocketAddr,
        syn: &Header,
        seq: u16,
        config: &Config,
        io: &mut Io<'_>,
    ) -> Self {
        let mut c = Conn::new(
            id,
            addr,
            syn.connection_id.wrapping_add(1),
            syn.connection_id,
            seq,
            config,
        );
        c.ack_nr = syn.seq_nr;
        c.peer_wnd = syn.wnd_size as usize;
        c.reply_diff_us = io.timestamp_us.wrapping_sub(syn.timestamp_us);
        c.ack_due = true;
        c.flush(io);
        c
    }

    fn new(
        id: StreamId,
        addr: SocketAddr,
        recv_id: u16,
        send_id: u16,
        seq: u16,
        config: &Config,
    ) -> Self {
        Conn {
            id,
            addr,
            recv_id,
            send_id,
            state: State::Connected,
            mss: config.max_payload,
            send_cap: config.send_buffer,
            recv_cap: config.recv_buffer,
            seq_nr: seq,
            send_buf: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            peer_wnd: config.max_payload,
            rtt: Rtt::new(),
            cc: Ledbat::new(
                config.max_payload,
                config.max_window_per_ms,
                config.target_delay,
            ),
            rto_at: None,
            timeouts: 0,
            last_ack: 0,
            dup_acks: 0,
            write_blocked: false,
            close_requested: false,
            reader_gone: false,
            fin_sent: false,
            linger_until: None,
            ack_nr: 0,
            recv_buf: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            peer_fin: None,
            eof: false,
            ack_due: false,
            unacked: 0,
            ack_at: None,
            heard: false,
            reply_diff_us: 0,
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closed and nothing left for the reader (or the reader left): the
    /// socket drops it.
    pub fn is_done(&self) -> bool {
        self.state == State::Closed && (self.recv_buf.is_empty() || self.close_requested)
    }

    /// The congestion window, for tests and logs.
    pub fn window(&self) -> usize {
        self.cc.window()
    }

    /// The connection id our packets carry.
    pub fn send_id(&self) -> u16 {
        self.send_id
    }

    /// The last measured queueing delay.
    pub fn queuing_delay(&self) -> Duration {
        self.cc.queuing_delay()
    }

    /// Sends (or resends) the SYN.
    pub fn syn(&mut self, io: &mut Io<'_>) {
        let State::SynSent { attempts } = &mut self.state else {
            return;
        };
        *attempts += 1;
        let header = Header {
            kind: PacketType::Syn,
            connection_id: self.recv_id,
            timestamp_us: io.timestamp_us,
            timestamp_diff_us: 0,
            wnd_size: self.recv_window(),
            seq_nr: self.seq_nr.wrapping_sub(1),
            ack_nr: 0,
        };
        self.transmit(io, header, None, &[]);
        self.rto_at = Some(io.now + self.rtt.rto());
    }

    fn recv_window(&self) -> u32 {
        let used = self.recv_buf.len() + self.reorder_bytes;
        u32::try_from(self.recv_cap.saturating_sub(used)).unwrap_or(u32::MAX)
    }

    fn header(&self, kind: PacketType, seq_nr: u16, io: &Io<'_>) -> Header {
        Header {
            kind,
            connection_id: self.send_id,
            timestamp_us: io.timestamp_us,
            timestamp_diff_us: self.reply_diff_us,
            wnd_size: self.recv_window(),
            seq_nr,
            ack_nr: self.ack_nr,
        }
    }

    /// The selective-ack mask for the reorder buffer, if anything is in it.
    fn sack(&self, mask: &mut [u8; MAX_SACK_BYTES]) -> Option<usize> {
        if !self.reorder.iter().any(Option::is_some) {
            return None;
        }
        // Slot 0 is ack_nr + 1, never present; bit i is slot i + 1.
        let bits = self.reorder.len().saturating_sub(1).min(MAX_SACK_BYTES * 8);
        let len = bits.div_ceil(32).max(1) * 4;
        mask[..len].fill(0);
        for i in 0..bits {
            if self.reorder.get(i + 1).is_some_and(Option::is_some) {
                mask[i / 8] |= 1 << (i % 8);
            }
        }
        Some(len)
    }

    /// Encodes a packet whose payload is at hand and queues it.
    fn transmit(&mut self, io: &mut Io<'_>, header: Header, sack: Option<&[u8]>, payload: &[u8]) {
        let mut out = encode_head(header, sack, payload.len());
        out.extend_from_slice(payload);
        self.queue(io, Bytes::from(out));
    }

    /// Puts a datagram on the wire; it carries our latest ack.
    fn queue(&mut self, io: &mut Io<'_>, datagram: Bytes) {
        io.transmits.push_back((self.addr, datagram));
        self.ack_due = false;
        self.unacked = 0;
        self.ack_at = None;
    }

    /// A bare STATE: the ack (and selective ack) with no data.
    fn send_ack(&mut self, io: &mut Io<'_>, sack: Option<&[u8]>) {
        let header = self.header(PacketType::State, self.seq_nr, io);
        self.transmit(io, header, sack, &[]);
    }

    /// Sends what the windows allow: lost packets first, then new data,
    /// then a FIN once everything written is out, then a bare ack if one is
    /// still owed.
    pub fn flush(&mut self, io: &mut Io<'_>) {
        if self.state != State::Connected {
            return;
        }
        let mut mask = [0u8; MAX_SACK_BYTES];
        let sack_len = self.sack(&mut mask);
        let sack = sack_len.map(|n| &mask[..n]);
        let window = self.cc.window().min(self.peer_wnd);
        // Resends, oldest first; the oldest one holds everything up, so it
        // goes regardless of the window (fast retransmit).
        for i in 0..self.inflight.len() {
            let p = &self.inflight[i];
            if !p.lost || p.sacked {
                continue;
            }
            if i > 0 && self.inflight_bytes > 0 && self.inflight_bytes + p.payload.len() > window {
                break;
            }
            let header = self.header(p.kind, p.seq, io);
            let payload = p.payload.clone();
            self.transmit(io, header, sack, &payload);
            let p = &mut self.inflight[i];
            p.lost = false;
            p.transmissions += 1;
            p.sent_at = io.now;
            self.inflight_bytes += p.payload.len();
        }
        // New data.
        while !self.send_buf.is_empty()
            && self.inflight.len() < crate::MAX_INFLIGHT_PACKETS
            && (self.inflight_bytes == 0
                || self.inflight_bytes + self.mss.min(self.send_buf.len()) <= window)
        {
            let len = self.mss.min(self.send_buf.len());
            self.send_new(io, PacketType::Data, len, sack);
        }
        if self.write_blocked && self.send_buf.len() < self.send_cap {
            self.write_blocked = false;
            io.events.push_back(Event::Writable(self.id));
        }
        if self.close_requested
            && !self.fin_sent
            && self.send_buf.is_empty()
            && self.inflight.len() < crate::MAX_INFLIGHT_PACKETS
        {
            self.fin_sent = true;
            self.send_new(io, PacketType::Fin, 0, sack);
        }
        if self.ack_due {
            self.send_ack(io, sack);
        }
    }

    /// Sends a new packet carrying the next `len` bytes of the send buffer.
    /// They are copied once, straight behind the header; the payload kept
    /// for a resend is a view into that same datagram.
    fn send_new(&mut self, io: &mut Io<'_>, kind: PacketType, len: usize, sack: Option<&[u8]>) {
        let seq = self.seq_nr;
        self.seq_nr = seq.wrapping_add(1);
        let header = self.header(kind, seq, io);
        let mut datagram = encode_head(header, sack, len);
        let payload_at = datagram.len();
        take_front(&mut self.send_buf, len, |part| {
            datagram.extend_from_slice(part);
        });
        let datagram = Bytes::from(datagram);
        let payload = datagram.slice(payload_at..);
        self.queue(io, datagram);
        self.inflight_bytes += payload.len();
        self.inflight.push_back(Sent {
            seq,
            kind,
            payload,
            sent_at: io.now,
            transmissions: 1,
            sacked: false,
            lost: false,
        });
        if self.rto_at.is_none() {
            self.rto_at = Some(io.now + self.rtt.rto());
        }
    }

    /// A packet for this connection arrived.
    pub fn on_packet(&mut self, p: &Packet<'_>, io: &mut Io<'_>) {
        let h = &p.header;
        if h.kind == PacketType::Reset {
            if self.answers_what_we_sent(h.ack_nr) {
                self.close_with(CloseReason::Reset, io);
            }
            return;
        }
        if h.kind == PacketType::Syn {
            // Our STATE was lost: the next flush answers again.
            self.ack_due = self.state == State::Connected;
            return;
        }
        if !self.acks_what_we_sent(h.ack_nr) {
            return;
        }
        self.heard = true;
        if let State::SynSent { .. } = self.state {
            // The first packet back names the sequence the peer starts from.
            self.state = State::Connected;
            self.ack_nr = h.seq_nr.wrapping_sub(1);
            self.last_ack = h.ack_nr;
            self.rto_at = None;
            self.timeouts = 0;
            io.events.push_back(Event::Connected(self.id));
        }
        if self.state == State::Closed {
            return;
        }
        self.reply_diff_us = io.timestamp_us.wrapping_sub(h.timestamp_us);
        self.peer_wnd = h.wnd_size as usize;
        self.on_ack(p, io);
        match h.kind {
            PacketType::Data => self.on_data(h.seq_nr, p.payload, io),
            PacketType::Fin => {
                if self.peer_fin.is_none() && !seq_lt(h.seq_nr, self.ack_nr.wrapping_add(1)) {
                    self.peer_fin = Some(h.seq_nr);
                }
                self.on_data(h.seq_nr, &[], io);
            }
            _ => {}
        }
        self.check_done(io);
    }

    /// Whether `ack` names one of the last packets we sent: at most
    /// [`ACK_SLACK`] older than the last one acked. As libutp does,
    /// anything else is dropped unread. Only a packet that passes proves
    /// the peer hears us (`heard`), or answers our SYN: the ack must echo a
    /// sequence number we drew at random, which a sender spoofing the
    /// address cannot see, where the connection id and its own sequence
    /// numbers are its to choose.
    fn acks_what_we_sent(&self, ack: u16) -> bool {
        let newest = self.seq_nr.wrapping_sub(1);
        let inflight = u16::try_from(self.inflight.len()).unwrap_or(u16::MAX);
        newest.wrapping_sub(ack) <= inflight.saturating_add(ACK_SLACK)
    }

    /// Whether a RESET with `ack` answers a packet we sent lately. libutp
    /// and libtorrent both put the sequence number of the packet that drew
    /// a RESET in its ack, and an ACK-only STATE carries our next number,
    /// so that one counts too. Anything else is ignored: otherwise a
    /// sender spoofing the peer's address ended the connection by guessing
    /// only its 16-bit id.
    fn answers_what_we_sent(&self, ack: u16) -> bool {
        ack == self.seq_nr || self.acks_what_we_sent(ack)
    }

    fn on_ack(&mut self, p: &Packet<'_>, io: &mut Io<'_>) {
        let ack = p.header.ack_nr;
        tracing::trace!(
            addr = %self.addr,
            kind = ?p.header.kind,
            ack,
            wnd = p.header.wnd_size,
            sack = ?p.sack,
            oldest = ?self.inflight.front().map(|s| s.seq),
            cwnd = self.cc.window(),
            "uTP packet"
        );
        let mut acked = 0;
        let mut sample = None;
        let mut progressed = false;
        while let Some(front) = self.inflight.front() {
            if !seq_lt(front.seq, ack.wrapping_add(1)) {
                break;
            }
            let Some(sent) = self.inflight.pop_front() else {
                break;
            };
            progressed = true;
            if !sent.sacked && !sent.lost {
                self.inflight_bytes -= sent.payload.len();
            }
            if !sent.sacked {
                acked += sent.payload.len();
            }
            if sent.transmissions == 1 {
                sample = Some(io.now.saturating_duration_since(sent.sent_at));
            }
        }
        let mut newest_sacked = None;
        if let Some(mask) = p.sack {
            let base = ack.wrapping_add(2);
            for p in self.inflight.iter_mut() {
                let bit = usize::from(p.seq.wrapping_sub(base));
                if bit >= mask.len() * 8 || mask[bit / 8] & (1 << (bit % 8)) == 0 {
                    continue;
                }
                if !p.sacked {
                    p.sacked = true;
                    if !p.lost {
                        self.inflight_bytes -= p.payload.len();
                    }
                    acked += p.payload.len();
                    if p.transmissions == 1 {
                        sample = Some(io.now.saturating_duration_since(p.sent_at));
                    }
                }
                newest_sacked = Some(p.sent_at.max(newest_sacked.unwrap_or(p.sent_at)));
            }
        }
        if let Some(rtt) = sample {
            self.rtt.sample(rtt);
            self.cc.set_base_rtt(self.rtt.least());
        }
        let mut lost = false;
        if progressed {
            self.dup_acks = 0;
            self.timeouts = 0;
            self.rto_at = (!self.inflight.is_empty()).then(|| io.now + self.rtt.rto());
        } else if ack == self.last_ack
            && p.header.kind == PacketType::State
            && !self.inflight.is_empty()
        {
            self.dup_acks += 1;
            if self.dup_acks == DUP_ACKS {
                lost |= self.mark_lost(0);
            }
        }
        self.last_ack = ack;
        // Anything sent before a packet sacked DUP_ACKS times over is lost.
        if newest_sacked.is_some() {
            let mut later = 0;
            for i in (0..self.inflight.len()).rev() {
                if self.inflight[i].sacked {
                    later += 1;
                } else if later >= DUP_ACKS && self.inflight[i].transmissions == 1 {
                    lost |= self.mark_lost(i);
                }
            }
        }
        if lost {
            self.cc.on_loss(io.now, self.rtt.srtt());
        }
        // Zero means the peer has no measurement yet.
        let delay = Some(p.header.timestamp_diff_us).filter(|&d| d != 0);
        self.cc.on_ack(io.now, acked, delay);
    }

    /// Marks `inflight[i]` lost; true if it wasn't already.
    fn mark_lost(&mut self, i: usize) -> bool {
        let Some(p) = self.inflight.get_mut(i) else {
            return false;
        };
        if p.lost || p.sacked {
            return false;
        }
        p.lost = true;
        self.inflight_bytes -= p.payload.len();
        true
    }

    fn on_data(&mut self, seq: u16, payload: &[u8], io: &mut Io<'_>) {
        let next = self.ack_nr.wrapping_add(1);
        self.schedule_ack(seq == next && !payload.is_empty(), io.now);
        if seq_lt(seq, next) {
            return; // a duplicate: the ack tells the peer again
        }
        // Once the reader is gone the sequence still counts, so acks and
        // the FIN go on as before, but no byte is kept. A peer could
        // otherwise pin a full receive window for as long as our FIN is
        // retransmitted.
        let payload = if self.reader_gone { &[] } else { payload };
        if self.peer_fin.is_some_and(|fin| seq_lt(fin, seq)) {
            return; // past the end the peer announced
        }
        let slot = usize::from(seq.wrapping_sub(next));
        if slot >= crate::REORDER_REACH
            || self.recv_buf.len() + self.reorder_bytes + payload.len() > self.recv_cap
        {
            return; // outside our window
        }
        if slot > 0 {
            if self.reorder.len() <= slot {
                self.reorder.resize(slot + 1, None);
            }
            if self.reorder[slot].is_none() {
                self.reorder_bytes += payload.len();
                self.reorder[slot] = Some(payload.to_vec());
            }
            return;
        }
        let was_empty = self.recv_buf.is_empty();
        self.deliver(payload);
        self.reorder.pop_front();
        while let Some(Some(_)) = self.reorder.front() {
            let Some(Some(bytes)) = self.reorder.pop_front() else {
                break;
            };
            self.reorder_bytes -= bytes.len();
            self.deliver(&bytes);
        }
        if was_empty && (!self.recv_buf.is_empty() || self.eof) {
            io.events.push_back(Event::Readable(self.id));
        }
    }

    /// Decides when a data packet (or FIN) just received is acked. The
    /// next expected one, with no hole behind it, may wait for
    /// [`ACK_EVERY`] or [`ACK_DELAY`]; anything else (a duplicate, a packet
    /// past a hole, the one filling it, a FIN) tells the sender about a
    /// loss or an end and is acked at once.
    fn schedule_ack(&mut self, in_order: bool, now: Instant) {
        if !in_order || !self.reorder.is_empty() {
            self.ack_due = true;
            return;
        }
        self.unacked += 1;
        if self.unacked >= ACK_EVERY {
            self.ack_due = true;
        } else {
            self.ack_at.get_or_insert(now + ACK_DELAY);
        }
    }

    fn deliver(&mut self, bytes: &[u8]) {
        self.ack_nr = self.ack_nr.wrapping_add(1);
        if self.peer_fin == Some(self.ack_nr) {
            self.eof = true;
            self.reorder.clear();
            self.reorder_bytes = 0;
        } else {
            self.recv_buf.extend(bytes);
        }
    }

    /// Takes written bytes, up to the send buffer's room.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        if self.close_requested || self.state == State::Closed {
            return 0;
        }
        let n = bytes
            .len()
            .min(self.send_cap.saturating_sub(self.send_buf.len()));
        self.send_buf.extend(&bytes[..n]);
        if n < bytes.len() {
            self.write_blocked = true;
        }
        n
    }

    /// Hands up to `max` received bytes to `sink`, in order, in one or two
    /// parts (as they lie in the ring buffer), so the caller copies them
    /// where it wants them with no buffer to clear first; `None` when
    /// nothing is there yet. `Some(0)` means the peer closed and everything
    /// was read.
    pub fn read(&mut self, max: usize, sink: impl FnMut(&[u8])) -> Option<usize> {
        if self.recv_buf.is_empty() {
            return (self.eof || self.state == State::Closed).then_some(0);
        }
        let before = self.recv_window() as usize;
        let n = max.min(self.recv_buf.len());
        take_front(&mut self.recv_buf, n, sink);
        // The peer may be stalled on a closed window: tell it it opened.
        if before < 2 * self.mss && self.recv_window() as usize >= 2 * self.mss {
            self.ack_due = true;
        }
        Some(n)
    }

    /// Whether there is anything to send right now.
    pub fn wants_flush(&self) -> bool {
        self.ack_due || !self.send_buf.is_empty() || (self.close_requested && !self.fin_sent)
    }

    /// Sends a FIN once everything written is delivered. A connection the
    /// peer never spoke on after its SYN closes at once: a flood of spoofed
    /// SYNs must not hold slots for the FIN's retransmissions.
    pub fn close(&mut self) {
        if matches!(self.state, State::SynSent { .. }) || !self.heard {
            self.stop();
        }
        self.close_requested = true;
    }

    /// The application dropped its stream: [`Self::close`], and nothing
    /// received from now on is kept, only acked.
    pub fn release(&mut self) {
        self.reader_gone = true;
        self.close();
    }

    /// Aborts: a RESET to the peer, and closed at once.
    pub fn reset(&mut self, io: &mut Io<'_>) {
        if self.state == State::Connected {
            let header = self.header(PacketType::Reset, self.seq_nr, io);
            self.transmit(io, header, None, &[]);
        }
        self.stop();
    }

    /// Closed, with no timer left to fire.
    fn stop(&mut self) {
        self.state = State::Closed;
        self.rto_at = None;
        self.linger_until = None;
        self.ack_at = None;
    }

    fn close_with(&mut self, reason: CloseReason, io: &mut Io<'_>) {
        if reason == CloseReason::Done && self.ack_due {
            // The ack of the peer's FIN: without it the peer would linger.
            self.send_ack(io, None);
        }
        if self.state != State::Closed {
            tracing::debug!(addr = %self.addr, ?reason, "uTP closed");
            self.stop();
            io.events.push_back(Event::Closed(self.id, reason));
        }
    }

    /// Both sides sent FIN and ours is acked: done. Ours acked and the peer
    /// silent: wait a while for its FIN.
    fn check_done(&mut self, io: &mut Io<'_>) {
        if self.fin_sent && self.inflight.is_empty() {
            if self.eof {
                self.close_with(CloseReason::Done, io);
            } else if self.linger_until.is_none() {
                self.linger_until = Some(io.now + LINGER);
            }
        }
    }

    /// When [`Conn::on_timeout`] is next due.
    pub fn deadline(&self) -> Option<Instant> {
        [self.rto_at, self.linger_until, self.ack_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time passed: resend what timed out, give up on a dead peer.
    pub fn on_timeout(&mut self, io: &mut Io<'_>) {
        if self.linger_until.is_some_and(|t| t <= io.now) {
            self.close_with(CloseReason::Done, io);
            return;
        }
        if self.ack_at.is_some_and(|t| t <= io.now) {
            self.ack_at = None;
            if self.state == State::Connected {
                self.send_ack(io, None);
            }
        }
        let Some(at) = self.rto_at else { return };
        if at > io.now {
            return;
        }
        self.rtt.back_off();
        if let State::SynSent { attempts } = self.state {
            if attempts >= SYN_ATTEMPTS {
                self.close_with(CloseReason::TimedOut, io);
            } else {
                self.syn(io);
            }
            return;
        }
        if self.inflight.is_empty() {
            self.rto_at = None;
            return;
        }
        self.timeouts += 1;
        tracing::debug!(
            addr = %self.addr,
            inflight = self.inflight.len(),
            cwnd = self.cc.window(),
            peer_wnd = self.peer_wnd,
            "uTP retransmission timeout"
        );
        if self.timeouts > MAX_TIMEOUTS {
            self.close_with(CloseReason::TimedOut, io);
            return;
        }
        // Everything unacked is presumed lost; the window restarts at one
        // packet, so the oldest goes first.
        for i in 0..self.inflight.len() {
            self.mark_lost(i);
        }
        self.cc.on_timeout();
        self.rto_at = Some(io.now + self.rtt.rto());
        self.flush(io);
    }
}

/// A packet's header and selective ack, in a buffer with room for the
/// `payload` bytes the caller appends.
fn encode_head(header: Header, sack: Option<&[u8]>, payload: usize) -> Vec<u8> {
    let len = crate::packet::HEADER_LEN + sack.map_or(0, |mask| 2 + mask.len()) + payload;
    let mut out = Vec::with_capacity(len);
    Packet {
        header,
        sack,
        payload: &[],
    }
    .encode(&mut out);
    out
}

/// Removes the first `n` bytes of `deque` (it holds at least that many),
/// handing them to `sink` a slice at a time (two at most): moving them one
/// byte per step instead, as collecting a drain does, was 17 % of a uTP
/// seeder's CPU.
fn take_front(deque: &mut VecDeque<u8>, n: usize, mut sink: impl FnMut(&[u8])) {
    let (front, back) = deque.as_slices();
    let from_front = n.min(front.len());
    sink(&front[..from_front]);
    if from_front < n {
        sink(&back[..n - from_front]);
    }
    deque.drain(..n);
}
