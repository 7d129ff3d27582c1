use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::host_quota::{MAX_PER_ADDRESS, MAX_PER_SLASH_64};
use super::*;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 6881))
}

fn book(capacity: usize) -> AddressBook {
    AddressBook::new(AddressBookConfig {
        capacity,
        ..AddressBookConfig::default()
    })
}

#[test]
fn dials_trusted_sources_first_then_oldest() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    b.add(addr(2), PeerSource::Dht);
    b.add(addr(3), PeerSource::Magnet);
    assert_eq!(b.next_dial(t0), Some(addr(3)));
    assert_eq!(b.next_dial(t0), Some(addr(1)));
    assert_eq!(b.next_dial(t0), Some(addr(2)));
    assert_eq!(b.next_dial(t0), None);
    // Busy addresses are not offered again when re-announced.
    assert!(!b.add(addr(1), PeerSource::Dht));
    assert_eq!(b.next_dial(t0), None);
}

#[test]
fn a_source_vouching_for_known_addresses_keeps_its_list_bounded() {
    let t0 = Instant::now();
    let mut b = book(10);
    let max_failures = AddressBookConfig::default().max_failures;
    // The DHT finds an address, a tracker repeats it, and it is forgotten
    // after failing: over and over, with new addresses.
    for i in 0..2000 {
        let mut now = t0;
        b.add(addr(i), PeerSource::Dht);
        b.add(addr(i), PeerSource::Tracker);
        for _ in 0..max_failures {
            if b.next_dial(now) != Some(addr(i)) {
                break;
            }
            b.ended(now, addr(i), Outcome::Failed);
            now = b.poll_timeout(now).unwrap_or(now);
        }
    }
    assert_eq!(b.stats().known, 0);
    for list in &b.by_source {
        assert!(list.len() <= 2 * 10 + 16, "{} items", list.len());
    }
}

#[test]
fn failures_back_off_exponentially_then_forget() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..AddressBookConfig::default().max_failures {
        assert_eq!(b.next_dial(now), Some(addr(1)));
        b.ended(now, addr(1), Outcome::Failed);
        let Some(due) = b.poll_timeout(now) else {
            break;
        };
        assert_eq!(b.next_dial(due - Duration::from_millis(1)), None);
        waits.push((due - now).as_secs());
        now = due;
    }
    assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128]);
    assert_eq!(b.stats().known, 0, "forgotten after max_failures");
    // A new report brings it back.
    assert!(b.add(addr(1), PeerSource::Dht));
}

#[test]
fn fruitless_connections_back_off_uncounted_until_one_is_of_use() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    // Accepted and hung up at once, twice: 2 s, then 4 s.
    b.next_dial(t0);
    b.ended(t0, addr(1), Outcome::Fruitless);
    let due = b.poll_timeout(t0).unwrap();
    assert_eq!(due, t0 + Duration::from_secs(2));
    b.next_dial(due);
    b.ended(due, addr(1), Outcome::Fruitless);
    let due = b.poll_timeout(due).unwrap();
    assert_eq!(due, t0 + Duration::from_secs(6));
    let stats = b.stats();
    assert_eq!((stats.failures, stats.banned, stats.known), (0, 0, 1));
    // A connection of use ends: the backoff starts afresh.
    b.next_dial(due);
    b.ended(due, addr(1), Outcome::OfUse);
    let later = due + Duration::from_secs(2);
    assert_eq!(b.next_dial(later), Some(addr(1)));
    b.ended(later, addr(1), Outcome::Fruitless);
    assert_eq!(b.poll_timeout(later), Some(later + Duration::from_secs(2)));
}

/// Dials `addr(1)` when it is next due and ends the dial with `outcome`.
fn end_next(b: &mut AddressBook, now: &mut Instant, outcome: Outcome) {
    *now = b.poll_timeout(*now).expect("still known");
    assert_eq!(b.next_dial(*now), Some(addr(1)));
    b.ended(*now, addr(1), outcome);
}

#[test]
fn an_unused_connection_leaves_the_backoff_as_it_was() {
    let mut now = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    assert_eq!(b.next_dial(now), Some(addr(1)));
    b.ended(now, addr(1), Outcome::Fruitless);
    end_next(&mut b, &mut now, Outcome::Fruitless);
    assert_eq!(b.poll_timeout(now), Some(now + Duration::from_secs(4)));
    end_next(&mut b, &mut now, Outcome::Unused);
    assert_eq!(b.poll_timeout(now), Some(now + Duration::from_secs(4)));
}

#[test]
fn an_address_is_forgotten_only_by_failed_dials_in_a_row() {
    let mut now = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    let max_failures = AddressBookConfig::default().max_failures;
    // Far more fruitless ends than failed dials forget: the waits grow to
    // the longest, and the address stays.
    for _ in 0..2 * max_failures {
        end_next(&mut b, &mut now, Outcome::Fruitless);
    }
    assert_eq!(b.poll_timeout(now), Some(now + Duration::from_secs(300)));
    assert_eq!(b.stats().failures, 0, "none counted as a failed dial");
    // Once it stops answering, it is forgotten after as many failed dials
    // as any address, not sooner; an answer between starts the count over.
    for _ in 0..max_failures - 1 {
        end_next(&mut b, &mut now, Outcome::Failed);
    }
    end_next(&mut b, &mut now, Outcome::Fruitless);
    for _ in 0..max_failures - 1 {
        end_next(&mut b, &mut now, Outcome::Failed);
    }
    assert_eq!(b.stats().known, 1);
    end_next(&mut b, &mut now, Outcome::Failed);
    assert_eq!(b.stats().known, 0);
}

#[test]
fn an_alias_stands_for_the_connection_and_no_ban_crosses_to_it() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    b.add(addr(2), PeerSource::Tracker);
    assert_eq!(b.next_dial(t0), Some(addr(2)));
    assert_eq!(b.next_dial(t0), Some(addr(1)));
    // Both reached one peer id; the connection at 2 was closed.
    b.ended(t0, addr(2), Outcome::Fruitless);
    b.alias(addr(1), addr(2));
    assert_eq!(b.stats().busy, 1, "an alias is no connection of its own");
    let later = t0 + Duration::from_secs(600);
    assert_eq!(b.next_dial(later), None, "not dialed while 1 lasts");
    // The peer at 1 misbehaves: 1 is banned, 2 only filed again, with its
    // own source and failure.
    b.ended(later, addr(1), Outcome::Misbehaved);
    assert!(b.is_banned(addr(1)) && !b.is_banned(addr(2)));
    assert_eq!(b.stats().busy, 0);
    assert_eq!(b.next_dial(later), None, "its backoff still runs");
    assert_eq!(b.next_dial(later + Duration::from_secs(2)), Some(addr(2)));
    assert_eq!(b.entries[&addr(2)].source, PeerSource::Tracker);
}

#[test]
fn an_alias_is_released_when_its_connection_on_a_banned_ip_ends() {
    let t0 = Instant::now();
    let mut b = book(10);
    let conn = SocketAddr::from(([10, 0, 0, 1], 6881));
    let neighbour = SocketAddr::from(([10, 0, 0, 1], 7000));
    b.add(conn, PeerSource::Dht);
    b.add(addr(2), PeerSource::Dht);
    b.next_dial(t0);
    b.next_dial(t0);
    b.ended(t0, addr(2), Outcome::Fruitless);
    b.alias(conn, addr(2));
    // Another address on the connection's IP misbehaves: the IP is
    // banned, and the open connection's entry is kept until it ends.
    b.add(neighbour, PeerSource::Dht);
    b.next_dial(t0);
    b.ended(t0, neighbour, Outcome::Misbehaved);
    assert_eq!(b.entries[&conn].status, Status::Busy);
    b.ended(t0, conn, Outcome::OfUse);
    assert!(!b.entries.contains_key(&conn), "forgotten at its end");
    assert_eq!(b.stats().busy, 0, "the alias stands for nothing now");
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(2)));
}

#[test]
fn an_alias_that_stopped_standing_leaves_room_for_another() {
    let t0 = Instant::now();
    let mut b = book(10);
    for i in 1..=3 {
        b.add(addr(i), PeerSource::Dht);
    }
    for _ in 1..=3 {
        b.next_dial(t0);
    }
    b.ended(t0, addr(2), Outcome::Fruitless);
    b.alias(addr(1), addr(2));
    // 2 is dialed again (its own connection now) and ends: it no longer
    // stands for 1, so 3 may.
    assert!(b.incoming(addr(2)));
    b.ended(t0, addr(2), Outcome::OfUse);
    b.ended(t0, addr(3), Outcome::Fruitless);
    b.alias(addr(1), addr(3));
    assert_eq!(b.entries[&addr(3)].stands_for, Some(addr(1)));
}

#[test]
fn a_pex_alias_is_forgotten_if_pex_went_off_while_it_stood() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    b.add_pex(addr(2), addr(9));
    b.next_dial(t0);
    b.next_dial(t0);
    b.ended(t0, addr(2), Outcome::Fruitless);
    b.alias(addr(1), addr(2));
    b.forget_pex();
    b.ended(t0, addr(1), Outcome::OfUse);
    assert!(!b.entries.contains_key(&addr(2)));
    assert_eq!(b.stats().known, 1);
}

#[test]
fn an_alias_needs_an_idle_address_and_a_connection_with_none() {
    let t0 = Instant::now();
    let mut b = book(10);
    for i in 1..=3 {
        b.add(addr(i), PeerSource::Dht);
    }
    b.next_dial(t0);
    b.next_dial(t0);
    // 1 and 2 are both being dialed: neither can stand for the other.
    b.alias(addr(1), addr(2));
    assert_eq!(b.stats().busy, 2);
    // Unknown addresses are not added by it.
    b.alias(addr(1), addr(9));
    assert_eq!(b.stats().known, 3);
    // 3 stands for 1; then 2 (ended) cannot stand for 1 too.
    b.alias(addr(1), addr(3));
    b.ended(t0, addr(2), Outcome::OfUse);
    b.alias(addr(1), addr(2));
    assert_eq!(b.stats().busy, 1);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(2)));
}

#[test]
fn a_connection_of_use_resets_the_backoff() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(1), PeerSource::Dht);
    b.next_dial(t0);
    b.ended(t0, addr(1), Outcome::Failed);
    let due = b.poll_timeout(t0).unwrap();
    b.next_dial(due);
    b.ended(due, addr(1), Outcome::OfUse);
    assert_eq!(b.poll_timeout(due), Some(due + Duration::from_secs(2)));
}

#[test]
fn misbehaving_peers_are_banned_by_host_except_on_loopback() {
    let t0 = Instant::now();
    let mut b = book(10);
    let a = addr(1);
    let same_ip = SocketAddr::new(a.ip(), 7000);
    b.add(a, PeerSource::Dht);
    b.add(same_ip, PeerSource::Dht);
    b.next_dial(t0);
    b.ended(t0, a, Outcome::Misbehaved);
    assert_eq!(b.stats().known, 0);
    assert!(!b.add(same_ip, PeerSource::Magnet));
    assert!(!b.incoming(same_ip));

    // An IPv6 host is its /64: it cannot step to a neighbouring address.
    let v6 = |s: &str| s.parse::<SocketAddr>().unwrap();
    b.ban(v6("[2001:db8:1:2::5]:6881"));
    assert!(b.is_banned(v6("[2001:db8:1:2:ffff::9]:7000")));
    assert!(!b.is_banned(v6("[2001:db8:1:3::5]:6881")));

    let l1 = SocketAddr::from(([127, 0, 0, 1], 1000));
    let l2 = SocketAddr::from(([127, 0, 0, 1], 1001));
    b.ban(l1);
    assert!(b.is_banned(l1) && !b.is_banned(l2));
    assert!(b.add(l2, PeerSource::Dht));
}

/// A book holding a dial to `other` and a connection from `bad`, on one
/// IP, after `bad` misbehaved.
fn banned_while_dialing(b: &mut AddressBook, t0: Instant, bad: SocketAddr, other: SocketAddr) {
    b.add(other, PeerSource::Dht);
    assert_eq!(b.next_dial(t0), Some(other));
    assert!(b.incoming(bad));
    b.ended(t0, bad, Outcome::Misbehaved);
}

#[test]
fn a_ban_keeps_the_ips_other_connections_busy_until_they_end() {
    // One connection misbehaves and bans the IP. Our dial to another port
    // of it runs on, and its place stays counted until it ends.
    let t0 = Instant::now();
    let mut b = book(10);
    let (bad, other) = (addr(1), SocketAddr::new(addr(1).ip(), 7000));
    banned_while_dialing(&mut b, t0, bad, other);
    assert!(b.is_banned(other));
    assert_eq!((b.stats().busy, b.stats().known), (1, 1));
    b.ended(t0, other, Outcome::OfUse);
    assert_eq!((b.stats().busy, b.stats().known), (0, 0), "forgotten");
    assert_eq!(b.next_dial(t0 + Duration::from_secs(3600)), None);
}

#[test]
fn a_ban_the_full_list_cannot_hold_still_forgets_the_ips_entries() {
    let t0 = Instant::now();
    let mut b = book(10);
    for i in 0..MAX_BANS as u32 {
        b.ban(SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 1)));
    }
    let (bad, other) = (addr(1), SocketAddr::new(addr(1).ip(), 7000));
    banned_while_dialing(&mut b, t0, bad, other);
    assert!(!b.is_banned(other), "no room in the list");
    assert_eq!(b.stats().busy, 1);
    b.ended(t0, other, Outcome::OfUse);
    assert_eq!(b.stats().known, 0, "forgotten all the same");
}

#[test]
fn a_peer_banned_past_the_full_list_is_not_dialed_where_it_listens() {
    let t0 = Instant::now();
    let ip = addr(1).ip();
    let (bad, visitor, listen) = (
        SocketAddr::new(ip, 50_000),
        SocketAddr::new(ip, 50_001),
        SocketAddr::new(ip, 6881),
    );
    // Where it listens, told before the ban or after it.
    for told_first in [true, false] {
        let mut b = book(10);
        for i in 0..MAX_BANS as u32 {
            b.ban(SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 1)));
        }
        assert!(b.incoming(bad) && b.incoming(visitor));
        if told_first {
            b.listening(visitor, listen);
        }
        b.ended(t0, bad, Outcome::Misbehaved);
        if !told_first {
            b.listening(visitor, listen);
        }
        b.ended(t0, visitor, Outcome::OfUse);
        assert_eq!(b.stats().known, 0, "told first: {told_first}");
    }
}

#[test]
fn a_shunned_address_stays_busy_while_its_other_connection_lasts() {
    // TCP and uTP share ports: our dial and the peer's connection under
    // one address.
    let t0 = Instant::now();
    let mut b = book(10);
    let ours = addr(1);
    b.add(ours, PeerSource::Dht);
    assert_eq!(b.next_dial(t0), Some(ours));
    assert!(b.incoming(ours));
    b.ended(t0, ours, Outcome::Ourselves);
    assert_eq!(b.stats().busy, 1);
    b.ended(t0, ours, Outcome::Fruitless);
    assert_eq!((b.stats().busy, b.stats().known), (0, 0));
}

#[test]
fn an_address_leading_to_ourselves_is_shunned_alone() {
    // Our public address reached us back (a NAT that loops): other peers
    // behind that NAT share its IP and must stay dialable.
    let t0 = Instant::now();
    let mut b = book(10);
    let ours = addr(1);
    let neighbour = SocketAddr::new(ours.ip(), 7000);
    b.add(ours, PeerSource::Dht);
    b.add(neighbour, PeerSource::Dht);
    b.next_dial(t0);
    b.ended(t0, ours, Outcome::Ourselves);
    assert!(b.is_banned(ours));
    assert!(!b.is_banned(neighbour));
    assert!(!b.add(ours, PeerSource::Magnet), "never dialed again");
    assert_eq!(b.stats().known, 1);
    assert!(b.incoming(SocketAddr::new(ours.ip(), 50_000)));
}

#[test]
fn remembers_the_wrapping_that_worked() {
    let now = Instant::now();
    let mut b = book(4);
    b.add(addr(1), PeerSource::Dht);
    assert_eq!(b.wrapping(addr(1)), None);
    b.worked(addr(1), Wrapping::Plain);
    b.ended(now, addr(1), Outcome::OfUse);
    assert_eq!(b.wrapping(addr(1)), Some(Wrapping::Plain));
    // An address the book does not hold keeps nothing.
    b.worked(addr(2), Wrapping::Mse);
    assert_eq!(b.wrapping(addr(2)), None);
}

#[test]
fn unusable_addresses_are_ignored() {
    let mut b = book(10);
    assert!(!b.add(SocketAddr::from(([1, 2, 3, 4], 0)), PeerSource::Dht));
    assert!(!b.add(SocketAddr::from(([0, 0, 0, 0], 1)), PeerSource::Dht));
    assert!(!b.add(SocketAddr::from(([224, 0, 0, 1], 1)), PeerSource::Dht));
    assert_eq!(b.stats().known, 0);
}

/// The address a peer at `i` dials us from: its IP, an ephemeral port.
fn ephemeral(i: u32) -> SocketAddr {
    SocketAddr::new(addr(i).ip(), 51_413)
}

#[test]
fn an_incoming_connection_is_busy_until_it_ends_then_forgotten() {
    let t0 = Instant::now();
    let mut b = book(10);
    assert!(b.incoming(ephemeral(5)));
    assert_eq!(b.next_dial(t0), None);
    assert_eq!(b.stats().busy, 1);
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    // Nothing listens at the port it came from.
    assert_eq!(b.next_dial(t0 + Duration::from_secs(60)), None);
    assert_eq!(b.stats().known, 0);
    assert_eq!(b.count(PeerSource::Incoming), 0);
}

/// Over TCP and uTP one address can reach us twice, or reach us while we
/// dial it. The end of one (the duplicate closed) filed the entry as
/// ended while the other lasted: not busy, so dialed again or forgotten.
#[test]
fn two_connections_under_one_address_end_one_at_a_time() {
    let t0 = Instant::now();
    let mut b = book(10);
    assert!(b.incoming(ephemeral(5)));
    assert!(b.incoming(ephemeral(5)));
    b.ended(t0, ephemeral(5), Outcome::Fruitless);
    assert_eq!(b.stats().busy, 1, "the other connection lasts");
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    assert_eq!(b.stats(), BookStats::default());
    // Our dial worked, and the peer reached us from the same address.
    b.add(addr(6), PeerSource::Dht);
    assert_eq!(b.next_dial(t0), Some(addr(6)));
    assert!(b.incoming(addr(6)));
    b.ended(t0, addr(6), Outcome::Fruitless);
    assert_eq!(b.stats().busy, 1);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(600)), None);
    b.ended(t0, addr(6), Outcome::OfUse);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(600)), Some(addr(6)));
    // The peer reached us while we dialed it, and our dial failed: its
    // connection lasts.
    assert!(b.incoming(addr(6)));
    b.ended(t0, addr(6), Outcome::Failed);
    assert_eq!(b.stats().busy, 1);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(600)), None);
}

#[test]
fn an_incoming_peer_is_redialed_where_it_says_it_listens() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    // Connected already: not dialed while the connection lasts, and
    // counted as one connection against the torrent's cap.
    assert_eq!(b.next_dial(t0 + Duration::from_secs(60)), None);
    assert_eq!(b.stats().busy, 1);
    assert_eq!(b.stats().known, 2);
    // Only the first report of a connection counts.
    b.listening(ephemeral(5), addr(6));
    assert_eq!(b.stats().known, 2);
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    assert_eq!(b.stats().known, 1);
    assert_eq!(b.next_dial(t0), None, "redialed after the usual wait");
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(5)));
}

#[test]
fn a_listen_report_takes_the_place_of_a_stale_link() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(2), PeerSource::Dht);
    assert_eq!(b.next_dial(t0), Some(addr(2)));
    b.ended(t0, addr(2), Outcome::Fruitless);
    b.incoming(ephemeral(5));
    b.alias(ephemeral(5), addr(2));
    // 2 reaches us on a connection of its own: it stands for 5 no more.
    assert!(b.incoming(addr(2)));
    b.listening(ephemeral(5), addr(6));
    assert_eq!(b.entries[&addr(6)].stands_for, Some(ephemeral(5)));
    assert_eq!(b.stats().busy, 2, "the connections at 5 and at 2");
    let later = t0 + Duration::from_secs(60);
    assert_eq!(b.next_dial(later), None, "6 is connected already");
    // A live link still keeps a later report out.
    b.listening(ephemeral(5), addr(7));
    assert!(!b.entries.contains_key(&addr(7)));
    b.ended(later, ephemeral(5), Outcome::OfUse);
    assert_eq!(b.next_dial(later + Duration::from_secs(2)), Some(addr(6)));
}

#[test]
fn the_other_phases_report_links_again_once_the_first_link_went_stale() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    // The peer also reaches us from where it listens, and that connection
    // ends: 5 stands for the first connection no more.
    assert!(b.incoming(addr(5)));
    b.ended(t0, addr(5), Outcome::Fruitless);
    // The download repeats the metadata phase's report.
    b.listening(ephemeral(5), addr(5));
    assert_eq!(b.stats().busy, 1);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(60)), None);
}

#[test]
fn a_listen_address_reported_after_its_connection_ended_is_kept() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(ephemeral(5));
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    b.listening(ephemeral(5), addr(5));
    assert_eq!(b.next_dial(t0), Some(addr(5)));
    assert_eq!(b.stats().known, 1);
}

#[test]
fn the_other_phases_report_after_the_end_keeps_the_wait() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    // The metadata fetch reported it; the download's report comes late.
    b.listening(ephemeral(5), addr(5));
    assert_eq!(b.stats().known, 1);
    assert_eq!(b.stats().busy, 0);
    assert_eq!(b.next_dial(t0), None, "keeps its wait");
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(5)));
}

#[test]
fn a_known_address_is_not_dialed_while_its_peer_is_connected_to_us() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(5), PeerSource::Pex);
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    assert_eq!(b.next_dial(t0), None);
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(5)));
}

#[test]
fn a_listen_address_being_dialed_is_left_to_its_dial() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.add(addr(5), PeerSource::Dht);
    assert_eq!(b.next_dial(t0), Some(addr(5)));
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    // The incoming connection's end does not end the dial.
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    assert_eq!(b.stats().busy, 1);
    b.ended(t0, addr(5), Outcome::Failed);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(5)));
}

#[test]
fn a_connection_from_a_listening_port_stays_dialable() {
    // uTP: a peer dials from the socket it listens on, and says so.
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(addr(5));
    b.listening(addr(5), addr(5));
    b.ended(t0, addr(5), Outcome::OfUse);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(5)));
    // And a known address that connects to us was dialable before.
    b.add(addr(6), PeerSource::Dht);
    b.incoming(addr(6));
    b.ended(t0, addr(6), Outcome::OfUse);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(6)));
}

#[test]
fn a_misbehaving_incoming_peer_is_banned_where_it_listens_too() {
    // On loopback a ban covers the one address, not the IP.
    let came_from = SocketAddr::from(([127, 0, 0, 5], 51_413));
    let listen = SocketAddr::from(([127, 0, 0, 5], 6881));
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(came_from);
    b.listening(came_from, listen);
    b.ended(t0, came_from, Outcome::Misbehaved);
    assert!(b.is_banned(listen));
    assert!(!b.add(listen, PeerSource::Dht));
    assert_eq!(b.stats().known, 0);
}

#[test]
fn a_listen_address_keeps_its_backoff_through_a_visit() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut b = book(10);
    b.add(addr(5), PeerSource::Dht);
    b.next_dial(t0);
    b.ended(t0, addr(5), Outcome::Failed);
    assert_eq!(b.next_dial(t0 + s(2)), Some(addr(5)));
    b.ended(t0 + s(2), addr(5), Outcome::Failed);
    // The peer visits: we never reached it where it listens, so the
    // backoff goes on from two failures (4 s), not from none (2 s).
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    b.ended(t0 + s(2), ephemeral(5), Outcome::OfUse);
    assert_eq!(b.next_dial(t0 + s(4)), None);
    assert_eq!(b.next_dial(t0 + s(6)), Some(addr(5)));
}

#[test]
fn a_connection_from_a_listen_address_takes_it_over() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.incoming(ephemeral(5));
    b.listening(ephemeral(5), addr(5));
    // A second connection, from where it listens (as uTP dials).
    b.incoming(addr(5));
    assert_eq!(b.stats().busy, 2);
    b.ended(t0, ephemeral(5), Outcome::OfUse);
    assert_eq!(
        b.next_dial(t0 + Duration::from_secs(60)),
        None,
        "still connected from there"
    );
    assert_eq!(b.stats().busy, 1);
    b.ended(t0, addr(5), Outcome::OfUse);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(2)), Some(addr(5)));
}

#[test]
fn a_full_book_of_busy_entries_refuses_newcomers() {
    let t0 = Instant::now();
    let mut b = book(2);
    b.add(addr(1), PeerSource::Dht);
    b.add(addr(2), PeerSource::Dht);
    b.next_dial(t0);
    b.next_dial(t0);
    assert!(!b.add(addr(3), PeerSource::Dht));
    assert_eq!(b.stats().known, 2);
}

proptest! {
    /// However many addresses a flooding source reports, the book stays
    /// within capacity and keeps every address the other sources gave it
    /// (when they fit in their fair share).
    #[test]
    fn a_flood_from_one_source_never_evicts_the_others(
        honest in 1usize..40,
        flood in 0usize..5_000,
        capacity in 100usize..300,
        interleave in 1usize..50,
    ) {
        let t0 = Instant::now();
        let mut b = book(capacity);
        let mut f = 0;
        for i in 0..honest {
            b.add(addr(i as u32), if i % 2 == 0 { PeerSource::Magnet } else { PeerSource::Incoming });
            for _ in 0..interleave {
                if f < flood {
                    b.add(addr(1_000_000 + f as u32), PeerSource::Dht);
                    f += 1;
                }
            }
        }
        while f < flood {
            b.add(addr(1_000_000 + f as u32), PeerSource::Dht);
            f += 1;
        }
        prop_assert!(b.stats().known <= capacity);
        prop_assert_eq!(b.count(PeerSource::Magnet) + b.count(PeerSource::Incoming), honest);
        // And the honest ones are dialed before any of the flood.
        for _ in 0..honest {
            let a = b.next_dial(t0).unwrap();
            prop_assert!(a.ip() < Ipv4Addr::from(0x0a00_0000 + 1_000_000));
        }
    }

    /// Counts agree with the entries whatever the sequence of operations.
    /// Addresses are ports of three IPs, so that host quotas fill.
    #[test]
    fn counts_stay_consistent(ops in proptest::collection::vec((0u8..13, 0u32..30, 0u8..5), 1..400)) {
        let addr = |i: u32| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i % 3), 6881 + i as u16));
        let t0 = Instant::now();
        let mut b = book(16);
        let mut now = t0;
        for (op, a, s) in ops {
            let source = PeerSource::ALL[s as usize];
            match op {
                0 => { b.add(addr(a), source); }
                7 => { b.add_pex(addr(a), addr(100 + u32::from(s))); }
                8 => b.forget_pex(),
                1 => { b.next_dial(now); }
                2 => b.ended(now, addr(a), Outcome::Failed),
                3 => b.ended(now, addr(a), Outcome::OfUse),
                4 => { b.incoming(addr(a)); }
                5 => b.ended(now, addr(a), Outcome::Misbehaved),
                9 => b.listening(addr(a), addr(u32::from(s) * 7 % 30)),
                10 => b.ended(now, addr(a), Outcome::Fruitless),
                11 => b.ended(now, addr(a), Outcome::Unused),
                12 => b.alias(addr(a), addr(u32::from(s) * 7 % 30)),
                _ => now += Duration::from_secs(u64::from(a)),
            }
            let total: usize = PeerSource::ALL.iter().map(|&s| b.count(s)).sum();
            prop_assert_eq!(total, b.stats().known);
            prop_assert!(b.stats().known <= 16);
            let queued: usize = b.queues.iter().map(BTreeSet::len).sum();
            prop_assert_eq!(queued + b.stats().busy + b.standing, b.stats().known);
            let busy = b.entries.values().filter(|e| e.status == Status::Busy).count();
            let standing = b.entries.values().filter(|e| e.stands_for.is_some()).count();
            prop_assert_eq!(b.stats().busy + standing, busy);
            prop_assert_eq!(b.standing, standing);
            let counted = b.entries.iter().filter(|(_, e)| e.on_host).map(|(a, _)| a.ip());
            prop_assert!(b.quota.counts_exactly(counted));
            // Only a busy entry has dials or connections under it, and a
            // banned address is kept only while one lasts.
            for (&a, e) in &b.entries {
                prop_assert!(e.status == Status::Busy || e.connections == 0);
                prop_assert!(!b.is_banned(a) || e.connections > 0);
            }
            // A listen address stands for a live connection of its peer.
            for e in b.entries.values() {
                if let Some(conn) = e.stands_for {
                    prop_assert_eq!(e.status, Status::Busy);
                    let c = b.entries.get(&conn);
                    prop_assert!(c.is_some_and(|c| c.status == Status::Busy && c.connections > 0));
                }
            }
        }
    }
}

#[test]
fn a_pex_flood_never_evicts_the_other_sources() {
    let t0 = Instant::now();
    let mut b = book(200);
    for i in 0..30 {
        b.add(addr(i), PeerSource::Dht);
    }
    b.add(addr(99), PeerSource::Magnet);
    for f in 0..10_000 {
        b.add_pex(addr(1_000_000 + f), addr(7));
    }
    assert_eq!(b.stats().known, 200);
    assert_eq!(b.count(PeerSource::Dht), 30);
    assert_eq!(b.count(PeerSource::Magnet), 1);
    assert_eq!(b.count(PeerSource::Pex), 169);
    // Every honest address is dialed before any PEX-learned one.
    for _ in 0..31 {
        assert!(b.next_dial(t0).unwrap().ip() < Ipv4Addr::from(0x0a00_0000 + 1_000_000));
    }
}

#[test]
fn pex_addresses_reported_by_more_peers_are_dialed_first() {
    let t0 = Instant::now();
    let mut b = book(100);
    for i in 0..5 {
        b.add_pex(addr(i), addr(50));
    }
    // addr(3) is confirmed by two more peers, addr(4) by one; the same
    // reporter twice counts once.
    b.add_pex(addr(3), addr(51));
    b.add_pex(addr(3), addr(52));
    b.add_pex(addr(4), addr(51));
    b.add_pex(addr(4), addr(51));
    let order: Vec<_> = std::iter::from_fn(|| b.next_dial(t0)).collect();
    assert_eq!(order, [addr(3), addr(4), addr(0), addr(1), addr(2)]);
}

#[test]
fn pex_dials_stay_within_the_budget_however_fast_they_fail() {
    let config = AddressBookConfig::default();
    let t0 = Instant::now();
    let mut b = book(2_000);
    for f in 0..10_000 {
        b.add_pex(addr(f), addr(1_000_000));
    }
    // A DHT address arriving in the middle of the flood is dialed at once.
    b.add(addr(5_000_000), PeerSource::Dht);
    let mut now = t0;
    let mut dials = 0u64;
    let minutes = 10;
    let end = t0 + Duration::from_secs(60 * minutes);
    let mut dht_dialed = false;
    while now < end {
        // Dial everything the book allows, as a torrent with unlimited
        // dial slots would, and every dial fails at once (connection
        // refused on a made-up address). `has_due` says so exactly.
        while b.has_due(now) {
            let a = b.next_dial(now).expect("a due address");
            dht_dialed |= a == addr(5_000_000);
            if a != addr(5_000_000) {
                dials += 1;
            }
            b.ended(now, a, Outcome::Failed);
        }
        assert_eq!(b.next_dial(now), None, "none due");
        now = b
            .poll_timeout(now)
            .unwrap()
            .max(now + Duration::from_millis(1));
    }
    assert!(dht_dialed);
    let budget = u64::from(config.pex_dial_burst)
        + (config.pex_dials_per_sec * 60.0 * minutes as f64) as u64;
    assert!(dials <= budget, "{dials} PEX dials, budget {budget}");
    assert!(
        dials >= budget - 2,
        "the budget is used: {dials} of {budget}"
    );
    assert_eq!(dials, b.pex_dials());
}

#[test]
fn forget_pex_drops_idle_pex_entries_only() {
    let t0 = Instant::now();
    let mut b = book(100);
    b.add_pex(addr(1), addr(50));
    b.add_pex(addr(2), addr(50));
    b.add(addr(3), PeerSource::Dht);
    // Vouched for by the DHT too: no longer PEX's alone.
    b.add_pex(addr(3), addr(50));
    assert_eq!(b.next_dial(t0), Some(addr(3)));
    b.forget_pex();
    assert_eq!(b.count(PeerSource::Pex), 0);
    assert_eq!(b.stats().known, 1);
    assert_eq!(b.next_dial(t0), None);
}

#[test]
fn with_pex_off_a_busy_pex_address_is_not_dialed_again_nor_new_ones_taken() {
    let t0 = Instant::now();
    let mut b = book(100);
    b.add_pex(addr(1), addr(50));
    assert_eq!(b.next_dial(t0), Some(addr(1)));
    b.forget_pex();
    // Busy while PEX went off: forgotten when it ends, not queued again.
    b.ended(t0, addr(1), Outcome::Failed);
    assert!(!b.add_pex(addr(2), addr(50)));
    assert_eq!(b.stats().known, 0);
    assert_eq!(b.next_dial(t0 + Duration::from_secs(600)), None);
}

fn public(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A public peer naming our loopback or our LAN would aim our dials at our
/// own services and neighbours.
#[test]
fn a_peer_names_only_addresses_as_wide_as_its_own() {
    let mut b = book(10);
    let stranger = public("198.51.100.1:6881");
    assert!(!b.add_pex(public("127.0.0.1:22"), stranger));
    assert!(!b.add_pex(public("192.168.1.1:80"), stranger));
    assert!(!b.add_pex(public("[::ffff:10.0.0.1]:80"), stranger));
    assert!(b.add_pex(public("203.0.113.5:6881"), stranger));
    // A neighbour may name neighbours; a local peer, anything.
    assert!(b.add_pex(public("192.168.1.9:6881"), public("192.168.1.7:6881")));
    assert!(b.add_pex(public("127.0.0.1:7000"), public("127.0.0.1:7001")));
    assert_eq!(b.stats().known, 3);
}

/// A list of one victim's ports is no port scan: each address gets a few
/// entries from strangers, each IPv6 /64 a few dozen. The magnet's own
/// word and loopback swarms are not limited.
#[test]
fn strangers_file_a_few_ports_of_one_host() {
    let mut b = book(1_000);
    for port in 1..=100 {
        b.add(SocketAddr::from(([198, 51, 100, 7], port)), PeerSource::Dht);
        let in_one_slash_64 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, port], 6881));
        b.add(in_one_slash_64, PeerSource::Tracker);
    }
    assert_eq!(b.count(PeerSource::Dht), MAX_PER_ADDRESS);
    assert_eq!(b.count(PeerSource::Tracker), MAX_PER_SLASH_64);
    // PEX is the least trusted source: it takes nothing's place.
    for port in 101..=200 {
        b.add_pex(SocketAddr::from(([198, 51, 100, 7], port)), addr(1));
    }
    assert_eq!(b.count(PeerSource::Pex), 0);
    assert!(b.add(
        SocketAddr::from(([198, 51, 100, 7], 999)),
        PeerSource::Magnet
    ));
    for port in 1..=100 {
        assert!(b.add(SocketAddr::from(([127, 0, 0, 1], port)), PeerSource::Dht));
    }
    // A port forgotten makes room for another.
    let t0 = Instant::now();
    let first = SocketAddr::from(([198, 51, 100, 7], 1));
    for _ in 0..AddressBookConfig::default().max_failures {
        b.entries.get_mut(&first).unwrap().status = Status::Busy;
        b.ended(t0, first, Outcome::Failed);
    }
    assert!(!b.entries.contains_key(&first));
    assert!(b.add(
        SocketAddr::from(([198, 51, 100, 7], 1_000)),
        PeerSource::Dht
    ));
}

/// Junk ports a PEX peer names on a seeder's IP take that IP's allowance;
/// the tracker's word for the seeder's real port still gets in, in place
/// of the oldest junk, and less trusted sources cannot push it out.
#[test]
fn a_trusted_source_takes_the_place_of_junk_on_a_full_host() {
    let mut b = book(100);
    let seeder_ip = [198, 51, 100, 7];
    for port in 1..=MAX_PER_ADDRESS as u16 {
        assert!(b.add_pex(SocketAddr::from((seeder_ip, port)), addr(1)));
    }
    let real = SocketAddr::from((seeder_ip, 6881));
    assert!(b.add(real, PeerSource::Tracker));
    assert!(!b.entries.contains_key(&SocketAddr::from((seeder_ip, 1))));
    assert_eq!(b.count(PeerSource::Pex), MAX_PER_ADDRESS - 1);
    // The DHT's word takes the place of the rest of the junk, and of
    // nothing the tracker said.
    for port in 6882..=6884 {
        assert!(b.add(SocketAddr::from((seeder_ip, port)), PeerSource::Dht));
    }
    assert_eq!(b.count(PeerSource::Pex), 0);
    assert!(!b.add(SocketAddr::from((seeder_ip, 6885)), PeerSource::Dht));
    assert!(!b.add_pex(SocketAddr::from((seeder_ip, 6886)), addr(1)));
    assert!(b.entries.contains_key(&real));
}

/// A dial under way is left alone: junk being dialed is not replaced.
#[test]
fn a_busy_entry_keeps_its_place_on_a_full_host() {
    let t0 = Instant::now();
    let mut b = book(100);
    let seeder_ip = [198, 51, 100, 7];
    for port in 1..=MAX_PER_ADDRESS as u16 {
        assert!(b.add_pex(SocketAddr::from((seeder_ip, port)), addr(1)));
    }
    let dialing: Vec<_> = std::iter::from_fn(|| b.next_dial(t0)).collect();
    assert_eq!(dialing.len(), MAX_PER_ADDRESS);
    assert!(!b.add(SocketAddr::from((seeder_ip, 6881)), PeerSource::Tracker));
    b.ended(t0, dialing[0], Outcome::Failed);
    assert!(b.add(SocketAddr::from((seeder_ip, 6881)), PeerSource::Tracker));
    assert!(!b.entries.contains_key(&dialing[0]));
}

/// One IP with many connections reported the same addresses from each,
/// and each connection counted as another reporter.
#[test]
fn reporters_are_counted_by_ip() {
    let t0 = Instant::now();
    let mut b = book(10);
    let (honest, pushed) = (public("198.51.100.1:6881"), public("198.51.100.2:6881"));
    b.add_pex(honest, public("203.0.113.1:6881"));
    b.add_pex(honest, public("203.0.113.2:6881"));
    for port in 5_000..5_008 {
        b.add_pex(pushed, SocketAddr::from(([203, 0, 113, 5], port)));
    }
    assert_eq!(b.next_dial(t0), Some(honest));
}

/// `::ffff:1.2.3.4` is 1.2.3.4 to the kernel: banned with it, and filed
/// as it.
#[test]
fn an_ipv4_mapped_address_is_its_ipv4() {
    let mut b = book(10);
    b.ban(public("198.51.100.4:6881"));
    assert!(!b.add_pex(public("[::ffff:198.51.100.4]:7000"), addr(1)));
    assert!(!b.add(public("[::ffff:198.51.100.4]:7000"), PeerSource::Dht));
    assert!(b.is_banned(public("[::ffff:198.51.100.4]:7001")));
    assert!(b.add(public("[::ffff:198.51.100.5]:7000"), PeerSource::Dht));
    assert!(b.entries.contains_key(&public("198.51.100.5:7000")));
}

#[test]
fn broadcast_is_unusable() {
    let mut b = book(10);
    assert!(!b.add(public("255.255.255.255:6881"), PeerSource::Dht));
}
