//! Properties of metainfo: write→parse round trips keep the infohash and the
//! files; byte geometry is consistent; arbitrary bytes never panic.

#![allow(clippy::unwrap_used)]

use lodestone_core::Metainfo;
use proptest::prelude::*;

/// File paths (below the torrent name) that never clash: directories come
/// from a small set without dashes, file names start with "<index>-".
fn layout() -> impl Strategy<Value = Vec<(Vec<String>, Vec<u8>)>> {
    let dirs = proptest::collection::vec(prop_oneof![Just("d1"), Just("d2"), Just("é")], 0..3);
    let entry = (dirs, "[a-zA-Z0-9 ._é]{0,6}", 0usize..3000, any::<u8>());
    proptest::collection::vec(entry, 1..6).prop_map(|entries| {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, (dirs, name, len, seed))| {
                let mut path: Vec<String> = dirs.into_iter().map(String::from).collect();
                path.push(format!("{i}-{name}"));
                // The first file is never empty, so the torrent has data.
                let len = if i == 0 { len + 1 } else { len };
                let data = (0..len).map(|b| (b as u8).wrapping_mul(seed)).collect();
                (path, data)
            })
            .collect()
    })
}

fn created(name: &str, piece_length: u32, files: &[(Vec<String>, Vec<u8>)]) -> Metainfo {
    let borrowed: Vec<(Vec<String>, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.clone(), d.as_slice()))
        .collect();
    Metainfo::create(name, piece_length, &borrowed).unwrap()
}

proptest! {
    #[test]
    fn write_then_parse_keeps_infohash_and_files(
        files in layout(),
        single in any::<bool>(),
        piece_length in 1u32..70_000,
        announce in proptest::option::of(".*"),
        tiers in proptest::collection::vec(proptest::collection::vec(".*", 1..3), 0..3),
        comment in proptest::option::of(".*"),
        created_by in proptest::option::of(".*"),
        date in proptest::option::of(any::<i64>()),
    ) {
        let files = if single { vec![(Vec::new(), files[0].1.clone())] } else { files };
        let mut m = created("name", piece_length, &files);
        m.announce = announce;
        m.announce_list = tiers;
        m.comment = comment;
        m.created_by = created_by;
        m.creation_date = date;

        let back = Metainfo::from_torrent_bytes(&m.to_torrent_bytes()).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.info_hash, m.info_hash);

        // The file list is what was asked for, in order, with consecutive offsets.
        let got: Vec<(Vec<String>, u64)> =
            back.info.files.iter().map(|f| (f.path.clone(), f.length)).collect();
        let want: Vec<(Vec<String>, u64)> = files
            .iter()
            .map(|(p, d)| {
                let mut path = vec!["name".to_owned()];
                path.extend(p.iter().cloned());
                (path, d.len() as u64)
            })
            .collect();
        prop_assert_eq!(got, want);
        let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
        prop_assert_eq!(back.info.total_length, total);
        prop_assert_eq!(
            u64::from(back.info.piece_count()),
            total.div_ceil(u64::from(piece_length))
        );
    }

    #[test]
    fn ranges_map_to_exactly_the_requested_bytes(
        files in layout(),
        piece_length in 1u32..5000,
        offset in 0u64..20_000,
        len in 0u64..20_000,
    ) {
        let m = created("n", piece_length, &files);
        let info = &m.info;
        let stream: Vec<u8> = files.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        let start = offset.min(info.total_length);
        let end = offset.saturating_add(len).min(info.total_length);
        let mut gathered = Vec::new();
        for slice in info.files_in_range(offset, len) {
            prop_assert_eq!(slice.range_offset, gathered.len() as u64);
            prop_assert!(slice.len > 0);
            let data = &files[slice.file_index].1;
            let from = slice.file_offset as usize;
            gathered.extend_from_slice(&data[from..from + slice.len as usize]);
        }
        prop_assert_eq!(&gathered[..], &stream[start as usize..end as usize]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::from_torrent_bytes(&bytes);
        let _ = Metainfo::from_info_bytes(bytes);
    }

    #[test]
    fn mutated_torrents_never_panic(
        files in layout(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = created("n", 1024, &files).to_torrent_bytes();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(m) = Metainfo::from_torrent_bytes(&bytes) {
            // Whatever survives is internally consistent.
            let sum: u64 = m.info.files.iter().map(|f| f.length).sum();
            prop_assert_eq!(sum, m.info.total_length);
            prop_assert!(m.info.files.iter().all(|f| f.relative_path().is_relative()));
        }
    }
}
