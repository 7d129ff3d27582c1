//! `lodestone inspect` run as a user would: real torrents, magnets, hostile files.

mod common;

use std::path::PathBuf;

use common::{fixture, lodestone, stderr, stdout};

/// Infohashes as libtorrent and transmission-show reported them (fixtures/README.md).
const REAL_TORRENTS: [(&str, &str); 4] = [
    (
        "libtorrent-v1-single.torrent",
        "3c214e52c80194c3feee9b34fc53417b48e1806b",
    ),
    (
        "libtorrent-v1-multi.torrent",
        "b565a6f78688c629b325509b23063cecdcc278cb",
    ),
    (
        "transmission-single.torrent",
        "b8e6d3e636f3f11fe4d2e94862526810dc422894",
    ),
    (
        "transmission-multi-private.torrent",
        "92d1da020b3fecb48122fccac5a9101ec136cec7",
    ),
];

#[test]
fn prints_the_infohash_real_tools_computed() {
    for (file, hash) in REAL_TORRENTS {
        let output = lodestone(&["inspect", &fixture(file)]);
        assert!(output.status.success(), "{file}: {}", stderr(&output));
        assert!(
            stdout(&output).starts_with(&format!("infohash:    {hash}\n")),
            "{file}"
        );
    }
}

#[test]
fn json_lists_sizes_and_files() {
    let output = lodestone(&["inspect", "--json", &fixture("libtorrent-v1-multi.torrent")]);
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(
        value["info_hash"],
        "b565a6f78688c629b325509b23063cecdcc278cb"
    );
    assert_eq!(value["total_size"], 35001);
    assert_eq!(value["piece_length"], 16384);
    let mut paths: Vec<_> = value["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_owned())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "multi/a.txt",
            "multi/sub/b.bin",
            "multi/sub/deeper/naïve.txt",
            "multi/sub/empty"
        ]
    );
}

#[test]
fn magnets_in_hex_and_base32_name_the_same_swarm() {
    let hex = lodestone(&[
        "inspect",
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x",
    ]);
    let b32 = lodestone(&[
        "inspect",
        "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&dn=x",
    ]);
    let bare = lodestone(&["inspect", "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"]);
    for output in [&hex, &b32, &bare] {
        assert!(output.status.success(), "{}", stderr(output));
        assert!(
            stdout(output).starts_with("infohash:    c12fe1c06bba254a9dc9f519b335aa7c1367a88a\n")
        );
    }
}

#[test]
fn bad_magnet_is_exit_2_with_one_line() {
    let output = lodestone(&[
        "inspect",
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "lodestone: bad magnet link: infohash must be 40 hex or 32 base32 characters, got 39 characters\n"
    );
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lodestone-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

/// A multi-file torrent with one file at `path` (bencoded path list).
fn torrent_with_path(path_list: &str) -> Vec<u8> {
    format!(
        "d4:infod5:filesld6:lengthi3e4:path{path_list}ee4:name4:root12:piece lengthi16384e6:pieces20:{}ee",
        "x".repeat(20)
    )
    .into_bytes()
}

#[test]
fn hostile_paths_are_refused_naming_the_path() {
    for (name, path_list, shown) in [
        ("dotdot", "l2:..6:passwde", "../passwd"),
        ("absolute", "l0:3:etc6:passwde", "/etc/passwd"),
        ("empty", "l1:a0:1:be", "a//b"),
    ] {
        let file = write_temp(&format!("{name}.torrent"), &torrent_with_path(path_list));
        let output = lodestone(&["inspect", &file.to_string_lossy()]);
        assert_eq!(output.status.code(), Some(2), "{name}");
        let err = stderr(&output);
        assert!(err.contains(shown), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn a_mebibyte_of_nesting_is_refused_cleanly() {
    let file = write_temp("nested.torrent", &vec![b'l'; 1 << 20]);
    let output = lodestone(&["inspect", &file.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("nested deeper than"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_file_is_bad_input() {
    let output = lodestone(&["inspect", "/nonexistent/x.torrent"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("cannot read torrent /nonexistent/x.torrent"));
}

/// mktorrent wrote `announce` and an `announce-list` of two tiers.
#[test]
fn a_torrent_shows_its_tracker_tiers_and_magnet_link() {
    let torrent = fixture("mktorrent-multi.torrent");
    let magnet = "magnet:?xt=urn:btih:2bafb5b72c6718371baf7ef70bdb1ab5d742e705&dn=multi\
                  &tr=http://tracker.invalid/announce&tr=http://backup.invalid/announce";
    let output = lodestone(&["inspect", &torrent]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        "tracker:     http://tracker.invalid/announce (tier 0; announced unless --no-trackers)",
        "tracker:     http://backup.invalid/announce (tier 1; announced unless --no-trackers)",
        &format!("magnet:      {magnet}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }

    let output = lodestone(&["inspect", "--json", &torrent]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(
        value["tracker_tiers"],
        serde_json::json!([
            ["http://tracker.invalid/announce"],
            ["http://backup.invalid/announce"]
        ])
    );
    assert_eq!(value["magnet"], magnet);

    // The link names the same swarm when read back.
    let output = lodestone(&["inspect", magnet]);
    assert!(
        stdout(&output).starts_with("infohash:    2bafb5b72c6718371baf7ef70bdb1ab5d742e705\n"),
        "{}",
        stderr(&output)
    );
}

/// A magnet may name any URL as a tracker; one on this machine is used only
/// at `/announce`, so a link cannot make us GET a local service.
#[test]
fn a_local_tracker_off_announce_is_shown_unused() {
    let magnet = "magnet:?xt=urn:btih:2bafb5b72c6718371baf7ef70bdb1ab5d742e705\
                  &tr=http://127.0.0.1:631/admin&tr=http://127.0.0.1:6969/announce";
    let output = lodestone(&["inspect", magnet]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        "tracker:     http://127.0.0.1:631/admin \
         (unused: an HTTP tracker on this machine must be at /announce)",
        "tracker:     http://127.0.0.1:6969/announce (announced unless --no-trackers)",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
}

/// `announce` alone is one tier.
#[test]
fn announce_alone_is_one_tier() {
    let output = lodestone(&[
        "inspect",
        "--json",
        &fixture("libtorrent-v1-single.torrent"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(
        value["tracker_tiers"],
        serde_json::json!([["http://tracker.invalid/announce"]])
    );
}

/// What a stranger may put in a name to act on the user's terminal: ESC
/// sequences that retitle the window and clear the screen, BEL, CR, a C1
/// CSI and a right-to-left override.
const TERMINAL_TRICKS: &str = "evil\x1b]0;PWNED\x07\x1b[2J\r\u{9b}31m\u{202e}txt.exe";

/// Whether `text` holds any character a terminal acts on (newlines aside).
fn acts_on_a_terminal(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}')
}

#[test]
fn names_and_trackers_reach_the_terminal_escaped() {
    let torrent = format!(
        "d8:announce{}:{tracker}4:infod6:lengthi3e4:name{}:{TERMINAL_TRICKS}12:piece lengthi16384e6:pieces20:{}ee",
        "http://t\x1b[31m.invalid/announce".len(),
        TERMINAL_TRICKS.len(),
        "x".repeat(20),
        tracker = "http://t\x1b[31m.invalid/announce",
    );
    let file = write_temp("tricks.torrent", torrent.as_bytes());
    let output = lodestone(&["inspect", &file.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(!acts_on_a_terminal(&out), "{out:?}");
    let escaped = "evil\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J\\u{d}\\u{9b}31m\\u{202e}txt.exe";
    assert_eq!(out.matches(escaped).count(), 2, "name and file: {out}");
    assert!(
        out.contains("http://t\\u{1b}[31m.invalid/announce"),
        "{out}"
    );

    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%1b%5b2Jb";
    let out = stdout(&lodestone(&["inspect", magnet]));
    assert!(out.contains("name:        a\\u{1b}[2Jb"), "{out}");
}

#[test]
fn an_error_quoting_a_path_reaches_the_terminal_escaped() {
    let output = lodestone(&["inspect", "/nonexistent/a\x1b[2J.torrent"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(!acts_on_a_terminal(&err), "{err:?}");
    assert!(
        err.contains("cannot read torrent /nonexistent/a\\u{1b}[2J.torrent"),
        "{err}"
    );
}
