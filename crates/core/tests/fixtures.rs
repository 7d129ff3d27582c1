//! Torrents made by real tools (see fixtures/README.md) parse to what those
//! tools reported, and their pieces hash the regenerated content.

#![allow(clippy::unwrap_used)]

use lodestone_core::Metainfo;
use sha1::{Digest, Sha1};

struct Expected {
    file: &'static str,
    /// As reported by the tool (transmission-show "Hash:", libtorrent `info_hashes().v1`).
    info_hash: &'static str,
    name: &'static str,
    total_length: u64,
    piece_length: u32,
    piece_count: u32,
    private: bool,
    /// Path below the name (empty for single-file), length, padding.
    files: &'static [(&'static str, u64, bool)],
    /// Whether our writer reproduces the file byte for byte (it drops keys it
    /// does not model, like transmission's `encoding` and v2 `piece layers`).
    identical_rewrite: bool,
}

const MULTI: &[(&str, u64, bool)] = &[
    ("a.txt", 20000, false),
    ("sub/b.bin", 1, false),
    ("sub/deeper/naïve.txt", 15000, false),
    ("sub/empty", 0, false),
];

const FIXTURES: &[Expected] = &[
    Expected {
        file: "mktorrent-single.torrent",
        info_hash: "de042ca019ba37e96e9df9999212db88438b47eb",
        name: "single.bin",
        total_length: 40000,
        piece_length: 32768,
        piece_count: 2,
        private: false,
        files: &[("", 40000, false)],
        identical_rewrite: true,
    },
    Expected {
        file: "mktorrent-multi.torrent",
        info_hash: "2bafb5b72c6718371baf7ef70bdb1ab5d742e705",
        name: "multi",
        total_length: 35001,
        piece_length: 32768,
        piece_count: 2,
        private: false,
        files: MULTI,
        identical_rewrite: true,
    },
    Expected {
        file: "transmission-single.torrent",
        info_hash: "b8e6d3e636f3f11fe4d2e94862526810dc422894",
        name: "single.bin",
        total_length: 40000,
        piece_length: 16384,
        piece_count: 3,
        private: false,
        files: &[("", 40000, false)],
        identical_rewrite: false,
    },
    Expected {
        file: "transmission-multi-private.torrent",
        info_hash: "92d1da020b3fecb48122fccac5a9101ec136cec7",
        name: "multi",
        total_length: 35001,
        piece_length: 16384,
        piece_count: 3,
        private: true,
        // transmission-create leaves out empty files.
        files: &[
            ("a.txt", 20000, false),
            ("sub/b.bin", 1, false),
            ("sub/deeper/naïve.txt", 15000, false),
        ],
        identical_rewrite: false,
    },
    Expected {
        file: "libtorrent-v1-single.torrent",
        info_hash: "3c214e52c80194c3feee9b34fc53417b48e1806b",
        name: "single.bin",
        total_length: 40000,
        piece_length: 16384,
        piece_count: 3,
        private: false,
        files: &[("", 40000, false)],
        identical_rewrite: true,
    },
    Expected {
        file: "libtorrent-v1-multi.torrent",
        info_hash: "b565a6f78688c629b325509b23063cecdcc278cb",
        name: "multi",
        total_length: 35001,
        piece_length: 16384,
        piece_count: 3,
        private: false,
        // libtorrent keeps the directory walk's order.
        files: &[
            ("sub/b.bin", 1, false),
            ("sub/empty", 0, false),
            ("sub/deeper/naïve.txt", 15000, false),
            ("a.txt", 20000, false),
        ],
        identical_rewrite: true,
    },
    Expected {
        file: "libtorrent-hybrid-multi.torrent",
        info_hash: "3db9d41fb04da5747c8437585f498b450cfd2528",
        name: "multi",
        total_length: 65536,
        piece_length: 16384,
        piece_count: 4,
        private: false,
        // Hybrid torrents align every file to a piece with BEP 47 padding.
        files: &[
            ("a.txt", 20000, false),
            (".pad/12768", 12768, true),
            ("sub/b.bin", 1, false),
            (".pad/16383", 16383, true),
            ("sub/deeper/naïve.txt", 15000, false),
            (".pad/1384", 1384, true),
            ("sub/empty", 0, false),
        ],
        identical_rewrite: false,
    },
];

fn load(file: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The content make_content.py wrote: byte i of an n-byte file is (7i + n) mod 251.
fn content(length: u64) -> Vec<u8> {
    (0..length)
        .map(|i| ((i * 7 + length) % 251) as u8)
        .collect()
}

#[test]
fn fixtures_match_what_their_tools_reported() {
    for want in FIXTURES {
        let bytes = load(want.file);
        let m =
            Metainfo::from_torrent_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", want.file));
        let ctx = want.file;
        assert_eq!(m.info_hash.to_hex(), want.info_hash, "{ctx}");
        assert_eq!(m.info.name, want.name, "{ctx}");
        assert_eq!(m.info.total_length, want.total_length, "{ctx}");
        assert_eq!(m.info.piece_length, want.piece_length, "{ctx}");
        assert_eq!(m.info.piece_count(), want.piece_count, "{ctx}");
        assert_eq!(m.info.private, want.private, "{ctx}");
        assert_eq!(
            m.announce.as_deref(),
            Some("http://tracker.invalid/announce"),
            "{ctx}"
        );
        let files: Vec<(String, u64, bool)> = m
            .info
            .files
            .iter()
            .map(|f| (f.path[1..].join("/"), f.length, f.padding))
            .collect();
        let want_files: Vec<(String, u64, bool)> = want
            .files
            .iter()
            .map(|&(p, l, pad)| (p.to_owned(), l, pad))
            .collect();
        assert_eq!(files, want_files, "{ctx}");
        for f in &m.info.files {
            assert_eq!(f.path[0], want.name, "{ctx}");
        }
        assert_eq!(m.info.is_multi_file(), want.name == "multi", "{ctx}");
    }
}

#[test]
fn piece_hashes_match_the_regenerated_content() {
    for want in FIXTURES {
        let m = Metainfo::from_torrent_bytes(&load(want.file)).unwrap();
        let info = &m.info;
        let data: Vec<Vec<u8>> = info
            .files
            .iter()
            .map(|f| {
                if f.padding {
                    vec![0; f.length as usize]
                } else {
                    content(f.length)
                }
            })
            .collect();
        for piece in 0..info.piece_count() {
            let mut sha = Sha1::new();
            let mut seen = 0;
            for slice in info.files_in_piece(piece) {
                assert_eq!(slice.range_offset, seen, "{} piece {piece}", want.file);
                let start = slice.file_offset as usize;
                sha.update(&data[slice.file_index][start..start + slice.len as usize]);
                seen += slice.len;
            }
            assert_eq!(seen, u64::from(info.piece_size(piece)));
            let hash: [u8; 20] = sha.finalize().into();
            assert_eq!(
                Some(&hash),
                info.piece_hash(piece),
                "{} piece {piece}",
                want.file
            );
        }
    }
}

#[test]
fn optional_fields_are_kept() {
    let m = Metainfo::from_torrent_bytes(&load("mktorrent-single.torrent")).unwrap();
    assert_eq!(m.comment.as_deref(), Some("made by mktorrent"));
    assert_eq!(m.created_by.as_deref(), Some("mktorrent 1.1"));
    assert!(m.creation_date.is_some_and(|d| d > 1_600_000_000));
    let m = Metainfo::from_torrent_bytes(&load("mktorrent-multi.torrent")).unwrap();
    assert_eq!(
        m.announce_list,
        [
            ["http://tracker.invalid/announce"],
            ["http://backup.invalid/announce"]
        ]
    );
    let magnet = m.magnet().to_string();
    assert_eq!(
        magnet,
        "magnet:?xt=urn:btih:2bafb5b72c6718371baf7ef70bdb1ab5d742e705&dn=multi\
         &tr=http://tracker.invalid/announce&tr=http://backup.invalid/announce"
    );
    let m = Metainfo::from_torrent_bytes(&load("transmission-single.torrent")).unwrap();
    assert_eq!(m.comment.as_deref(), Some("made by transmission"));
    assert!(
        m.created_by
            .as_deref()
            .is_some_and(|c| c.starts_with("Transmission/"))
    );
}

#[test]
fn rewriting_keeps_the_infohash_and_reproduces_canonical_files() {
    for want in FIXTURES {
        let bytes = load(want.file);
        let m = Metainfo::from_torrent_bytes(&bytes).unwrap();
        let written = m.to_torrent_bytes();
        if want.identical_rewrite {
            assert!(
                written == bytes,
                "{}: rewrite differs from the original",
                want.file
            );
        }
        let again = Metainfo::from_torrent_bytes(&written).unwrap();
        assert_eq!(again, m, "{}", want.file);
        let from_info = Metainfo::from_info_bytes(m.raw_info().to_vec()).unwrap();
        assert_eq!(from_info.info_hash, m.info_hash);
        assert_eq!(from_info.info, m.info);
    }
}
