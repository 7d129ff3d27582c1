use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), port))
}

#[test]
fn golden_bytes_of_each_type() {
    assert_eq!(
        HolepunchMessage::rendezvous(v4(0x1ae1)).encode(),
        [0, 0, 10, 1, 2, 3, 0x1a, 0xe1, 0, 0, 0, 0]
    );
    assert_eq!(
        HolepunchMessage::connect(v4(1)).encode(),
        [1, 0, 10, 1, 2, 3, 0, 1, 0, 0, 0, 0]
    );
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 2));
    let error = HolepunchMessage::error(v6, HolepunchErrorCode::NoSupport).encode();
    assert_eq!(error.len(), MAX_HOLEPUNCH_LEN);
    assert_eq!(&error[..2], [2, 1]);
    assert_eq!(&error[2..18], Ipv6Addr::LOCALHOST.octets());
    assert_eq!(&error[18..], [0, 2, 0, 0, 0, 3]);
}

#[test]
fn error_codes_round_trip_and_unknown_ones_are_kept() {
    for code in 0..8 {
        assert_eq!(HolepunchErrorCode::from_code(code).code(), code);
    }
    assert_eq!(
        HolepunchErrorCode::from_code(2),
        HolepunchErrorCode::NotConnected
    );
    assert_eq!(
        HolepunchErrorCode::from_code(9),
        HolepunchErrorCode::Other(9)
    );
}

#[test]
fn an_error_code_in_a_connect_is_ignored() {
    let mut bytes = HolepunchMessage::connect(v4(7)).encode();
    bytes[11] = 4;
    assert_eq!(
        HolepunchMessage::decode(&bytes),
        Ok(HolepunchMessage::connect(v4(7)))
    );
}

#[test]
fn libtorrent_leaves_the_error_code_out_of_connect_and_rendezvous() {
    // Bytes as libtorrent 2.0.8 writes them: no error code unless `error`.
    let connect = [1, 0, 10, 1, 2, 3, 0x1a, 0xe1];
    assert_eq!(
        HolepunchMessage::decode(&connect),
        Ok(HolepunchMessage::connect(v4(0x1ae1)))
    );
    let rendezvous = [0, 0, 10, 1, 2, 3, 0, 7];
    assert_eq!(
        HolepunchMessage::decode(&rendezvous),
        Ok(HolepunchMessage::rendezvous(v4(7)))
    );
    // An error without its code, or a code cut short, is refused.
    let error = [2, 0, 10, 1, 2, 3, 0, 7];
    assert_eq!(
        HolepunchMessage::decode(&error),
        Err(HolepunchError::Truncated { len: 8 })
    );
    let cut = [1, 0, 10, 1, 2, 3, 0, 7, 0, 0];
    assert_eq!(
        HolepunchMessage::decode(&cut),
        Err(HolepunchError::Truncated { len: 10 })
    );
}

#[test]
fn v4_mapped_addresses_are_sent_as_v4() {
    let mapped = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(), 9));
    let bytes = HolepunchMessage::connect(mapped).encode();
    assert_eq!(
        HolepunchMessage::decode(&bytes),
        Ok(HolepunchMessage::connect(v4(9)))
    );
}

#[test]
fn malformed_payloads_are_refused_with_their_reason() {
    let good = HolepunchMessage::rendezvous(v4(1)).encode();
    assert_eq!(
        HolepunchMessage::decode(&[]),
        Err(HolepunchError::Truncated { len: 0 })
    );
    assert_eq!(
        HolepunchMessage::decode(&good[..11]),
        Err(HolepunchError::Truncated { len: 11 })
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        HolepunchMessage::decode(&long),
        Err(HolepunchError::Trailing { extra: 1 })
    );
    let mut kind = good.clone();
    kind[0] = 3;
    assert_eq!(
        HolepunchMessage::decode(&kind),
        Err(HolepunchError::UnknownType(3))
    );
    let mut family = good;
    family[1] = 2;
    assert_eq!(
        HolepunchMessage::decode(&family),
        Err(HolepunchError::UnknownAddrType(2))
    );
    // An IPv6 address type with an IPv4-sized body is short, not garbage.
    let mut short = HolepunchMessage::error(v4(1), HolepunchErrorCode::NoSelf).encode();
    short[1] = 1;
    assert_eq!(
        HolepunchMessage::decode(&short),
        Err(HolepunchError::Truncated { len: 12 })
    );
}

#[test]
fn the_meter_allows_a_burst_then_one_per_refill() {
    let t0 = Instant::now();
    let mut meter = HolepunchMeter::default();
    for _ in 0..HOLEPUNCH_BURST {
        assert!(meter.allow(t0));
    }
    assert!(!meter.allow(t0));
    assert!(!meter.allow(t0 + HOLEPUNCH_REFILL - Duration::from_millis(1)));
    assert!(meter.allow(t0 + HOLEPUNCH_REFILL));
    assert!(!meter.allow(t0 + HOLEPUNCH_REFILL + Duration::from_secs(1)));
    assert_eq!(meter.refused(), 3);
    // A long silence refills the burst, no more.
    let later = t0 + HOLEPUNCH_REFILL * 1000;
    let allowed = (0..10).filter(|_| meter.allow(later)).count();
    assert_eq!(allowed, HOLEPUNCH_BURST as usize);
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
    ]
}

fn any_kind() -> impl Strategy<Value = HolepunchKind> {
    prop_oneof![
        Just(HolepunchKind::Rendezvous),
        Just(HolepunchKind::Connect),
        any::<u32>().prop_map(|c| HolepunchKind::Error(HolepunchErrorCode::from_code(c))),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(kind in any_kind(), addr in any_addr()) {
        let canonical = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let message = HolepunchMessage { kind, addr };
        let decoded = HolepunchMessage::decode(&message.encode()).unwrap();
        prop_assert_eq!(decoded, HolepunchMessage { kind, addr: canonical });
    }

    #[test]
    fn decoding_never_panics_and_accepted_bytes_are_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..40)
    ) {
        if let Ok(message) = HolepunchMessage::decode(&bytes) {
            let mut expected = bytes.clone();
            // libtorrent's form, without the code: we add it.
            let endpoint = if bytes[1] == 0 { 8 } else { 20 };
            if expected.len() == endpoint {
                expected.extend_from_slice(&[0; 4]);
            }
            // Only an error message carries its code; others read it as 0.
            if !matches!(message.kind, HolepunchKind::Error(_)) {
                let n = expected.len();
                expected[n - 4..].fill(0);
            }
            // A mapped address in an IPv6 body is re-sent as IPv4.
            if message.addr.is_ipv4() && bytes[1] == 1 {
                return Ok(());
            }
            prop_assert_eq!(message.encode(), expected);
        }
    }
}
