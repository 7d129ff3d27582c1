use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::layout::Layout;
use crate::storage::TempDir;

const HASH: InfoHash = InfoHash([7; 20]);

/// Files a (2500 bytes) and b (1700) in 1000-byte pieces: piece 2 spans
/// both.
fn storage(dir: &TempDir) -> Storage {
    let layout = Arc::new(Layout::new(1000, [(2500, false), (1700, false)]).unwrap());
    Storage::new(
        dir.0.clone(),
        layout,
        vec![PathBuf::from("a"), PathBuf::from("b")],
        &[],
    )
    .unwrap()
}

fn write(dir: &TempDir, name: &str, len: usize) {
    std::fs::write(dir.0.join(name), vec![1u8; len]).unwrap();
}

/// Moves a file's mtime by a second: tests must not depend on the clock's
/// granularity.
fn touch(dir: &TempDir, name: &str) {
    let file = File::options().write(true).open(dir.0.join(name)).unwrap();
    let then = file.metadata().unwrap().modified().unwrap();
    file.set_modified(then + Duration::from_secs(1)).unwrap();
}

fn full_record(dir: &TempDir, s: &Storage) -> ResumeRecord {
    write(dir, "a", 2500);
    write(dir, "b", 1700);
    ResumeRecord::capture(s, HASH, Bitfield::full(5)).unwrap()
}

fn ones(plan: &ResumePlan) -> (Vec<u32>, Vec<u32>) {
    (
        plan.trusted.iter_ones().collect(),
        plan.to_check.iter().map(|p| p.get()).collect(),
    )
}

#[test]
fn round_trip() {
    let dir = TempDir::new("record-rt");
    let s = storage(&dir);
    write(&dir, "a", 2500);
    let mut verified = Bitfield::new(5);
    verified.set(1);
    let record = ResumeRecord::capture(&s, HASH, verified).unwrap();
    assert!(record.files[0].is_some() && record.files[1].is_none());
    assert_eq!(ResumeRecord::decode(&record.encode()).unwrap(), record);
    let path = dir.0.join("state/r.resume");
    record.save(&path).unwrap();
    assert_eq!(ResumeRecord::load(&path).unwrap(), Some(record));
    assert!(!dir.0.join("state/r.resume.tmp").exists());
    assert_eq!(ResumeRecord::load(&dir.0.join("none")).unwrap(), None);
}

#[test]
fn every_truncation_is_an_error() {
    let dir = TempDir::new("record-cut");
    let s = storage(&dir);
    let bytes = full_record(&dir, &s).encode();
    for len in 0..bytes.len() {
        assert!(ResumeRecord::decode(&bytes[..len]).is_err(), "{len}");
    }
}

#[test]
fn wrong_shapes_are_errors() {
    for bad in [
        &b"le"[..],
        b"de",
        b"d1:vi2ee",
        b"d1:vi1e8:infohash3:abce",
        b"i5e",
        b"d5:filesl1:xe8:infohash20:aaaaaaaaaaaaaaaaaaaa11:piece counti8e6:pieces1:\x007:root2:/x1:vi1ee",
        b"d5:filesli1eee8:infohash20:aaaaaaaaaaaaaaaaaaaa11:piece counti8e6:pieces1:\x004:root2:/x1:vi1ee",
        b"d5:filesle8:infohash20:aaaaaaaaaaaaaaaaaaaa11:piece counti-1e6:pieces1:\x004:root2:/x1:vi1ee",
        b"d5:filesle8:infohash20:aaaaaaaaaaaaaaaaaaaa11:piece counti8e6:pieces1:\x004:root1:x1:vi1ee",
    ] {
        assert!(
            matches!(ResumeRecord::decode(bad), Err(ResumeError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // The well-formed twin of the cases above decodes.
    let good = b"d5:filesle8:infohash20:aaaaaaaaaaaaaaaaaaaa11:piece counti8e6:pieces1:\x004:root2:/x1:vi1ee";
    assert!(ResumeRecord::decode(good).is_ok());
}

#[test]
fn oversized_record_is_refused_before_parsing() {
    let dir = TempDir::new("record-big");
    let path = dir.0.join("big");
    let file = File::create(&path).unwrap();
    file.set_len(MAX_RECORD_BYTES + 1).unwrap();
    assert!(matches!(
        ResumeRecord::load(&path),
        Err(ResumeError::Unreadable {
            source: StateFileError::TooLarge { .. },
            ..
        })
    ));
}

#[test]
fn unchanged_files_are_trusted_without_reading() {
    let dir = TempDir::new("plan-same");
    let s = storage(&dir);
    let record = full_record(&dir, &s);
    let plan = plan(&s, HASH, Some(&record), false).unwrap();
    assert_eq!(ones(&plan), (vec![0, 1, 2, 3, 4], vec![]));
}

#[test]
fn a_touched_file_is_checked_again_with_its_shared_piece() {
    let dir = TempDir::new("plan-mtime");
    let s = storage(&dir);
    let record = full_record(&dir, &s);
    touch(&dir, "b");
    let plan = plan(&s, HASH, Some(&record), false).unwrap();
    assert_eq!(ones(&plan), (vec![0, 1], vec![2, 3, 4]));
}

#[test]
fn a_shorter_file_is_checked_only_where_data_exists() {
    let dir = TempDir::new("plan-size");
    let s = storage(&dir);
    let record = full_record(&dir, &s);
    write(&dir, "a", 1500);
    let plan = plan(&s, HASH, Some(&record), false).unwrap();
    // Piece 1 (1000..2000) and 2 lie beyond a's end: missing, not hashed.
    assert_eq!(ones(&plan), (vec![3, 4], vec![0]));
}

#[test]
fn recheck_no_record_or_a_foreign_record_check_everything_on_disk() {
    let dir = TempDir::new("plan-all");
    let s = storage(&dir);
    let record = full_record(&dir, &s);
    let everything = (vec![], vec![0, 1, 2, 3, 4]);
    assert_eq!(
        ones(&plan(&s, HASH, Some(&record), true).unwrap()),
        everything
    );
    assert_eq!(ones(&plan(&s, HASH, None, false).unwrap()), everything);
    let other = ResumeRecord {
        info_hash: InfoHash([8; 20]),
        ..record.clone()
    };
    assert_eq!(
        ones(&plan(&s, HASH, Some(&other), false).unwrap()),
        everything
    );
    let elsewhere = ResumeRecord {
        root: PathBuf::from("/elsewhere"),
        ..record
    };
    assert_eq!(
        ones(&plan(&s, HASH, Some(&elsewhere), false).unwrap()),
        everything
    );
}

#[test]
fn missing_files_are_not_hashed() {
    let dir = TempDir::new("plan-fresh");
    let s = storage(&dir);
    let plan = plan(&s, HASH, None, false).unwrap();
    assert_eq!(ones(&plan), (vec![], vec![]));
}

#[test]
fn holes_left_by_prepare_are_not_hashed() {
    let dir = TempDir::new("plan-holes");
    // Pieces far larger than a file system block, as in real torrents.
    let layout = Arc::new(Layout::new(1 << 16, [(4 << 16, false)]).unwrap());
    let s = Storage::new(dir.0.clone(), layout, vec![PathBuf::from("a")], &[]).unwrap();
    // A run killed before its first record: the file at full length,
    // sparse, with only piece 2 written.
    s.prepare().unwrap();
    s.write(2 << 16, &[1; 1 << 16]).unwrap();
    let plan = plan(&s, HASH, None, false).unwrap();
    assert_eq!(ones(&plan), (vec![], vec![2]));
}

#[test]
fn unverified_pieces_of_unchanged_files_stay_missing() {
    let dir = TempDir::new("plan-partial");
    let s = storage(&dir);
    write(&dir, "a", 2500);
    write(&dir, "b", 1700);
    let mut verified = Bitfield::new(5);
    verified.set(0);
    verified.set(4);
    let record = ResumeRecord::capture(&s, HASH, verified).unwrap();
    let plan = plan(&s, HASH, Some(&record), false).unwrap();
    assert_eq!(ones(&plan), (vec![0, 4], vec![]));
    // Pieces 1, 2 and 3 are not vouched for; piece 4 is the short last one.
    assert_eq!(plan.unverified_bytes(&s), 3000);
}

#[test]
fn only_trusted_pieces_are_not_counted_as_unverified() {
    let dir = TempDir::new("plan-unverified");
    let s = storage(&dir);
    assert_eq!(
        plan(&s, HASH, None, false).unwrap().unverified_bytes(&s),
        4200
    );
    let record = full_record(&dir, &s);
    assert_eq!(
        plan(&s, HASH, Some(&record), false)
            .unwrap()
            .unverified_bytes(&s),
        0
    );
    touch(&dir, "b");
    let plan = plan(&s, HASH, Some(&record), false).unwrap();
    // Pieces 2, 3 and 4 are to be checked: 1000 + 1000 + 200 bytes.
    assert_eq!(plan.unverified_bytes(&s), 2200, "{:?}", ones(&plan));
}

#[test]
fn stamps_follow_the_clock_we_set() {
    let dir = TempDir::new("stamp");
    let s = storage(&dir);
    write(&dir, "a", 10);
    let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123);
    File::options()
        .write(true)
        .open(dir.0.join("a"))
        .unwrap()
        .set_modified(at)
        .unwrap();
    let stamp = s.stamp(s.layout().file(0).unwrap()).unwrap().unwrap();
    assert_eq!(
        (stamp.len, stamp.mtime_secs, stamp.mtime_nanos),
        (10, 1_700_000_000, 123)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Damaged bytes never panic: each flip gives an error or some record.
    #[test]
    fn flipped_bytes_never_panic(at in any::<prop::sample::Index>(), xor in 1u8..) {
        let bytes = b"d5:fileslli1ei2ei3eelee8:infohash20:aaaaaaaaaaaaaaaaaaaa11:piece counti8e6:pieces1:\x004:root2:/x1:vi1ee";
        let mut bytes = bytes.to_vec();
        prop_assert!(ResumeRecord::decode(&bytes).is_ok());
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        let _ = ResumeRecord::decode(&bytes);
    }
}
