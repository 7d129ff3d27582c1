//! File path safety: every path a torrent names must stay inside the output
//! directory on every platform, whatever bytes the torrent's author chose.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::error::{MetainfoError, PathProblem};
use super::info::FileEntry;

/// Checks one path component: non-empty, not `.` or `..`, no separator of
/// any platform, no NUL, no drive prefix.
fn check_component(component: &str) -> Result<(), PathProblem> {
    match component {
        "" => return Err(PathProblem::EmptyComponent),
        "." => return Err(PathProblem::CurrentDir),
        ".." => return Err(PathProblem::ParentDir),
        _ => {}
    }
    if component.contains('\0') {
        return Err(PathProblem::Nul);
    }
    if component.contains(['/', '\\']) {
        return Err(PathProblem::Separator(component.to_owned()));
    }
    let bytes = component.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(PathProblem::DrivePrefix(component.to_owned()));
    }
    Ok(())
}

/// Checks every component of `components`, a path relative to the output
/// directory (or to the torrent's directory).
pub(super) fn check_path(components: &[String]) -> Result<(), MetainfoError> {
    let refuse = |problem| MetainfoError::UnsafePath {
        path: components.join("/"),
        problem,
    };
    match components.first() {
        None => return Err(refuse(PathProblem::Empty)),
        Some(first) if first.is_empty() => return Err(refuse(PathProblem::Absolute)),
        Some(_) => {}
    }
    components
        .iter()
        .try_for_each(|c| check_component(c))
        .map_err(refuse)
}

/// What a path names, in [`check_unique`]'s tree of the torrent's paths.
enum Named {
    File,
    /// A directory, with the id its children are keyed under.
    Dir(usize),
}

/// Bytes of a long path component kept before its extension. File systems
/// refuse names over 255 bytes (`NAME_MAX`), which a torrent's author may
/// well have written (90 CJK characters are 270 bytes of UTF-8).
/// libtorrent, and so qBittorrent and Deluge, cut such names at 240 bytes
/// and keep the extension; doing the same puts the files where those clients
/// put them, so a directory one downloaded can be seeded by the other.
const KEPT_NAME_BYTES: usize = 240;

/// The bytes at a component's end in which a `.` starts the extension kept
/// after a cut (libtorrent's window).
const EXTENSION_WINDOW: usize = 9;

/// Bytes past [`KEPT_NAME_BYTES`] at which a run of replaced characters ends
/// a name too: the most a character kept as it is can bring it to.
const REPLACED_RUN_SLACK: usize = 3;

/// A path component as it is named on disk, much as libtorrent names it:
/// - each control character (C0, DEL, C1: a newline, an ESC) is written as
///   `_`, so that no file name can break a shell script or act on the
///   terminal that lists it;
/// - each [`invisible`] formatting character is left out, so that
///   `txt.exe` cannot pose as `exe.txt`;
/// - a name left empty, `.` or `..` by that is named `_` (where libtorrent
///   leaves the component out);
/// - a name that reaches 240 bytes ends at the first whole character kept
///   as it is that takes it there (or at 243 bytes in a run of replaced
///   ones, where libtorrent's grows past what a file system takes, and
///   before a kept character that would take it past 243),
///   followed by its extension (from the last `.` among its final 9 bytes,
///   after that character) when it has one, so that it fits any file
///   system: at most 252 bytes.
///
/// Public so that a file named after a torrent, such as `metadata`'s
/// `NAME.torrent`, is named alike.
pub fn disk_component(component: &str) -> Cow<'_, str> {
    if component.len() <= KEPT_NAME_BYTES && !component.contains(|c| disk_char(c) != Some(c)) {
        return Cow::Borrowed(component);
    }
    let mut named = String::with_capacity(component.len().min(KEPT_NAME_BYTES + EXTENSION_WINDOW));
    // The extension of the part of `component` from byte `from` on, if any.
    let extension_from = |from: usize| {
        // Searched as bytes: the window may begin inside a character, and a
        // `.` byte is always a whole character of its own.
        let window = component.len().saturating_sub(EXTENSION_WINDOW).max(from);
        let dot = component.as_bytes()[window..]
            .iter()
            .rposition(|&b| b == b'.');
        dot.map(|dot| component[window + dot..].chars().filter_map(disk_char))
    };
    for (at, c) in component.char_indices() {
        let Some(written) = disk_char(c) else {
            continue;
        };
        // A kept character after a run of replaced ones that took the name
        // to 240-242 bytes would take it past 243: the name ends before it.
        if named.len() + written.len_utf8() > KEPT_NAME_BYTES + REPLACED_RUN_SLACK {
            named.extend(extension_from(at).into_iter().flatten());
            break;
        }
        named.push(written);
        // As in libtorrent, a character kept as it is ends a long name; a
        // replaced one only once a run of them has gone past where a kept
        // one would have.
        let limit = match written == c {
            true => KEPT_NAME_BYTES,
            false => KEPT_NAME_BYTES + REPLACED_RUN_SLACK,
        };
        if named.len() >= limit {
            named.extend(extension_from(at + c.len_utf8()).into_iter().flatten());
            break;
        }
    }
    // Left out characters may leave nothing, or a name that means this
    // directory or its parent: the parser refused those as written.
    if matches!(named.as_str(), "" | "." | "..") {
        named = "_".to_owned();
    }
    Cow::Owned(named)
}

/// What `c` becomes in a name on disk: `_` for a control character,
/// nothing for an [`invisible`] one, else itself.
fn disk_char(c: char) -> Option<char> {
    match c {
        c if c.is_control() => Some('_'),
        c if invisible(c) => None,
        c => Some(c),
    }
}

/// The invisible formatting characters that can make one name look like
/// another: the Arabic letter mark, zero-width space, non-joiner and
/// joiner, the bidirectional marks, embeddings, overrides and isolates,
/// the word joiner and invisible operators, and the byte order mark (the
/// set libtorrent leaves out of names). Public so that the CLI escapes the
/// same set when it shows a name.
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Refuses two files at the same path on disk, and a file whose path is
/// also a directory of another file: either would make one write clobber
/// another. Paths are compared as [`disk_component`] names them, so two
/// long names cut to the same one clash too. Padding files are never
/// written, so they may repeat (libtorrent names them `.pad/<length>`).
///
/// The paths are walked as a tree, each name keyed by its directory's id,
/// so a path costs one lookup per component. Keying every prefix as a
/// whole rehashed the prefix at each step: a path of 200,000 components, a
/// few hundred KB of torrent, took hours.
pub(super) fn check_unique(files: &[FileEntry]) -> Result<(), MetainfoError> {
    const ROOT: usize = 0;
    let mut tree: HashMap<(usize, Cow<'_, str>), Named> = HashMap::new();
    for file in files.iter().filter(|f| !f.padding) {
        let path = file.path.as_slice();
        // `check_path` has refused empty paths already.
        let Some((name, dirs)) = path.split_last() else {
            continue;
        };
        let on_disk = |depth: usize| -> String {
            let named: Vec<Cow<'_, str>> =
                path[..=depth].iter().map(|c| disk_component(c)).collect();
            named.join("/")
        };
        let mut parent = ROOT;
        for (depth, dir) in dirs.iter().enumerate() {
            let next_id = tree.len() + 1;
            match tree
                .entry((parent, disk_component(dir)))
                .or_insert(Named::Dir(next_id))
            {
                Named::Dir(id) => parent = *id,
                Named::File => return Err(MetainfoError::PathClash(on_disk(depth))),
            }
        }
        match tree.entry((parent, disk_component(name))) {
            Entry::Occupied(_) => return Err(MetainfoError::PathClash(on_disk(dirs.len()))),
            Entry::Vacant(slot) => {
                slot.insert(Named::File);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &[&str]) -> String {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        check_path(&path).unwrap_err().to_string()
    }

    #[test]
    fn safe_paths_pass() {
        for path in [
            &["a"][..],
            &["a", "b c", "naïve.txt"],
            &[".hidden", "10:30 notes"],
            &["..."],
        ] {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            assert!(check_path(&path).is_ok(), "{path:?}");
        }
    }

    #[test]
    fn names_a_file_system_takes_are_kept() {
        for name in ["a", &"x".repeat(KEPT_NAME_BYTES), &"日".repeat(80)] {
            assert!(matches!(disk_component(name), Cow::Borrowed(n) if n == name));
        }
    }

    #[test]
    fn a_long_name_is_cut_as_libtorrent_cuts_it() {
        let z = |n| "z".repeat(n);
        let cases = [
            // 240 bytes, then the extension.
            (format!("{}.mkv", z(300)), format!("{}.mkv", z(240))),
            // 241 to 255 bytes are cut too, as libtorrent cuts them.
            (format!("{}.txt", z(241)), format!("{}.txt", z(240))),
            // Whole characters only: 1 + 3 × 80 = 241 bytes is the shortest
            // prefix holding 240.
            (
                format!("a{}.jpg", "日".repeat(100)),
                format!("a{}.jpg", "日".repeat(80)),
            ),
            // No dot, or none in the last 9 bytes: no extension.
            (z(300), z(240)),
            (format!("a.b{}", z(300)), format!("a.b{}", z(237))),
            (format!("{}.extension", z(300)), z(240)),
            // The window's edges: a dot 9 bytes from the end is in, 10 out.
            (
                format!("{}.12345678", z(300)),
                format!("{}.12345678", z(240)),
            ),
            (format!("{}.123456789", z(300)), z(240)),
            // The last dot in the window wins, as it is the extension's.
            (format!("{}.tar.gz", z(300)), format!("{}.gz", z(240))),
            // A dot the kept prefix ends with stays there, and is not
            // taken again as the extension.
            (
                format!("{}.{}", z(239), "q".repeat(5)),
                format!("{}.", z(239)),
            ),
        ];
        for (name, cut) in cases {
            assert_eq!(disk_component(&name), cut, "{name}");
        }
    }

    #[test]
    fn controls_become_underscores_and_invisible_characters_go() {
        assert_eq!(
            disk_component("a\nb\x1b[2Jc\td\x7fe\u{9b}f"),
            "a_b_[2Jc_d_e_f"
        );
        assert_eq!(disk_component("clip\u{202e}4pm.exe"), "clip4pm.exe");
        assert_eq!(disk_component("\u{feff}a\u{200b}b\u{2066}c"), "abc");
        for nothing_left in ["\u{200b}", ".\u{200b}", "..\u{202e}", "\u{feff}.."] {
            assert_eq!(disk_component(nothing_left), "_", "{nothing_left:?}");
        }
        // A replaced character does not end a long name; the next kept
        // one does, and the extension is named alike.
        let long = format!("{}\r{}.m\x01v", "z".repeat(239), "z".repeat(60));
        assert_eq!(disk_component(&long), format!("{}_z.m_v", "z".repeat(239)));
        // A run of replaced ones ends it too, 3 bytes on, so that it fits.
        let run = format!("{}{}.mkv", "z".repeat(239), "\t".repeat(300));
        assert_eq!(
            disk_component(&run),
            format!("{}{}.mkv", "z".repeat(239), "_".repeat(4))
        );
        assert_eq!(disk_component(&"\n".repeat(300)), "_".repeat(243));
        // A kept character that would take a run past 243 bytes is left
        // out with the rest, so that the name and its longest extension
        // stay within 252 (255 before; found by the metainfo fuzz target).
        let wide = format!("{}\u{10348}{}.abcdefgh", "\n".repeat(242), "z".repeat(20));
        assert_eq!(
            disk_component(&wide),
            format!("{}.abcdefgh", "_".repeat(242))
        );
        // A dropped one takes no room.
        let long = format!("{}\u{200b}{}.mkv", "z".repeat(239), "z".repeat(60));
        assert_eq!(disk_component(&long), format!("{}.mkv", "z".repeat(240)));
    }

    #[test]
    fn long_names_cut_to_one_clash() {
        let file = |name: String| FileEntry {
            path: vec!["t".into(), name],
            length: 1,
            offset: 0,
            padding: false,
        };
        let (a, b) = ("a".repeat(250), "a".repeat(260));
        let files = [file(format!("{a}.bin")), file(format!("{b}.bin"))];
        let clash = format!("t/{}.bin", "a".repeat(240));
        assert!(
            matches!(check_unique(&files), Err(MetainfoError::PathClash(p)) if p == clash),
            "{:?}",
            check_unique(&files)
        );
        let apart = [file(format!("{a}.bin")), file(format!("b{a}.bin"))];
        assert!(check_unique(&apart).is_ok());
        // Names told apart only by what never reaches the disk.
        for (one, other) in [("a\n", "a\t"), ("a\u{200b}", "a"), ("a\u{1b}", "a_")] {
            let files = [file(one.to_owned()), file(other.to_owned())];
            let clash = check_unique(&files);
            assert!(
                matches!(clash, Err(MetainfoError::PathClash(_))),
                "{one:?}: {clash:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn a_cut_name_fits_any_file_system(name in "\\PC{0,400}") {
            let cut = disk_component(&name);
            proptest::prop_assert!(cut.len() <= 252, "{} bytes", cut.len());
            proptest::prop_assert!(name.len() > KEPT_NAME_BYTES || cut == name);
            // It begins as the name does: at least 240 of the name's bytes,
            // or all of them.
            let kept = cut.len().min(KEPT_NAME_BYTES);
            proptest::prop_assert!(name.as_bytes().starts_with(&cut.as_bytes()[..kept]));
        }

        #[test]
        fn any_name_comes_out_short_visible_and_no_dot_name(
            // Long names with runs of controls and invisible characters
            // about where a cut falls.
            name in "\\PC{0,10}[a-z]{200,240}[\\x00-\\x1f\\x{200b}\\x{202e}]{0,40}[\\x00-\\x{2070}]{0,60}"
        ) {
            let named = disk_component(&name);
            proptest::prop_assert!(named.len() <= 252, "{} bytes", named.len());
            proptest::prop_assert!(!matches!(&*named, "" | "." | ".."), "{named:?}");
            proptest::prop_assert!(named.chars().all(|c| disk_char(c) == Some(c)), "{named:?}");
        }
    }

    #[test]
    fn each_problem_is_named() {
        assert_eq!(
            problem(&["..", "etc", "passwd"]),
            "file path \"../etc/passwd\" is refused: component \"..\" would leave the output directory"
        );
        assert_eq!(
            problem(&["", "etc", "passwd"]),
            "file path \"/etc/passwd\" is refused: it starts with an empty component, which makes it absolute"
        );
        assert!(problem(&["a", "", "b"]).ends_with("it has an empty component"));
        assert!(problem(&["a", "."]).ends_with("component \".\" names no file"));
        assert!(problem(&["a\\..\\b"]).ends_with("contains a path separator"));
        assert!(problem(&["a/b"]).ends_with("contains a path separator"));
        assert!(problem(&["a\0b"]).ends_with("it contains a NUL byte"));
        assert!(problem(&["C:"]).ends_with("starts with a Windows drive prefix"));
        assert!(problem(&["d", "c:evil"]).ends_with("starts with a Windows drive prefix"));
        assert!(problem(&[]).ends_with("it has no components"));
    }
}
