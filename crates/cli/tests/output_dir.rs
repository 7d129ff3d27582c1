//! `lodestone download` writes nothing outside its output directory, even
//! through a symlink already in it, and names the path it refused.

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
}
