//! The async driver against fake peers on 127.0.0.1, over connections the
//! test dials and handshakes as the session would: honest seeders serving a
//! multi-piece info dictionary, hostile ones (wrong bytes, a 4 GiB
//! `metadata_size`, rejecting everything, never answering, undecodable
//! answers, flooding), peers without ut_metadata, and the hand-over of live
//! connections to the next phase.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lodestone_bencode::Writer;
use lodestone_core::{InfoHash, PeerId};
use lodestone_metadata::{
    FetchError, FetchOptions, Fetched, Message, PIECE_SIZE, Progress, RequestBudget,
    fetch_metainfo, respond,
};
use lodestone_wire::extension::{UT_METADATA, UT_PEX};
use lodestone_wire::pex::{PexFlags, PexMessage, PexPeer};
use lodestone_wire::{
    Connection, Established, ExitKind, ExtendedHandshake, Handshake, ListenReport,
    MAX_EARLY_MESSAGES, Message as Wire, OUR_UT_METADATA_ID, OUR_UT_PEX_ID, PeerExit, Reserved,
};
use sha1::{Digest, Sha1};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The id our fake seeders ask ut_metadata messages to arrive under.
const SEEDER_UT_METADATA_ID: u8 = 7;

/// Limit for any single wait in a test, so a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// An info dictionary with enough files to span several metadata pieces.
fn info_dict(files: usize) -> Vec<u8> {
    let mut out = Vec::new();
    Writer::new(&mut out).dict(|d| {
        d.key(b"files").list(|l| {
            for i in 0..files {
                l.dict(|f| {
                    f.int(b"length", 1000 + i as i64);
                    f.key(b"path").list(|p| {
                        p.bytes(format!("directory-{}", i % 17).as_bytes());
                        p.bytes(format!("a-fairly-long-file-name-number-{i:06}.bin").as_bytes());
                    });
                });
            }
        });
        d.bytes(b"name", b"many files");
        d.int(b"piece length", 1 << 18);
        let total: u64 = (0..files as u64).map(|i| 1000 + i).sum();
        let pieces = total.div_ceil(1 << 18) as usize;
        d.bytes(b"pieces", &vec![0xab; 20 * pieces]);
    });
    out
}

fn info_hash(info: &[u8]) -> InfoHash {
    InfoHash::new(Sha1::digest(info).into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    WrongBytes,
    HugeSize,
    RejectAll,
    /// Offers ut_metadata and never answers a request.
    Silent,
    /// Answers requests with bytes that are no ut_metadata message.
    Garbage,
    /// A plain BitTorrent peer: neither the extension protocol nor the fast
    /// extension.
    NoExtensions,
    /// The extension protocol without ut_metadata.
    NoUtMetadata,
    /// More `have`s than a connection keeps before the hand-over.
    HaveFlood,
    /// Two bitfields.
    AnnouncesTwice,
    /// Extension handshakes of 30 KB each, until the early bytes overflow.
    HandshakeFlood,
    /// Offers ut_pex too, and sends two PEX messages back to back.
    Pex,
    /// Sends three extension handshakes: without `p`, then saying it
    /// listens at [`LISTEN_PORT`], then at the port after.
    SaysWhereItListens,
    /// Answers the first request, then hangs up.
    OnePieceThenHangsUp,
    /// Announces a wrong size, turns ut_metadata off, then announces the
    /// right one: what the fetch alone, having forgotten it, takes as new.
    ChangesSize,
}

/// The first `p` of [`Behaviour::SaysWhereItListens`], the one that counts.
const LISTEN_PORT: u16 = 7001;

/// The peers in the first and the second PEX message of [`Behaviour::Pex`].
fn pex_batch(second: bool) -> Vec<SocketAddr> {
    let base = if second { 10 } else { 1 };
    (base..base + 3)
        .map(|i| SocketAddr::from(([10, 0, 0, i], 6881)))
        .collect()
}

fn pex_message(second: bool) -> Wire {
    let added = pex_batch(second)
        .into_iter()
        .map(|addr| PexPeer {
            addr,
            flags: PexFlags::default(),
        })
        .collect();
    PexMessage {
        added,
        dropped: vec![],
    }
    .to_message(OUR_UT_PEX_ID)
}

/// A fake peer listening on 127.0.0.1.
struct FakePeer {
    addr: SocketAddr,
    /// Connections it accepted.
    accepted: Arc<AtomicUsize>,
    /// Every message it received, except ut_metadata ones, in order.
    received: mpsc::UnboundedReceiver<Wire>,
}

impl FakePeer {
    async fn start(info: &[u8], behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (received_tx, received) = mpsc::unbounded_channel();
        let info = info.to_vec();
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (info, received) = (info.clone(), received_tx.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, info, behaviour, received).await;
                });
            }
        });
        Self {
            addr,
            accepted,
            received,
        }
    }

    /// The next message it received.
    async fn next_received(&mut self) -> Wire {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

/// The extension handshake a fake peer sends.
fn seeder_handshake(info: &[u8], behaviour: Behaviour) -> Wire {
    seeder_extensions(info, behaviour).to_message()
}

/// What [`seeder_handshake`] says.
fn seeder_extensions(info: &[u8], behaviour: Behaviour) -> ExtendedHandshake {
    let mut hs = ExtendedHandshake {
        metadata_size: Some(match behaviour {
            Behaviour::HugeSize => 4 << 30,
            _ => info.len() as u64,
        }),
        ..ExtendedHandshake::default()
    };
    let offers_ut_metadata = !matches!(
        behaviour,
        Behaviour::NoUtMetadata | Behaviour::HaveFlood | Behaviour::HandshakeFlood
    );
    if offers_ut_metadata {
        hs.m.insert(UT_METADATA.to_owned(), SEEDER_UT_METADATA_ID);
    }
    if behaviour == Behaviour::HandshakeFlood {
        hs.v = Some("x".repeat(30_000));
    }
    if behaviour == Behaviour::Pex {
        hs.m.insert(UT_PEX.to_owned(), 5);
    }
    hs
}

/// What a fake peer sends right after the BitTorrent handshake.
fn opening(info: &[u8], behaviour: Behaviour) -> Vec<Wire> {
    let bitfield = Wire::Bitfield(vec![0b1010_0000].into());
    let handshake = seeder_handshake(info, behaviour);
    match behaviour {
        Behaviour::NoExtensions => vec![bitfield],
        Behaviour::HaveFlood => std::iter::once(handshake)
            .chain((0..=MAX_EARLY_MESSAGES as u32).map(Wire::Have))
            .collect(),
        Behaviour::AnnouncesTwice => vec![bitfield.clone(), bitfield],
        Behaviour::HandshakeFlood => vec![handshake; 40],
        Behaviour::ChangesSize => {
            // A lie first, then the truth: taken as a new peer, it would
            // be served as an honest one.
            let off = ExtendedHandshake::default().to_message();
            let mut lie = seeder_extensions(info, behaviour);
            lie.metadata_size = Some(info.len() as u64 + 1);
            vec![bitfield, lie.to_message(), off, handshake]
        }
        Behaviour::Pex => vec![bitfield, handshake, pex_message(false), pex_message(true)],
        Behaviour::SaysWhereItListens => {
            let says = |p| {
                let hs = seeder_extensions(info, behaviour);
                ExtendedHandshake { p, ..hs }.to_message()
            };
            let ports = [None, Some(LISTEN_PORT), Some(LISTEN_PORT + 1)];
            std::iter::once(bitfield).chain(ports.map(says)).collect()
        }
        _ => vec![bitfield, handshake, Wire::Have(1)],
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    info: Vec<u8>,
    behaviour: Behaviour,
    received: mpsc::UnboundedSender<Wire>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let reserved = match behaviour {
        Behaviour::NoExtensions => Reserved::default(),
        _ => Reserved::LODESTONE,
    };
    let ours = Handshake::new(reserved, info_hash(&info), PeerId::new([b's'; 20]));
    let (mut conn, _) = Connection::accept(stream, PATIENCE, ours).await?;
    conn.send_batch(&opening(&info, behaviour)).await?;
    let mut budget = RequestBudget::default();
    let mut corrupted = info.clone();
    corrupted[info.len() / 2] ^= 0x55;
    let mut their_id = None;
    loop {
        let message = conn.recv().await?;
        let Wire::Extended { id, payload } = &message else {
            received.send(message)?;
            continue;
        };
        if *id == 0 {
            their_id = ExtendedHandshake::decode(payload)?.extension_id(UT_METADATA);
            assert_eq!(their_id, Some(OUR_UT_METADATA_ID));
            received.send(message)?;
            continue;
        }
        assert_eq!(
            *id, SEEDER_UT_METADATA_ID,
            "client used the wrong extension id"
        );
        let Message::Request { piece } = Message::decode(payload)? else {
            continue;
        };
        assert_ne!(
            behaviour,
            Behaviour::HugeSize,
            "asked a peer with an absurd size"
        );
        let answer = match behaviour {
            Behaviour::Silent => continue,
            Behaviour::Garbage => b"not a ut_metadata message".to_vec(),
            Behaviour::RejectAll => Message::Reject { piece }.to_vec(),
            Behaviour::WrongBytes => respond(Some(&corrupted), &mut budget, piece).to_vec(),
            _ => respond(Some(&info), &mut budget, piece).to_vec(),
        };
        let id = their_id.ok_or("request before the client's handshake")?;
        conn.send(&Wire::Extended {
            id,
            payload: answer.into(),
        })
        .await?;
        if behaviour == Behaviour::OnePieceThenHangsUp {
            return Ok(());
        }
    }
}

fn options() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(20),
        ..FetchOptions::default()
    }
}

/// Dials and handshakes every peer, in order, as the session would, and
/// queues the connections for the driver. The channel stays open while the
/// returned sender lives, closed if `None`.
async fn dial(
    info: &[u8],
    peers: &[&FakePeer],
    keep_open: bool,
) -> (
    mpsc::Receiver<Established>,
    Option<mpsc::Sender<Established>>,
) {
    let (tx, rx) = mpsc::channel(64);
    for peer in peers {
        let ours = Handshake::new(
            Reserved::LODESTONE,
            info_hash(info),
            PeerId::new([b'c'; 20]),
        );
        let (conn, theirs) = Connection::connect(peer.addr, PATIENCE, ours)
            .await
            .unwrap();
        tx.send(Established::new(conn, theirs, peer.addr, false))
            .await
            .unwrap();
    }
    (rx, keep_open.then_some(tx))
}

/// Runs a fetch; returns its result, the last progress and every exit.
async fn run(
    info: &[u8],
    conns: mpsc::Receiver<Established>,
    options: FetchOptions,
) -> (Result<Fetched, FetchError>, Progress, Vec<PeerExit>) {
    let (exits_tx, mut exits_rx) = mpsc::unbounded_channel();
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let result = fetch_metainfo(info_hash(info), conns, exits_tx, options, &progress_tx).await;
    let mut exits = Vec::new();
    while let Some(exit) = exits_rx.recv().await {
        exits.push(exit);
    }
    let progress = *progress_rx.borrow();
    (result, progress, exits)
}

async fn start_all(info: &[u8], behaviours: &[Behaviour]) -> Vec<FakePeer> {
    let mut peers = Vec::new();
    for &behaviour in behaviours {
        peers.push(FakePeer::start(info, behaviour).await);
    }
    peers
}

#[tokio::test]
async fn fetches_multi_piece_metadata_from_honest_seeders() {
    let info = info_dict(600);
    assert!(info.len() > 3 * PIECE_SIZE as usize, "{} bytes", info.len());
    let peers = start_all(&info, &[Behaviour::Honest; 3]).await;
    let (conns, _open) = dial(&info, &peers.iter().collect::<Vec<_>>(), true).await;
    let (result, progress, exits) = run(&info, conns, options()).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.metainfo.info_hash, info_hash(&info));
    assert_eq!(fetched.metainfo.raw_info(), &info[..]);
    assert_eq!(fetched.metainfo.info.files.len(), 600);
    assert_eq!(fetched.conns.len(), 3, "not handed over: {exits:?}");
    assert_eq!(exits, []);
    assert!(progress.ever_ut_metadata >= 1, "{progress:?}");
}

#[tokio::test]
async fn honest_seeders_win_over_hostile_peers() {
    let info = info_dict(600);
    // Hostile peers first, so they are taken on and asked first.
    let peers = start_all(
        &info,
        &[
            Behaviour::WrongBytes,
            Behaviour::HugeSize,
            Behaviour::RejectAll,
            Behaviour::Silent,
            Behaviour::NoExtensions,
            Behaviour::WrongBytes,
            Behaviour::Honest,
            Behaviour::Honest,
        ],
    )
    .await;
    let (conns, _open) = dial(&info, &peers.iter().collect::<Vec<_>>(), true).await;
    let mut options = options();
    options.fetch.request_timeout = Duration::from_millis(500);
    let (result, _, exits) = run(&info, conns, options).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.metainfo.raw_info(), &info[..]);
    // Every connection comes out exactly once.
    assert_eq!(fetched.conns.len() + exits.len(), peers.len(), "{exits:?}");
}

#[tokio::test]
async fn only_hostile_peers_end_in_a_stage_report() {
    let info = info_dict(100);
    let peers = start_all(
        &info,
        &[
            Behaviour::WrongBytes,
            Behaviour::HugeSize,
            Behaviour::RejectAll,
        ],
    )
    .await;
    let (conns, _) = dial(&info, &peers.iter().collect::<Vec<_>>(), false).await;
    let (result, _, exits) = run(&info, conns, options()).await;
    let err = result.unwrap_err();
    let FetchError::PeersExhausted(progress) = &err else {
        panic!("{err}");
    };
    assert_eq!(progress.ever_ut_metadata, 3);
    assert!(progress.peers_dropped >= 3, "{progress:?}");
    assert!(err.to_string().contains("offered ut_metadata"), "{err}");
    // Bad data bans a peer; rejecting only says it has nothing to give.
    let misbehaved: HashMap<_, _> = exits.iter().map(|e| (e.addr, e.misbehaved())).collect();
    let expected: HashMap<_, _> = [
        (peers[0].addr, true),
        (peers[1].addr, true),
        (peers[2].addr, false),
    ]
    .into();
    assert_eq!(exits.len(), 3, "{exits:?}");
    assert_eq!(misbehaved, expected);
}

#[tokio::test]
async fn no_peers_says_so() {
    let (conns, _) = dial(&[], &[], false).await;
    let (result, _, exits) = run(&[], conns, options()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, FetchError::PeersExhausted(_)), "{err}");
    assert!(err.to_string().contains("no peers found"), "{err}");
    assert_eq!(exits, []);
}

#[tokio::test]
async fn peers_without_ut_metadata_say_so() {
    let info = info_dict(10);
    let peers = start_all(&info, &[Behaviour::NoExtensions, Behaviour::NoUtMetadata]).await;
    let (conns, _) = dial(&info, &peers.iter().collect::<Vec<_>>(), false).await;
    let mut options = options();
    options.timeout = Duration::from_secs(1);
    let (result, _, exits) = run(&info, conns, options).await;
    let err = result.unwrap_err();
    assert!(matches!(err, FetchError::TimedOut(_)), "{err}");
    assert!(
        err.to_string()
            .contains("none of 2 connected peers offers ut_metadata"),
        "{err}"
    );
    // Kept open until the fetch failed, then closed and reported.
    let expected: Vec<_> = peers
        .iter()
        .map(|p| PeerExit::new(p.addr, ExitKind::Fruitless))
        .collect();
    assert_eq!(exits, expected);
}

/// Runs a fetch over one connection to a `behaviour` peer, which the
/// driver must close; checks that the fetch runs out of peers and reports
/// the exit with `misbehaved`.
async fn assert_closed(behaviour: Behaviour, options: FetchOptions, misbehaved: bool) {
    let info = info_dict(10);
    let peer = FakePeer::start(&info, behaviour).await;
    let (conns, _) = dial(&info, &[&peer], false).await;
    let (result, progress, exits) = run(&info, conns, options).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, FetchError::PeersExhausted(_)),
        "{behaviour:?}: {err}"
    );
    assert_eq!(progress.peers_dropped, 1, "{behaviour:?}: {progress:?}");
    let expected = PeerExit::new(peer.addr, ExitKind::Fruitless.or_misbehaved(misbehaved));
    assert_eq!(exits, [expected], "{behaviour:?}");
}

#[tokio::test]
async fn a_peer_that_changes_its_size_is_closed_however_it_stages_it() {
    assert_closed(Behaviour::ChangesSize, options(), true).await;
}

#[tokio::test]
async fn a_peer_that_gave_some_metadata_then_hung_up_was_of_use() {
    // Two metadata pieces: one peer's first answer cannot finish the fetch.
    let info = info_dict(400);
    assert!(info.len() > 16 * 1024);
    let peer = FakePeer::start(&info, Behaviour::OnePieceThenHangsUp).await;
    let (conns, _) = dial(&info, &[&peer], false).await;
    let (result, _, exits) = run(&info, conns, options()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, FetchError::PeersExhausted(_)), "{err}");
    // Not fruitless: the session may dial it again soon.
    assert_eq!(exits, [PeerExit::new(peer.addr, ExitKind::OfUse)]);
}

#[tokio::test]
async fn a_peer_that_never_answers_is_let_go() {
    let mut options = options();
    options.fetch.request_timeout = Duration::from_millis(100);
    // Slow is not hostile: the session may dial it again.
    assert_closed(Behaviour::Silent, options, false).await;
}

#[tokio::test]
async fn hands_over_the_same_connection_with_its_early_messages() {
    let info = info_dict(600);
    let mut peer = FakePeer::start(&info, Behaviour::Honest).await;
    let (conns, _open) = dial(&info, &[&peer], true).await;
    let (result, _, exits) = run(&info, conns, options()).await;
    let Fetched { metainfo, conns } = result.unwrap();
    assert_eq!(metainfo.raw_info(), &info[..]);
    assert_eq!(exits, []);
    let [mut conn] = <[Established; 1]>::try_from(conns).unwrap();
    assert_eq!(conn.addr, peer.addr);
    assert!(!conn.incoming);
    assert!(conn.greeted);
    // The bitfield and the `have` came before the metadata was complete,
    // around the peer's extension handshake, and the download gets them all.
    assert_eq!(conn.early, opening(&info, Behaviour::Honest));

    // The peer saw `have_none` first (both set the fast bit), then our
    // extension handshake.
    assert_eq!(peer.next_received().await, Wire::HaveNone);
    let Wire::Extended { id: 0, payload } = peer.next_received().await else {
        panic!("expected our extension handshake");
    };
    let ours = ExtendedHandshake::decode(&payload).unwrap();
    assert_eq!(ours.m, lodestone_wire::our_extensions(false, false));
    assert!(ours.v.is_some());

    // The connection still works and is the one the peer accepted.
    conn.conn.send(&Wire::Interested).await.unwrap();
    assert_eq!(peer.next_received().await, Wire::Interested);
    assert_eq!(peer.accepted.load(Ordering::SeqCst), 1);
}

/// The messages a peer sent, as the next phase sees them: those kept before
/// the hand-over, then those read from the connection after it.
async fn sent_by_peer(conn: &mut Established, count: usize) -> Vec<Wire> {
    let mut messages = std::mem::take(&mut conn.early);
    while messages.len() < count {
        let message = tokio::time::timeout(PATIENCE, conn.conn.recv()).await;
        messages.push(message.unwrap().unwrap());
    }
    messages
}

#[tokio::test]
async fn peers_without_ut_metadata_are_kept_for_the_download() {
    let info = info_dict(10);
    let behaviours = [
        Behaviour::NoExtensions,
        Behaviour::NoUtMetadata,
        Behaviour::Honest,
    ];
    let peers = start_all(&info, &behaviours).await;
    let (conns, _open) = dial(&info, &peers.iter().collect::<Vec<_>>(), true).await;
    let (result, _, exits) = run(&info, conns, options()).await;
    let mut fetched = result.unwrap();
    assert_eq!(exits, []);
    let addrs: Vec<_> = fetched.conns.iter().map(|c| c.addr).collect();
    assert_eq!(addrs, peers.iter().map(|p| p.addr).collect::<Vec<_>>());
    for (conn, behaviour) in fetched.conns.iter_mut().zip(behaviours) {
        let expected = opening(&info, behaviour);
        // Nothing the peer sent is lost, whether the metadata phase read it
        // or not.
        assert_eq!(sent_by_peer(conn, expected.len()).await, expected);
    }
    // We sent the plain peer nothing, so the download may open with a
    // bitfield; the others got our greeting.
    let greeted: Vec<_> = fetched.conns.iter().map(|c| c.greeted).collect();
    assert_eq!(greeted, [false, true, true]);
}

#[tokio::test]
async fn floods_before_the_hand_over_close_the_peer_as_misbehaving() {
    for behaviour in [
        Behaviour::HaveFlood,
        Behaviour::AnnouncesTwice,
        Behaviour::HandshakeFlood,
    ] {
        assert_closed(behaviour, options(), true).await;
    }
}

#[tokio::test]
async fn an_undecodable_ut_metadata_message_closes_the_peer_as_misbehaving() {
    assert_closed(Behaviour::Garbage, options(), true).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let info = info_dict(10);
    let peers = start_all(&info, &[Behaviour::NoUtMetadata; 2]).await;
    // Both peers are on 127.0.0.1: the limit per IP applies to them too.
    let limits: [fn(&mut FetchOptions); 2] =
        [|o| o.max_connections = 1, |o| o.max_connections_per_ip = 1];
    for limit in limits {
        let (conns, _) = dial(&info, &peers.iter().collect::<Vec<_>>(), false).await;
        let mut options = options();
        limit(&mut options);
        options.timeout = Duration::from_secs(1);
        // Within the grace a useless peer keeps its slot.
        options.useless_after = Duration::from_secs(60);
        let (result, progress, exits) = run(&info, conns, options).await;
        assert!(matches!(result, Err(FetchError::TimedOut(_))));
        assert_eq!(progress.ever_connected, 1, "{progress:?}");
        // The second is closed on arrival, the first when the fetch gives up.
        let order: Vec<_> = exits.iter().map(|e| (e.addr, e.misbehaved())).collect();
        assert_eq!(order, [(peers[1].addr, false), (peers[0].addr, false)]);
    }
}

/// Two addresses of one IPv6 /64 are one host, as the listener counts.
#[tokio::test]
async fn one_slash_64_is_one_host_for_the_limit_per_ip() {
    let info = info_dict(10);
    let peers = start_all(&info, &[Behaviour::NoUtMetadata; 2]).await;
    let (mut conns, _) = dial(&info, &peers.iter().collect::<Vec<_>>(), false).await;
    let (tx, relabelled) = mpsc::channel(2);
    let addrs: [SocketAddr; 2] =
        ["[2001:db8::1]:6881", "[2001:db8::2]:6881"].map(|a| a.parse().unwrap());
    for addr in addrs {
        let mut conn = conns.recv().await.unwrap();
        conn.addr = addr;
        tx.send(conn).await.unwrap();
    }
    drop(tx);
    let mut options = options();
    options.max_connections_per_ip = 1;
    options.timeout = Duration::from_secs(1);
    options.useless_after = Duration::from_secs(60);
    let (result, progress, exits) = run(&info, relabelled, options).await;
    assert!(matches!(result, Err(FetchError::TimedOut(_))));
    assert_eq!(progress.ever_connected, 1, "{progress:?}");
    let order: Vec<_> = exits.iter().map(|e| e.addr).collect();
    assert_eq!(order, [addrs[1], addrs[0]]);
}

#[tokio::test]
async fn a_useless_peer_gives_its_slot_to_a_seeder() {
    let info = info_dict(10);
    let peers = start_all(&info, &[Behaviour::NoUtMetadata, Behaviour::Honest]).await;
    let (conns, _open) = dial(&info, &peers.iter().collect::<Vec<_>>(), true).await;
    let mut options = options();
    options.max_connections = 1;
    // At once, so the test need not wait out the usual grace.
    options.useless_after = Duration::ZERO;
    let (result, progress, exits) = run(&info, conns, options).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.metainfo.raw_info(), &info[..]);
    assert_eq!(progress.ever_connected, 2, "{progress:?}");
    // The useless one was let go, blameless.
    let order: Vec<_> = exits.iter().map(|e| (e.addr, e.misbehaved())).collect();
    assert_eq!(order, [(peers[0].addr, false)]);
}

#[tokio::test]
async fn an_extension_handshake_read_by_a_previous_owner_counts() {
    let info = info_dict(10);
    let peer = FakePeer::start(&info, Behaviour::Honest).await;
    let (mut conns, _) = dial(&info, &[&peer], false).await;
    let mut conn = conns.recv().await.unwrap();
    // Whoever held the connection before read the peer's opening.
    let opening = opening(&info, Behaviour::Honest);
    for _ in &opening {
        let message = tokio::time::timeout(PATIENCE, conn.conn.recv()).await;
        conn.early.push(message.unwrap().unwrap());
    }
    let (tx, rx) = mpsc::channel(1);
    tx.send(conn).await.unwrap();
    let (result, _, _) = run(&info, rx, options()).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.metainfo.raw_info(), &info[..]);
    assert_eq!(fetched.conns[0].early, opening);
}

#[tokio::test]
async fn pex_peers_are_reported_once_per_interval() {
    let info = info_dict(10);
    let peer = FakePeer::start(&info, Behaviour::Pex).await;
    let (conns, _open) = dial(&info, &[&peer], true).await;
    let (pex_tx, mut pex_rx) = mpsc::channel(8);
    let mut options = options();
    options.pex = Some(pex_tx);
    let (result, _, _) = run(&info, conns, options).await;
    let mut fetched = result.unwrap();
    // The messages came before the metadata on the one connection, so their
    // reports are in; the second came too soon after the first.
    let report = pex_rx.try_recv().expect("a PEX report");
    assert_eq!(report.from, peer.addr);
    let added: Vec<_> = report.peers.iter().map(|p| p.addr).collect();
    assert_eq!(added, pex_batch(false));
    assert!(pex_rx.try_recv().is_err(), "the second message was taken");
    // The download goes on with the same interval: a third message now
    // would come too soon as well.
    let Wire::Extended { payload, .. } = pex_message(true) else {
        panic!("a ut_pex message");
    };
    let carried = &mut fetched.conns[0].pex;
    let third = carried.receive(std::time::Instant::now(), &payload);
    assert_eq!(third.unwrap(), [], "ignored, as too soon after the first");
    assert_eq!(carried.ignored(), 2);
}

#[tokio::test]
async fn where_a_peer_that_dialed_us_listens_is_reported_once() {
    let info = info_dict(10);
    let peer = FakePeer::start(&info, Behaviour::SaysWhereItListens).await;
    for incoming in [true, false] {
        let (mut conns, _) = dial(&info, &[&peer], false).await;
        let mut conn = conns.recv().await.unwrap();
        // As if the peer had dialed us from `peer.addr`.
        conn.incoming = incoming;
        let (tx, rx) = mpsc::channel(1);
        tx.send(conn).await.unwrap();
        let (listening_tx, mut listening_rx) = mpsc::channel(8);
        let mut options = options();
        options.listening = Some(listening_tx);
        let (result, _, _) = run(&info, rx, options).await;
        result.unwrap();
        // Every handshake came before the metadata on the one connection.
        if incoming {
            let report = listening_rx.try_recv().expect("a listen report");
            let listen = SocketAddr::new(peer.addr.ip(), LISTEN_PORT);
            assert_eq!(
                report,
                ListenReport {
                    conn: peer.addr,
                    listen
                }
            );
        }
        assert!(
            listening_rx.try_recv().is_err(),
            "once, and never for a peer we dialed (incoming: {incoming})"
        );
    }
}
