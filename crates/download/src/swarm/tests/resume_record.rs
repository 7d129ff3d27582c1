//! Restarts with a resume record: unchanged files are trusted without a
//! hash, a changed file is hashed again and only its bad piece is fetched.

use std::time::Duration;

use super::*;

fn with_record(out: &Path, record: &Path) -> DownloadConfig {
    let mut c = config(out);
    c.resume_file = Some(record.to_path_buf());
    c
}

#[tokio::test]
async fn a_record_skips_the_hash_and_a_changed_file_costs_one_piece() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let pieces = metainfo.info.piece_count();
    let dir = TempDir::new("swarm-record");
    let (out, record) = (dir.0.join("out"), dir.0.join("state/t.resume"));
    let full = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;

    let config = with_record(&out, &record);
    let first = download_from(&metainfo, config, &[&full]).await;
    assert!(first.complete && record.exists(), "{first:?}");

    // No peer at all: complete from the record alone, nothing hashed.
    let config = with_record(&out, &record);
    let second = download_from(&metainfo, config, &[]).await;
    assert!(second.complete, "{second:?}");
    assert_eq!(
        (
            second.pieces_resumed,
            second.pieces_rechecked,
            second.pieces_verified
        ),
        (pieces, 0, 0)
    );

    // One byte of file 2 changes, and so does its mtime.
    let file = &metainfo.info.files[2];
    let path = out.join(file.relative_path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let handle = std::fs::File::options().write(true).open(&path).unwrap();
    let then = handle.metadata().unwrap().modified().unwrap();
    handle.set_modified(then + Duration::from_secs(1)).unwrap();
    let layout = crate::layout::Layout::from_info(&metainfo.info).unwrap();
    let file_pieces = layout.file_pieces(layout.file(2).unwrap()).len() as u32;

    let requests_before = full.requests();
    let config = with_record(&out, &record);
    let third = download_from(&metainfo, config, &[&full]).await;
    assert!(third.complete, "{third:?}");
    assert_eq!(third.pieces_rechecked, file_pieces, "{third:?}");
    assert_eq!(
        (third.pieces_resumed, third.pieces_verified),
        (pieces - 1, 1),
        "{third:?}"
    );
    let bad_piece = layout
        .piece(((file.range().start + 100_000) / (32 * 1024)) as u32)
        .unwrap();
    assert_eq!(
        full.requests() - requests_before,
        u64::from(layout.block_count(bad_piece))
    );
    assert_files(&out, &metainfo, &data, |_| true);

    // --recheck: every piece is hashed again, and found good.
    let mut config = with_record(&out, &record);
    config.recheck = true;
    let fourth = download_from(&metainfo, config, &[]).await;
    assert!(fourth.complete, "{fourth:?}");
    assert_eq!(
        (
            fourth.pieces_resumed,
            fourth.pieces_rechecked,
            fourth.pieces_verified
        ),
        (pieces, pieces, 0)
    );
}

#[tokio::test]
async fn a_damaged_record_means_a_full_check() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let pieces = metainfo.info.piece_count();
    let dir = TempDir::new("swarm-record-damaged");
    let (out, record) = (dir.0.join("out"), dir.0.join("t.resume"));
    let full = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    let config = with_record(&out, &record);
    assert!(download_from(&metainfo, config, &[&full]).await.complete);
    let bytes = std::fs::read(&record).unwrap();
    std::fs::write(&record, &bytes[..bytes.len() / 2]).unwrap();

    let config = with_record(&out, &record);
    let again = download_from(&metainfo, config, &[]).await;
    assert!(again.complete, "{again:?}");
    assert_eq!(
        (again.pieces_resumed, again.pieces_rechecked),
        (pieces, pieces)
    );
}
