//! Which files of a torrent to download: `--select` (indices or glob
//! patterns) or the magnet's `so=`.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail};
use globset::{GlobBuilder, GlobSetBuilder};
use lodestone_core::{FileSelection, Info, parse_selection};

/// The file indices to fetch, or `None` for every file.
///
/// Each `--select` value is either a BEP 53 index list (`0,2,4-6`) or a glob
/// matched against the path `lodestone inspect` shows (`*.mkv`,
/// `name/sub/**`). `so` from the magnet applies only without `--select`.
pub fn resolve(
    info: &Info,
    select: &[String],
    so: Option<&[FileSelection]>,
) -> anyhow::Result<Option<BTreeSet<usize>>> {
    let file_count = info.files.len();
    let mut chosen = BTreeSet::new();
    if select.is_empty() {
        let Some(ranges) = so else { return Ok(None) };
        add_ranges(&mut chosen, ranges, file_count)?;
        return finish(info, chosen);
    }
    let mut globs = GlobSetBuilder::new();
    let mut any_glob = false;
    for value in select {
        if value
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
        {
            let ranges = parse_selection(value).map_err(|e| anyhow!("--select {value:?}: {e}"))?;
            add_ranges(&mut chosen, &ranges, file_count)?;
        } else {
            let glob = GlobBuilder::new(value)
                .literal_separator(false)
                .build()
                .map_err(|e| anyhow!("--select {value:?} is not a valid pattern: {e}"))?;
            globs.add(glob);
            any_glob = true;
        }
    }
    if any_glob {
        let globs = globs.build()?;
        let before = chosen.len();
        for (index, file) in info.files.iter().enumerate() {
            if !file.padding && globs.is_match(file.relative_path()) {
                chosen.insert(index);
            }
        }
        if chosen.len() == before && before == 0 {
            bail!("--select matches no file of the torrent (lodestone inspect lists them)");
        }
    }
    finish(info, chosen)
}

fn add_ranges(
    chosen: &mut BTreeSet<usize>,
    ranges: &[FileSelection],
    file_count: usize,
) -> anyhow::Result<()> {
    for range in ranges {
        let last = range.last as usize;
        if last >= file_count {
            bail!(
                "file index {last} is out of range: the torrent has {file_count} files (lodestone inspect lists them)"
            );
        }
        chosen.extend(range.first as usize..=last);
    }
    Ok(())
}

/// Padding files are never written, so selecting them is meaningless.
fn finish(info: &Info, mut chosen: BTreeSet<usize>) -> anyhow::Result<Option<BTreeSet<usize>>> {
    chosen.retain(|&index| !info.files[index].padding);
    if chosen.is_empty() {
        bail!("the selection names no file with data");
    }
    Ok(Some(chosen))
}

#[cfg(test)]
mod tests {
    use lodestone_core::Metainfo;

    use super::*;

    fn info() -> Info {
        let files: Vec<(Vec<String>, &[u8])> = ["a.txt", "b.mkv", "c.mkv", "d.txt"]
            .iter()
            .map(|name| (vec!["sub".to_owned(), (*name).to_owned()], &b"data"[..]))
            .collect();
        Metainfo::create("t", 16384, &files).unwrap().info
    }

    #[test]
    fn indices_globs_and_so() {
        let info = info();
        let set = |v: &[usize]| Some(v.iter().copied().collect::<BTreeSet<_>>());
        assert_eq!(resolve(&info, &[], None).unwrap(), None);
        assert_eq!(
            resolve(&info, &["0,2-3".into()], None).unwrap(),
            set(&[0, 2, 3])
        );
        assert_eq!(
            resolve(&info, &["*.mkv".into()], None).unwrap(),
            set(&[1, 2])
        );
        assert_eq!(
            resolve(&info, &["t/sub/a.*".into(), "3".into()], None).unwrap(),
            set(&[0, 3])
        );
        let so = [FileSelection { first: 1, last: 1 }];
        assert_eq!(resolve(&info, &[], Some(&so)).unwrap(), set(&[1]));
        assert_eq!(resolve(&info, &["0".into()], Some(&so)).unwrap(), set(&[0]));
    }

    #[test]
    fn bad_selections_are_explained() {
        let info = info();
        assert!(
            resolve(&info, &["9".into()], None)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(
            resolve(&info, &["*.iso".into()], None)
                .unwrap_err()
                .to_string()
                .contains("matches no file")
        );
        assert!(resolve(&info, &["[".into()], None).is_err());
    }
}
