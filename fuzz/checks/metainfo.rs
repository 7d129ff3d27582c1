//! Properties of metainfo parsing on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `metainfo` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The input is tried both as a `.torrent` file and as a bare info
//! dictionary (what ut_metadata delivers). Whatever is accepted must:
//! * hash to its infohash (SHA-1 of the raw info bytes, kept verbatim);
//! * rebuild identically from its raw info bytes, and a written `.torrent`
//!   must parse back to an equal `Metainfo`;
//! * satisfy the documented `Info` invariants: piece geometry, file offsets,
//!   safe relative paths, no two files (padding aside) clashing on disk;
//! * name every file on disk by components any file system takes (at most
//!   252 bytes, no control or invisible character, never `.` or `..`), the
//!   names the clash check compares.

use std::collections::HashSet;

use lodestone_core::metainfo::{disk_component, invisible};
use lodestone_core::{Info, Metainfo};
use sha1::{Digest, Sha1};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    if let Ok(torrent) = Metainfo::from_torrent_bytes(data) {
        check_metainfo(&torrent);
        let written = torrent.to_torrent_bytes();
        let reread = Metainfo::from_torrent_bytes(&written)
            .unwrap_or_else(|e| panic!("a written torrent does not parse: {e}"));
        assert_eq!(reread, torrent, "write → parse changed the torrent");
    }
    if let Ok(bare) = Metainfo::from_info_bytes(data.to_vec()) {
        assert_eq!(bare.raw_info(), data, "raw info bytes not kept verbatim");
        check_metainfo(&bare);
    }
}

fn check_metainfo(metainfo: &Metainfo) {
    let raw = metainfo.raw_info();
    let digest: [u8; 20] = Sha1::digest(raw).into();
    assert_eq!(
        metainfo.info_hash.as_bytes(),
        &digest,
        "infohash is not SHA-1(raw info)"
    );
    let rebuilt = Metainfo::from_info_bytes(raw.to_vec())
        .unwrap_or_else(|e| panic!("raw info of an accepted torrent refused: {e}"));
    assert_eq!(rebuilt.info_hash, metainfo.info_hash);
    assert!(
        rebuilt.info == metainfo.info,
        "info differs when rebuilt from raw bytes"
    );
    check_info(&metainfo.info);
}

fn check_info(info: &Info) {
    let piece_length = u64::from(info.piece_length);
    assert!(piece_length > 0, "zero piece length");
    assert!(info.total_length > 0, "empty torrent accepted");
    let mut offset = 0u64;
    for file in &info.files {
        assert_eq!(file.offset, offset, "file offsets not consecutive");
        offset = offset.checked_add(file.length).expect("offsets overflow");
        assert!(!file.path.is_empty(), "empty path");
        for component in &file.path {
            assert!(
                !component.is_empty()
                    && component != "."
                    && component != ".."
                    && !component.contains(['/', '\\', '\0']),
                "unsafe path component {component:?}"
            );
        }
    }
    assert_eq!(
        offset, info.total_length,
        "total length is not the sum of files"
    );
    let count = u64::from(info.piece_count());
    assert_eq!(
        count,
        info.total_length.div_ceil(piece_length),
        "piece count"
    );
    assert_eq!(info.piece_hashes.len() as u64, count);
    let last = info.piece_count() - 1;
    let last_size = u64::from(info.piece_size(last));
    assert!(
        last_size > 0 && last_size <= piece_length,
        "last piece size {last_size}"
    );
    assert_eq!(
        u64::from(last) * piece_length + last_size,
        info.total_length
    );
    assert_eq!(
        info.piece_size(info.piece_count()),
        0,
        "piece past the end has bytes"
    );

    let mut files = HashSet::new();
    let mut dirs = HashSet::new();
    for file in info.files.iter().filter(|f| !f.padding) {
        file.path.iter().for_each(|c| check_disk_name(c));
        let on_disk = file.disk_path();
        for dir in on_disk.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                dirs.insert(dir.to_path_buf());
            }
        }
        assert!(
            files.insert(on_disk),
            "two files at {:?} on disk",
            file.path
        );
    }
    assert!(
        files.is_disjoint(&dirs),
        "a file's path on disk is also a directory's"
    );
}

fn check_disk_name(component: &str) {
    let name = disk_component(component);
    assert!(
        !matches!(&*name, "" | "." | "..") && !name.contains(['/', '\\', '\0']),
        "{component:?} is {name:?} on disk"
    );
    assert!(name.len() <= 252, "{} bytes on disk: {name:?}", name.len());
    assert!(
        !name.chars().any(|c| c.is_control() || invisible(c)),
        "{component:?} is {name:?} on disk"
    );
}
