//! State survives the process: a magnet downloaded once is finished again
//! from the state directory alone (metadata and resume record) with its
//! swarm gone, and a changed file costs only its damaged piece.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::dht_bind;
use lodestone_core::Metainfo;
use lodestone_download::Layout;
use lodestone_tests::clients::aria2_seeder;
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_ARIA2, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;
use serde_json::Value;

const MIB: u64 = 1 << 20;
const PIECE: u32 = 64 * 1024;

/// Runs `lodestone download --json ARGS` to its end: its `done` event,
/// after checking that it exited 0.
fn download(name: &str, args: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    command.arg("download").arg("--json").args(args);
    let mut proc = Proc::spawn(name, command).expect("lodestone starts");
    let done = proc
        .wait_event("done", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{name}: no done event: {e}"));
    let status = proc
        .finish(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(status.success(), "{name} exited with {status}: {done}");
    assert_eq!(done["complete"], true, "{name}: {done}");
    done
}

fn count(done: &Value, field: &str) -> u64 {
    done[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {done}"))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Flips one byte of `path` at `offset` and moves its mtime a second on,
/// so the change is seen whatever the clock's granularity.
fn damage(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x55;
    std::fs::write(path, bytes).expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    let then = file.metadata().expect("stat").modified().expect("mtime");
    file.set_modified(then + Duration::from_secs(1))
        .expect("set mtime");
}

lodestone_tests::isolated_test! {
    fn a_magnet_finishes_again_from_the_state_dir_alone() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 4,
            seeders: 2,
            file_sizes: vec![2 * MIB + 5, MIB, 5_000],
            piece_length: Some(PIECE),
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info().clone();
        let (out, state, seed) = (
            WorkDir::new("state-out").expect("dir"),
            WorkDir::new("state-dir").expect("dir"),
            WorkDir::new("state-seed").expect("dir"),
        );
        let (out_s, state_s) = (out.path().to_string_lossy(), state.path().to_string_lossy());
        let (magnet, bootstrap, bind) = (info.magnet(), info.dht_nodes[0].to_string(), dht_bind(1));
        let args = [
            magnet.as_str(), "--bootstrap", &bootstrap, &bind, "-o", &out_s, "--no-seed",
            "--state-dir", &state_s,
        ];

        // 1. Download through the DHT.
        let first = download("first", &args);
        assert_eq!(count(&first, "pieces_verified"), u64::from(info.piece_count), "{first}");
        verify_files(out.path(), &info.files).expect("downloaded files intact");
        let kept = state.path().join(format!("torrents/{}.torrent", info.info_hash));
        assert!(state.path().join(format!("resume/{}.resume", info.info_hash)).is_file());
        assert!(state.path().join("dht.state").is_file());
        copy_tree(out.path(), seed.path());

        // 2. The bootstrap node and every seeder go away.
        drop(swarm);

        // 3. The same command: metadata and pieces come from the state
        // directory, nothing is hashed and no byte is downloaded.
        let again = download("again", &args);
        assert_eq!(count(&again, "pieces_resumed"), u64::from(info.piece_count), "{again}");
        assert_eq!(count(&again, "pieces_rechecked"), 0, "{again}");
        assert_eq!(count(&again, "pieces_verified"), 0, "{again}");
        assert_eq!(count(&again, "downloaded"), 0, "{again}");

        // 4. One byte of one file changes; a seeder is back (named by x.pe,
        // the DHT is gone): only that file is hashed, only its piece fetched.
        let torrent = Metainfo::from_torrent_bytes(&std::fs::read(&kept).expect("kept .torrent"))
            .expect("kept .torrent parses");
        let layout = Layout::from_info(&torrent.info).expect("layout");
        let file = layout.files().find(|&f| layout.file_len(f) > 2 * MIB).expect("big file");
        let relative = torrent.info.files[file.get()].relative_path();
        damage(&out.path().join(&relative), 1_000_000);
        let aria2 = aria2_seeder(&kept, seed.path(), addr(BLOCK_ARIA2, 1), 6881, &[]).expect("aria2 seeds");
        let with_seeder = format!("{magnet}&x.pe={}", aria2.addr());
        let mut args = args;
        args[0] = &with_seeder;
        let fixed = download("fixed", &args);
        let file_pieces = layout.file_pieces(file).len() as u64;
        assert_eq!(count(&fixed, "pieces_rechecked"), file_pieces, "{fixed}");
        assert_eq!(count(&fixed, "pieces_verified"), 1, "{fixed}");
        assert_eq!(count(&fixed, "pieces_resumed"), u64::from(info.piece_count) - 1, "{fixed}");
        verify_files(out.path(), &info.files).expect("repaired files intact");
    }
}
