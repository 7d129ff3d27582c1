//! File path safety: every path a torrent names must stay inside the output
//! directory on every platform, whatever bytes the torrent's author chose.

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

/// Refuses two files at the same path, and a file whose path is also a
/// directory of another file: either would make one write clobber another.
/// Padding files are never written, so they may repeat (libtorrent names
/// them `.pad/<length>`).
///
/// The paths are walked as a tree, each name keyed by its directory's id,
/// so a path costs one lookup per component. Keying every prefix as a
/// whole rehashed the prefix at each step: a path of 200,000 components, a
/// few hundred KB of torrent, took hours.
pub(super) fn check_unique(files: &[FileEntry]) -> Result<(), MetainfoError> {
    const ROOT: usize = 0;
    let mut tree: HashMap<(usize, &str), Named> = HashMap::new();
    for file in files.iter().filter(|f| !f.padding) {
        let path = file.path.as_slice();
        // `check_path` has refused empty paths already.
        let Some((name, dirs)) = path.split_last() else {
            continue;
        };
        let mut parent = ROOT;
        for (depth, dir) in dirs.iter().enumerate() {
            let next_id = tree.len() + 1;
            match tree
                .entry((parent, dir.as_str()))
                .or_insert(Named::Dir(next_id))
            {
                Named::Dir(id) => parent = *id,
                Named::File => return Err(MetainfoError::PathClash(path[..=depth].join("/"))),
            }
        }
        match tree.entry((parent, name.as_str())) {
            Entry::Occupied(_) => return Err(MetainfoError::PathClash(path.join("/"))),
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
