//! Hostile and malformed torrents: each is refused with an error that names
//! the problem, and none panics.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use lodestone_bencode::{OwnedValue, encode};
use lodestone_core::Metainfo;
use lodestone_core::metainfo::{MetainfoError, PathProblem};

fn s(bytes: &[u8]) -> OwnedValue {
    OwnedValue::Bytes(bytes.to_vec())
}

fn i(n: i64) -> OwnedValue {
    OwnedValue::Int(n)
}

fn dict(entries: Vec<(&str, OwnedValue)>) -> OwnedValue {
    OwnedValue::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn file(length: i64, path: &[&[u8]]) -> OwnedValue {
    dict(vec![
        ("length", i(length)),
        (
            "path",
            OwnedValue::List(path.iter().map(|c| s(c)).collect()),
        ),
    ])
}

/// A multi-file info dict with enough (zero) piece hashes for the lengths.
fn multi(files: Vec<OwnedValue>) -> OwnedValue {
    let total: i64 = files
        .iter()
        .map(|f| match f {
            OwnedValue::Dict(d) => match d.get(&b"length"[..]) {
                Some(OwnedValue::Int(n)) => (*n).max(0),
                _ => 0,
            },
            _ => 0,
        })
        .fold(0i64, |a, b| a.saturating_add(b));
    let pieces = (total as u64).div_ceil(16384) as usize;
    dict(vec![
        ("files", OwnedValue::List(files)),
        ("name", s(b"t")),
        ("piece length", i(16384)),
        ("pieces", s(&vec![0; pieces.min(1000) * 20])),
    ])
}

fn single(length: i64, piece_length: i64, pieces: usize) -> OwnedValue {
    dict(vec![
        ("length", i(length)),
        ("name", s(b"t")),
        ("piece length", i(piece_length)),
        ("pieces", s(&vec![0; pieces * 20])),
    ])
}

fn with(mut info: OwnedValue, key: &str, value: Option<OwnedValue>) -> OwnedValue {
    if let OwnedValue::Dict(d) = &mut info {
        match value {
            Some(v) => d.insert(key.as_bytes().to_vec(), v),
            None => d.remove(key.as_bytes()),
        };
    }
    info
}

fn torrent(info: OwnedValue) -> Vec<u8> {
    encode(&dict(vec![("info", info)]))
}

/// Parses both as a `.torrent` and as bare info bytes; both must agree.
fn refuse(info: OwnedValue) -> MetainfoError {
    let from_torrent = Metainfo::from_torrent_bytes(&torrent(info.clone())).unwrap_err();
    let from_info = Metainfo::from_info_bytes(encode(&info)).unwrap_err();
    assert_eq!(from_torrent, from_info);
    from_torrent
}

fn message(info: OwnedValue) -> String {
    refuse(info).to_string()
}

#[test]
fn the_builders_make_valid_torrents() {
    Metainfo::from_torrent_bytes(&torrent(single(10, 4, 3))).unwrap();
    let m = Metainfo::from_torrent_bytes(&torrent(multi(vec![
        file(5, &[b"d", b"a"]),
        file(7, &[b"b"]),
    ])))
    .unwrap();
    assert_eq!(
        m.info.files[0].relative_path(),
        std::path::Path::new("t/d/a")
    );
}

#[test]
fn escaping_paths_are_refused() {
    assert_eq!(
        message(multi(vec![file(10, &[b"..", b"etc", b"passwd"])])),
        "file path \"../etc/passwd\" is refused: component \"..\" would leave the output directory"
    );
    assert_eq!(
        message(multi(vec![file(10, &[b"", b"etc", b"passwd"])])),
        "file path \"/etc/passwd\" is refused: it starts with an empty component, which makes it absolute"
    );
    let cases: &[(&[&[u8]], PathProblem)] = &[
        (&[b"a", b"", b"b"], PathProblem::EmptyComponent),
        (&[b"a", b"."], PathProblem::CurrentDir),
        (&[b"a", b".."], PathProblem::ParentDir),
        (
            &[b"..\\..\\evil"],
            PathProblem::Separator("..\\..\\evil".into()),
        ),
        (&[b"a/../../b"], PathProblem::Separator("a/../../b".into())),
        (&[b"a\0b"], PathProblem::Nul),
        (&[b"C:", b"x"], PathProblem::DrivePrefix("C:".into())),
        (&[b"c:evil"], PathProblem::DrivePrefix("c:evil".into())),
        (&[], PathProblem::Empty),
    ];
    for (path, problem) in cases {
        match refuse(multi(vec![file(10, path)])) {
            MetainfoError::UnsafePath { problem: got, .. } => assert_eq!(&got, problem, "{path:?}"),
            other => panic!("{path:?}: {other}"),
        }
    }
}

#[test]
fn unsafe_names_are_refused() {
    for name in [&b".."[..], b".", b"", b"a/b", b"a\\b", b"C:", b"x\0"] {
        let info = with(single(10, 16384, 1), "name", Some(s(name)));
        assert!(
            matches!(refuse(info), MetainfoError::UnsafePath { .. }),
            "{name:?}"
        );
    }
}

#[test]
fn utf8_twins_are_preferred_and_validated() {
    let info = with(
        single(10, 16384, 1),
        "name.utf-8",
        Some(s("naïve".as_bytes())),
    );
    let m = Metainfo::from_info_bytes(encode(&info)).unwrap();
    assert_eq!(m.info.name, "naïve");
    // The twin is what gets written, so it is what gets checked.
    let info = with(single(10, 16384, 1), "name.utf-8", Some(s(b"..")));
    assert!(matches!(refuse(info), MetainfoError::UnsafePath { .. }));
    let entry = with(
        file(10, &[b"plain"]),
        "path.utf-8",
        Some(OwnedValue::List(vec![s(b".."), s(b"x")])),
    );
    assert!(message(multi(vec![entry])).contains("\"../x\""));
    let entry = with(
        file(10, &[b"plain"]),
        "path.utf-8",
        Some(OwnedValue::List(vec![s("é".as_bytes())])),
    );
    let m = Metainfo::from_info_bytes(encode(&multi(vec![entry]))).unwrap();
    assert_eq!(m.info.files[0].path, ["t", "é"]);
}

#[test]
fn non_utf8_names_are_decoded_lossily() {
    let info = with(single(10, 16384, 1), "name", Some(s(b"caf\xe9")));
    let m = Metainfo::from_info_bytes(encode(&info)).unwrap();
    assert_eq!(m.info.name, "caf\u{fffd}");
}

#[test]
fn clashing_paths_are_refused() {
    let twice = multi(vec![file(1, &[b"a"]), file(1, &[b"a"])]);
    assert_eq!(
        message(twice),
        "file path \"t/a\" is used twice (as two files, or as a file and a directory)"
    );
    assert!(matches!(
        refuse(multi(vec![file(1, &[b"a"]), file(1, &[b"a", b"b"])])),
        MetainfoError::PathClash(p) if p == "t/a"
    ));
    assert!(matches!(
        refuse(multi(vec![file(1, &[b"a", b"b"]), file(1, &[b"a"])])),
        MetainfoError::PathClash(p) if p == "t/a"
    ));
    // Padding files never hit the disk, so libtorrent's repeated names are fine.
    let pad = |n| with(file(n, &[b".pad", b"7"]), "attr", Some(s(b"p")));
    let m = Metainfo::from_info_bytes(encode(&multi(vec![
        file(1, &[b"a"]),
        pad(7),
        pad(7),
        file(1, &[b"b"]),
    ])))
    .unwrap();
    let padding: Vec<bool> = m.info.files.iter().map(|f| f.padding).collect();
    assert_eq!(padding, [false, true, true, false]);
    assert_eq!(m.info.files[3].offset, 15);
}

/// Runs `work` on its own thread and fails if it has not finished within a
/// minute: a liveness bound for input that made the parser quadratic, far
/// above what the work takes (milliseconds), so it only ever fails on a hang.
fn finishes<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(work()));
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("still working after a minute")
}

#[test]
fn a_path_of_very_many_components_is_checked_in_linear_time() {
    let deep: Vec<&[u8]> = vec![b"a"; 200_000];
    let info = multi(vec![file(1, &deep), file(1, &[b"b"])]);
    let m = finishes(move || Metainfo::from_info_bytes(encode(&info))).unwrap();
    assert_eq!(m.info.files[0].path.len(), 200_001);
    // A clash deep down is still found.
    let mut below: Vec<&[u8]> = deep.clone();
    below.push(b"c");
    let clash = multi(vec![file(1, &deep), file(1, &below)]);
    assert!(matches!(
        finishes(move || Metainfo::from_info_bytes(encode(&clash))).unwrap_err(),
        MetainfoError::PathClash(p) if p.len() == "t".len() + 2 * 200_000
    ));
}

#[test]
fn a_huge_announce_list_makes_a_magnet_in_linear_time() {
    let urls: Vec<OwnedValue> = (0..300_000)
        .map(|n| s(format!("udp://t{n}:1").as_bytes()))
        .collect();
    let mut tiers = vec![OwnedValue::List(urls)];
    tiers.push(OwnedValue::List(vec![s(b"udp://t7:1")]));
    let root = dict(vec![
        ("announce-list", OwnedValue::List(tiers)),
        ("info", single(10, 4, 3)),
    ]);
    let m = Metainfo::from_torrent_bytes(&encode(&root)).unwrap();
    let magnet = finishes(move || m.magnet());
    // Every tracker once, in order: the repeat in the second tier is dropped.
    assert_eq!(magnet.trackers.len(), 300_000);
    assert_eq!(magnet.trackers[7], "udp://t7:1");
}

#[test]
fn piece_arithmetic_is_checked() {
    let info = with(single(10, 4, 3), "pieces", Some(s(&[0; 41])));
    assert_eq!(
        message(info),
        "pieces is 41 bytes long, not a multiple of 20"
    );
    assert_eq!(
        message(single(10, 4, 2)),
        "10 bytes in pieces of 4 need 3 piece hashes, but the torrent has 2"
    );
    assert!(matches!(
        refuse(single(10, 4, 4)),
        MetainfoError::PieceCount {
            expected: 3,
            got: 4,
            ..
        }
    ));
    for bad in [0, -1, i64::from(u32::MAX) + 1, (256 << 20) + 1] {
        assert!(
            matches!(refuse(single(10, bad, 1)), MetainfoError::PieceLength(n) if n == bad),
            "{bad}"
        );
    }
    assert_eq!(
        message(single(10, 0, 1)),
        "piece length 0 is refused: it must be between 1 byte and 256 MiB"
    );
    // Neither a power of two nor a multiple of 16 KiB is required.
    Metainfo::from_info_bytes(encode(&single(10, 3, 4))).unwrap();
    Metainfo::from_info_bytes(encode(&single(10, 256 << 20, 1))).unwrap();
}

#[test]
fn lengths_are_checked() {
    assert_eq!(
        message(single(-1, 4, 1)),
        "file \"t\" has negative length -1"
    );
    assert_eq!(
        message(multi(vec![file(5, &[b"a"]), file(-5, &[b"b"])])),
        "file \"b\" has negative length -5"
    );
    assert_eq!(
        refuse(multi(vec![
            file(i64::MAX, &[b"a"]),
            file(i64::MAX, &[b"b"]),
            file(2, &[b"c"])
        ])),
        MetainfoError::TotalOverflow
    );
    // A huge length with few hashes fails on the count, without allocating for it.
    assert!(matches!(
        refuse(single(i64::MAX, 1, 1)),
        MetainfoError::PieceCount { got: 1, .. }
    ));
    assert_eq!(
        message(single(0, 4, 0)),
        "torrent has no data (total length 0)"
    );
    assert_eq!(refuse(multi(vec![])), MetainfoError::NoData);
    assert_eq!(
        refuse(multi(vec![file(0, &[b"a"]), file(0, &[b"b"])])),
        MetainfoError::NoData
    );
}

#[test]
fn structure_is_checked() {
    assert_eq!(
        message(with(
            single(10, 4, 3),
            "files",
            Some(OwnedValue::List(vec![file(1, &[b"a"])]))
        )),
        "info dictionary must have exactly one of \"length\" and \"files\""
    );
    assert_eq!(
        refuse(with(single(10, 4, 3), "length", None)),
        MetainfoError::Layout
    );
    assert_eq!(
        message(with(single(10, 4, 3), "name", None)),
        "info dictionary has no \"name\" entry"
    );
    assert_eq!(
        message(with(single(10, 4, 3), "name", Some(i(3)))),
        "\"name\" in info dictionary is not a string"
    );
    assert_eq!(
        message(with(single(10, 4, 3), "length", Some(s(b"10")))),
        "\"length\" in info dictionary is not an integer"
    );
    assert_eq!(
        message(with(single(10, 4, 3), "pieces", None)),
        "info dictionary has no \"pieces\" entry"
    );
    assert_eq!(
        message(multi(vec![dict(vec![(
            "path",
            OwnedValue::List(vec![s(b"a")])
        )])])),
        "file 0 has no \"length\" entry"
    );
    assert_eq!(
        message(multi(vec![dict(vec![("length", i(1)), ("path", s(b"a"))])])),
        "\"path\" in file 0 is not a list of strings"
    );
    assert_eq!(
        message(multi(vec![i(1)])),
        "a files entry is not a dictionary"
    );
    assert_eq!(
        message(with(single(10, 4, 3), "files", Some(i(1)))),
        "info dictionary must have exactly one of \"length\" and \"files\""
    );
    assert_eq!(
        message(OwnedValue::List(vec![])),
        "info is not a dictionary"
    );
}

#[test]
fn v2_only_is_refused_and_hybrid_uses_v1() {
    let tree = dict(vec![("a", dict(vec![("", dict(vec![("length", i(10))]))]))]);
    let v2 = dict(vec![
        ("file tree", tree.clone()),
        ("meta version", i(2)),
        ("name", s(b"t")),
        ("piece length", i(16384)),
    ]);
    assert_eq!(message(v2), "v2-only torrents are not supported");
    let hybrid = with(
        with(single(10, 16384, 1), "file tree", Some(tree)),
        "meta version",
        Some(i(2)),
    );
    let m = Metainfo::from_info_bytes(encode(&hybrid)).unwrap();
    assert_eq!(m.info.total_length, 10);
}

#[test]
fn the_outer_file_is_checked() {
    // The whole error chain, as the CLI prints it.
    let err = |bytes: &[u8]| {
        let e = Metainfo::from_torrent_bytes(bytes).unwrap_err();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    };
    assert_eq!(err(b"le"), "torrent file is not a dictionary");
    assert_eq!(err(b"de"), "torrent file has no \"info\" entry");
    assert_eq!(err(b"d4:infoi1ee"), "info is not a dictionary");
    assert!(err(b"d4:infod").starts_with("torrent is not valid bencode: bencode ends early"));
    let mut trailing = torrent(single(10, 4, 3));
    trailing.extend_from_slice(b"junk");
    assert!(err(&trailing).contains("unexpected bytes after the value"));
    assert!(Metainfo::from_info_bytes(b"d4:name1:te".to_vec()).is_err());
    assert!(Metainfo::from_info_bytes(Vec::new()).is_err());
    // Malformed optional fields are skipped, not fatal.
    let odd = encode(&dict(vec![
        ("announce", i(1)),
        (
            "announce-list",
            OwnedValue::List(vec![
                i(1),
                OwnedValue::List(vec![]),
                OwnedValue::List(vec![s(b"u"), i(2)]),
            ]),
        ),
        ("creation date", s(b"today")),
        ("info", single(10, 4, 3)),
    ]));
    let m = Metainfo::from_torrent_bytes(&odd).unwrap();
    assert_eq!(m.announce, None);
    assert_eq!(m.announce_list, [["u"]]);
    assert_eq!(m.creation_date, None);
}

#[test]
fn deep_nesting_is_refused_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let nested = vec![b'l'; 1 << 20];
            let plain = Metainfo::from_torrent_bytes(&nested).unwrap_err();
            let mut in_info = b"d4:info".to_vec();
            in_info.extend_from_slice(&nested);
            let inside = Metainfo::from_torrent_bytes(&in_info).unwrap_err();
            let bare = Metainfo::from_info_bytes(nested).unwrap_err();
            [plain, inside, bare]
        })
        .unwrap();
    for err in handle.join().unwrap() {
        assert!(
            matches!(
                err,
                MetainfoError::Bencode(lodestone_bencode::Error::TooDeep { .. })
            ),
            "{err}"
        );
    }
}
