//! `seed_ratio` counts what was uploaded against what was downloaded.

use super::*;

/// B holds every file but the first, fetches that one from a seeder, then
/// serves one file to C. It uploads more than it downloaded but far less
/// than the whole torrent: a ratio of 1.0 is met and B stops by itself.
#[tokio::test]
async fn a_ratio_of_one_is_met_by_uploading_what_was_downloaded() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let seeder = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;

    let b_dir = TempDir::new("ratio-b");
    for f in metainfo.info.files.iter().skip(1) {
        let path = b_dir.0.join(f.relative_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let r = f.range();
        std::fs::write(path, &data[r.start as usize..r.end as usize]).unwrap();
    }
    let mut c = config(&b_dir.0);
    c.no_seed = false;
    c.seed_ratio = Some(1.0);
    c.peer_id = peer_id(b'B');
    let (b, b_net) = start(&metainfo, c);
    let b_addr = b_net.listen().await;
    b_net.dial(seeder.addr);
    until(&b, |p| p.phase == Phase::Seeding).await;

    let c_dir = TempDir::new("ratio-c");
    let mut c = config(&c_dir.0);
    c.peer_id = peer_id(b'C');
    c.files = Some(BTreeSet::from([2]));
    let (leech, c_net) = start(&metainfo, c);
    c_net.dial(b_addr);
    assert!(finish(leech).await.complete);

    let seeded = finish(b).await;
    assert!(seeded.downloaded > 0);
    assert!(seeded.uploaded >= seeded.downloaded, "{seeded:?}");
    assert!(seeded.uploaded < data.len() as u64, "{seeded:?}");
}
