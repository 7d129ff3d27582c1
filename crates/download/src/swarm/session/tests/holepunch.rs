//! BEP 55 in the sans-IO session: the relay's decision, the target's and
//! initiator's reaction to `connect`, the initiator's rendezvous, and the
//! bound on what a peer can make us do.

use lodestone_wire::holepunch::{HOLEPUNCH_BURST, HolepunchErrorCode, HolepunchMessage};

use super::*;

/// The id the test peers receive ut_holepunch under.
const THEIR_ID: u8 = 7;

/// An extension handshake offering ut_pex, ut_holepunch if `holepunch`,
/// and listening on `port`.
fn handshake(port: u16, holepunch: bool) -> Message {
    let mut m: std::collections::BTreeMap<String, u8> = [(UT_PEX.to_owned(), 9)].into();
    if holepunch {
        m.insert(UT_HOLEPUNCH.to_owned(), THEIR_ID);
    }
    ExtendedHandshake {
        m,
        p: Some(port),
        ..ExtendedHandshake::default()
    }
    .to_message()
}

fn holepunch(message: HolepunchMessage) -> Message {
    message.to_message(OUR_UT_HOLEPUNCH_ID)
}

/// The ut_holepunch messages among `out`, decoded.
fn sent(out: Vec<Message>) -> Vec<HolepunchMessage> {
    out.into_iter()
        .filter_map(|m| match m {
            Message::Extended {
                id: THEIR_ID,
                payload,
            } => HolepunchMessage::decode(&payload).ok(),
            _ => None,
        })
        .collect()
}

/// Another session on the torrent: peer `key` at `addr`, handshaken.
fn peer(
    t: &mut Torrent,
    config: &SessionConfig,
    key: u32,
    addr: SocketAddr,
    hello: Message,
    now: Instant,
) -> PeerSession {
    let mut s = PeerSession::new(
        now,
        config.clone(),
        PeerKey(key),
        (Reserved::LODESTONE, addr),
        Greeting::Fresh,
        t,
    );
    s.handle_message(now, hello);
    take_listening(&mut s);
    s.update(now, t);
    drain(&mut s);
    s
}

/// Takes the event every handshake here raises: the peer dialed us, and
/// its `p` says where it listens.
fn take_listening(s: &mut PeerSession) {
    assert!(matches!(s.poll_event(), Some(PeerEvent::Listening(_))));
}

/// The initiator (the session of `setup`, at 10.0.0.1:6881, listening on
/// 7001), a target at 10.0.0.2 that dialed us from port 40000 and
/// listens on 7002, and a peer at 10.0.0.3:7003 without ut_holepunch.
fn three_peers() -> (Torrent, PeerSession, PeerSession, Instant) {
    let (mut t, mut s, now) = setup(Reserved::LODESTONE);
    s.handle_message(now, handshake(7001, true));
    take_listening(&mut s);
    s.update(now, &mut t);
    drain(&mut s);
    let config = s.config.clone();
    let target = peer(
        &mut t,
        &config,
        2,
        addr(2, 40000),
        handshake(7002, true),
        now,
    );
    peer(
        &mut t,
        &config,
        3,
        addr(3, 7003),
        handshake(7003, false),
        now,
    );
    (t, s, target, now)
}

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

#[test]
fn ut_holepunch_is_offered_only_when_on_and_never_without_pex() {
    let offered = |pex: bool, holepunch: bool| {
        let (mut t, s, now) = start(Reserved::LODESTONE, &[], Greeting::Fresh);
        let mut config = s.config.clone();
        (config.pex, config.holepunch) = (pex, holepunch);
        let peer = (Reserved::LODESTONE, s.addr);
        let mut s = PeerSession::new(now, config, PeerKey(5), peer, Greeting::Fresh, &mut t);
        drain(&mut s)
            .into_iter()
            .find_map(|m| match m {
                Message::Extended { id: 0, payload } => ExtendedHandshake::decode(&payload).ok(),
                _ => None,
            })
            .expect("our extension handshake")
            .extension_id(UT_HOLEPUNCH)
    };
    assert_eq!(offered(true, true), Some(OUR_UT_HOLEPUNCH_ID));
    assert_eq!(offered(true, false), None);
    // A private torrent: no PEX, so no holepunching either.
    assert_eq!(offered(false, true), None);
}

#[test]
fn a_relay_sends_connect_to_both_sides() {
    let (mut t, mut s, mut target, now) = three_peers();
    // By its listen address, as PEX names it.
    s.handle_message(now, holepunch(HolepunchMessage::rendezvous(addr(2, 7002))));
    s.update(now, &mut t);
    assert_eq!(
        sent(drain(&mut s)),
        [HolepunchMessage::connect(addr(2, 7002))]
    );
    // The target is told the initiator's listen address, not its
    // connection's port.
    let Some(Action::Holepunch { peer, message }) = t.poll_action() else {
        panic!("no connect for the target");
    };
    assert_eq!(peer, PeerKey(2));
    assert_eq!(message, HolepunchMessage::connect(addr(1, 7001)));
    target.handle_command(now, PeerCmd::Holepunch(Box::new(message)));
    assert_eq!(sent(drain(&mut target)), [message]);
}

#[test]
fn a_relay_that_cannot_help_says_why() {
    let (mut t, mut s, _target, now) = three_peers();
    let cases = [
        (addr(9, 7009), HolepunchErrorCode::NotConnected),
        (addr(3, 7003), HolepunchErrorCode::NoSupport),
        (addr(1, 7001), HolepunchErrorCode::NoSelf),
        (addr(2, 0), HolepunchErrorCode::NoSuchPeer),
    ];
    for (target, code) in cases {
        s.handle_message(now, holepunch(HolepunchMessage::rendezvous(target)));
        s.update(now, &mut t);
        assert_eq!(sent(drain(&mut s)), [HolepunchMessage::error(target, code)]);
    }
    assert_eq!(t.poll_action(), None, "nobody else was bothered");
}

#[test]
fn a_peer_without_ut_holepunch_is_ignored() {
    let (mut t, s, _target, now) = three_peers();
    let config = s.config.clone();
    let mut mute = peer(
        &mut t,
        &config,
        4,
        addr(4, 7004),
        handshake(7004, false),
        now,
    );
    mute.handle_message(now, holepunch(HolepunchMessage::rendezvous(addr(2, 7002))));
    mute.handle_message(now, holepunch(HolepunchMessage::connect(addr(2, 7002))));
    mute.update(now, &mut t);
    assert!(sent(drain(&mut mute)).is_empty());
    assert!(mute.poll_event().is_none());
    assert_eq!(t.poll_action(), None);
}

#[test]
fn rendezvous_beyond_the_bound_are_dropped_silently() {
    let (mut t, mut s, _target, now) = three_peers();
    for _ in 0..50 {
        s.handle_message(now, holepunch(HolepunchMessage::rendezvous(addr(2, 7002))));
    }
    s.update(now, &mut t);
    let answers = sent(drain(&mut s));
    assert_eq!(
        answers.len(),
        HOLEPUNCH_BURST as usize,
        "one answer per allowed request"
    );
    let relayed = std::iter::from_fn(|| t.poll_action())
        .filter(|a| matches!(a, Action::Holepunch { .. }))
        .count();
    assert_eq!(relayed, HOLEPUNCH_BURST as usize);
    // Malformed ones cost nothing and close nothing.
    s.handle_message(
        now,
        Message::Extended {
            id: OUR_UT_HOLEPUNCH_ID,
            payload: Bytes::from_static(b"\x09"),
        },
    );
    assert!(!s.is_closed());
}

/// The dials `s` asks of the host for a relay's `connect`; nothing else.
fn connects(s: &mut PeerSession) -> Vec<SocketAddr> {
    std::iter::from_fn(|| s.poll_event())
        .map(|e| match e {
            PeerEvent::HolepunchConnect(a) => a,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn connect_asks_the_host_to_dial_within_the_bound() {
    let (_t, mut s, _target, now) = three_peers();
    for _ in 0..10 {
        s.handle_message(now, holepunch(HolepunchMessage::connect(addr(8, 7008))));
    }
    let dials = connects(&mut s);
    assert_eq!(dials, vec![addr(8, 7008); HOLEPUNCH_BURST as usize]);
}

/// A relay on a private network (10.0.0.1) cannot have us dial our own
/// machine; its neighbours and the internet it may name.
#[test]
fn a_connect_into_a_narrower_network_is_ignored() {
    let (_t, mut s, _target, now) = three_peers();
    let own_machine = SocketAddr::from(([127, 0, 0, 1], 22));
    let public = SocketAddr::from(([203, 0, 113, 5], 6881));
    for to in [own_machine, addr(8, 7008), public] {
        s.handle_message(now, holepunch(HolepunchMessage::connect(to)));
    }
    let dials = connects(&mut s);
    assert_eq!(dials, [addr(8, 7008), public]);
}

#[test]
fn the_initiator_asks_the_peer_that_told_of_the_target() {
    let (mut t, _s, mut target, now) = three_peers();
    // The peer at 10.0.0.2 reported 10.0.0.9:7009, which we cannot reach.
    let unreachable = addr(9, 7009);
    assert!(t.rendezvous_via(addr(2, 40000), unreachable));
    let Some(Action::Holepunch { peer, message }) = t.poll_action() else {
        panic!("no rendezvous");
    };
    assert_eq!(
        (peer, message),
        (PeerKey(2), HolepunchMessage::rendezvous(unreachable))
    );
    target.handle_command(now, PeerCmd::Holepunch(Box::new(message)));
    assert_eq!(sent(drain(&mut target)), [message]);
    // A reporter without ut_holepunch, or gone, cannot be asked.
    assert!(!t.rendezvous_via(addr(3, 7003), unreachable));
    t.peer_gone(PeerKey(2));
    assert!(!t.rendezvous_via(addr(2, 40000), unreachable));
}

#[test]
fn pex_flags_the_peers_that_holepunch() {
    use lodestone_wire::pex::{PEX_FIRST_DELAY, PexFlags, PexMessage};
    let (mut t, mut s, _target, now) = three_peers();
    let later = now + PEX_FIRST_DELAY;
    s.handle_timeout(later);
    s.update(later, &mut t);
    let message = drain(&mut s)
        .into_iter()
        .find_map(|m| match m {
            Message::Extended { id: 9, payload } => PexMessage::decode(&payload).ok(),
            _ => None,
        })
        .expect("a ut_pex message");
    let flags: Vec<_> = message.added.iter().map(|p| (p.addr, p.flags)).collect();
    assert_eq!(
        flags,
        [
            (addr(2, 7002), PexFlags(PexFlags::HOLEPUNCH)),
            (addr(3, 7003), PexFlags(0)),
        ]
    );
}
