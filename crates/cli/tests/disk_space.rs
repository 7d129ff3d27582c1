//! A disk without room: a download larger than the free space is refused
//! before any file is made, and one that fills its disk anyway
//! (`--no-space-check`) stops with the OS error, keeps what it verified,
//! and is finished by the same command once there is room. Each test mounts
//! a small tmpfs in its own mount namespace.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{fixture, lodestone, stderr};
use lodestone_tests::content::verify_files;
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;

const MIB: u64 = 1 << 20;

/// A tmpfs of a given size mounted on a directory, unmounted on drop so
/// that the work directory under it can be removed.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        );
        Self(dir.to_path_buf())
    }

    /// Gives the file system `size` in all, keeping what is on it.
    fn grow(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.0);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) {
    let status = Command::new("mount")
        .args(args)
        .arg(dir)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mount {args:?} {} failed", dir.display());
}

lodestone_tests::isolated_test! {
    /// 40,000 bytes of torrent for a disk of 1 MiB of which a filler leaves
    /// 16 KiB free (none with 64 KiB pages).
    fn a_download_larger_than_the_free_space_is_refused_before_any_file_is_made() {
        let work = WorkDir::new("no-room").expect("work dir");
        let disk_dir = work.subdir("disk").expect("disk dir");
        let _disk = SmallDisk::mount(&disk_dir, "1M");
        std::fs::write(disk_dir.join("filler"), vec![1u8; (MIB - 16 * 1024) as usize])
            .expect("filler written");
        let out = disk_dir.join("out");
        let torrent = fixture("mktorrent-single.torrent");
        let out_s = out.to_string_lossy();
        // Without the check the download would wait for peers, of which
        // there are none: the stall timeout bounds that wait.
        let output = lodestone(&[
            "download", &torrent, "-o", &out_s, "--no-dht", "--no-seed", "--stall-timeout", "5",
        ]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        let refusal = format!("not enough free space for {out_s}: the files still need 39.06 KiB and ");
        assert!(message.contains(&refusal), "{message}");
        let advice = " is free; make room, choose another --output, or pass --no-space-check";
        assert!(message.contains(advice), "{message}");
        assert_eq!(std::fs::read_dir(&out).expect("out dir").count(), 0, "a file was made");
    }

    /// 4 MiB from a libtorrent seeder onto a disk of 1 MiB, then of 4.5
    /// MiB: room for what is still missing, not for the whole torrent.
    fn a_full_disk_stops_the_download_and_the_same_command_finishes_it_once_there_is_room() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 1,
            seeders: 1,
            file_sizes: vec![4 * MIB],
            single_file: true,
            piece_length: Some(64 * 1024),
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info().clone();
        let work = WorkDir::new("disk-full").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        let state = work.subdir("state").expect("state dir");
        let disk = SmallDisk::mount(&out, "1M");
        let (torrent, seeder) = (info.torrent.to_string_lossy(), info.seeders[0].to_string());
        let (out_s, state_s) = (out.to_string_lossy(), state.to_string_lossy());
        let args = [
            "download", &torrent, "-o", &out_s, "--state-dir", &state_s, "--no-dht", "--peer",
            &seeder, "--no-seed", "--json", "--stall-timeout", "20",
        ];

        let mut full = args.to_vec();
        full.push("--no-space-check");
        let output = lodestone(&full);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
        assert!(
            message.contains("the verified data is kept: once that is mended, run the same command again to resume"),
            "{message}"
        );

        disk.grow("4608k");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        command.args(args);
        let mut again = Proc::spawn("again", command).expect("lodestone starts");
        let done = again.wait_event("done", Duration::from_secs(60)).expect("download finishes");
        let status = again.finish(Duration::from_secs(30)).expect("lodestone exits");
        assert!(status.success(), "{status}: {done}");
        assert_eq!(done["complete"], true, "{done}");
        let resumed = done["pieces_resumed"].as_u64().expect("pieces_resumed");
        let verified = done["pieces_verified"].as_u64().expect("pieces_verified");
        assert!(resumed > 0, "nothing from the first run was kept: {done}");
        assert_eq!(resumed + verified, u64::from(info.piece_count), "{done}");
        verify_files(&out, &info.files).expect("the file is whole");
    }
}
