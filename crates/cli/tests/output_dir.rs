//! `lodestone download` writes nothing outside its output directory, even
//! through a symlink already in it, and names the path it refused; a name's
//! control characters and overrides never reach the disk.

mod common;

use common::{fixture, lodestone, stderr};
use lodestone_tests::workdir::WorkDir;

lodestone_tests::isolated_test! {
    /// The torrent's top directory `multi` exists as a symlink to a
    /// directory outside the output directory.
    fn a_symlink_leading_out_of_the_output_directory_is_refused() {
        let work = WorkDir::new("symlink-escape").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        let outside = work.subdir("outside").expect("outside dir");
        let link = out.join("multi");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        let torrent = fixture("libtorrent-v1-multi.torrent");
        let out_s = out.to_string_lossy();
        let output = lodestone(&["download", &torrent, "-o", &out_s, "--no-dht", "--no-seed"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let message = stderr(&output);
        let refusal = format!("refusing to follow {}: symlink leads outside", link.display());
        assert_eq!(message.matches(&refusal).count(), 1, "{message}");
        assert_eq!(std::fs::read_dir(&outside).expect("outside dir").count(), 0);
    }

    /// A name holding an ESC sequence and a right-to-left override is
    /// written to disk with the ESC as `_` and the override left out: the
    /// directory made in the way at that name is what the error names.
    fn a_name_is_written_to_disk_without_controls_or_overrides() {
        let work = WorkDir::new("disk-name").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        std::fs::create_dir_all(out.join("x_[2Jy")).expect("a directory in the way");
        let name = "x\x1b[2J\u{202e}y";
        let torrent = format!(
            "d4:infod6:lengthi3e4:name{}:{name}12:piece lengthi16384e6:pieces20:{}ee",
            name.len(),
            "x".repeat(20)
        );
        let file = work.path().join("tricks.torrent");
        std::fs::write(&file, torrent).expect("torrent written");
        let output = lodestone(&[
            "download", &file.to_string_lossy(), "-o", &out.to_string_lossy(), "--no-dht",
            "--no-seed", "--stall-timeout", "5",
        ]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains("/x_[2Jy: Is a directory"), "{message}");
    }
}
