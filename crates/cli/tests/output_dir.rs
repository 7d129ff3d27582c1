//! `lodestone download` writes nothing outside its output directory, even
//! through a symlink already in it, and names the path it refused, with
//! whatever a stranger put in the name escaped.

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

    /// The torrent's file is a directory already, so it cannot be opened
    /// for writing, and the error quotes a name holding an ESC sequence.
    fn an_error_quoting_a_name_reaches_the_terminal_escaped() {
        let work = WorkDir::new("escaped-error").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        let name = "x\x1b[2J";
        std::fs::create_dir_all(out.join(name)).expect("a directory where the file goes");
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
        assert!(!message.contains('\x1b'), "{message:?}");
        assert!(message.contains("x\\u{1b}[2J: Is a directory"), "{message}");
    }
}
