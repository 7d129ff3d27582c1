//! Walks a scanned info dictionary into a validated [`Info`].
//!
//! The bytes were already bounded by the bencode scanner; this layer checks
//! meaning: types, ranges, piece arithmetic and path safety. Text fields
//! prefer their `.utf-8` twins when those are valid UTF-8; otherwise bytes
//! that are not UTF-8 are decoded lossily (invalid sequences become U+FFFD),
//! which keeps the name readable and cannot introduce a separator.

use lodestone_bencode::{Dict, Value};

use super::MAX_PIECE_LENGTH;
use super::error::MetainfoError;
use super::info::{FileEntry, Info};
use super::paths::{check_path, check_unique};

const INFO: &str = "info dictionary";

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wrong_type(key: &'static str, within: &str, expected: &'static str) -> MetainfoError {
    MetainfoError::WrongType {
        key,
        within: within.to_owned(),
        expected,
    }
}

fn required<'a>(
    dict: Dict<'a>,
    key: &'static str,
    within: &str,
) -> Result<Value<'a>, MetainfoError> {
    dict.get(key.as_bytes())
        .ok_or_else(|| MetainfoError::Missing {
            key,
            within: within.to_owned(),
        })
}

fn required_int(dict: Dict<'_>, key: &'static str, within: &str) -> Result<i64, MetainfoError> {
    required(dict, key, within)?
        .as_int()
        .ok_or_else(|| wrong_type(key, within, "an integer"))
}

/// Text under `key`, or under `utf8_key` when that is present and valid UTF-8.
fn text(
    dict: Dict<'_>,
    key: &'static str,
    utf8_key: &[u8],
    within: &str,
) -> Result<String, MetainfoError> {
    if let Some(s) = dict.get(utf8_key).and_then(|v| v.as_str()) {
        return Ok(s.to_owned());
    }
    required(dict, key, within)?
        .as_bytes()
        .map(lossy)
        .ok_or_else(|| wrong_type(key, within, "a string"))
}

/// A list of path components under `key`, preferring the `.utf-8` twin.
fn path_components(dict: Dict<'_>, within: &str) -> Result<Vec<String>, MetainfoError> {
    let utf8: Option<Vec<String>> = dict
        .get_list(b"path.utf-8")
        .and_then(|list| list.map(|c| c.as_str().map(str::to_owned)).collect());
    if let Some(path) = utf8 {
        return Ok(path);
    }
    let not_strings = || wrong_type("path", within, "a list of strings");
    let list = required(dict, "path", within)?
        .as_list()
        .ok_or_else(not_strings)?;
    list.map(|c| c.as_bytes().map(lossy).ok_or_else(not_strings))
        .collect()
}

fn file_length(length: i64, path: &[String]) -> Result<u64, MetainfoError> {
    u64::try_from(length).map_err(|_| MetainfoError::NegativeLength {
        path: path.join("/"),
        length,
    })
}

/// Validates a v1 (or hybrid) info dictionary.
pub(super) fn parse_info(info: Dict<'_>) -> Result<Info, MetainfoError> {
    let Some(pieces) = info.get(b"pieces") else {
        if info.get_int(b"meta version") == Some(2) || info.get(b"file tree").is_some() {
            return Err(MetainfoError::V2Only);
        }
        return Err(MetainfoError::Missing {
            key: "pieces",
            within: INFO.to_owned(),
        });
    };
    let pieces = pieces
        .as_bytes()
        .ok_or_else(|| wrong_type("pieces", INFO, "a string"))?;
    if !pieces.len().is_multiple_of(20) {
        return Err(MetainfoError::PiecesNotMultiple(pieces.len()));
    }
    let raw_piece_length = required_int(info, "piece length", INFO)?;
    let piece_length = u32::try_from(raw_piece_length)
        .ok()
        .filter(|len| (1..=MAX_PIECE_LENGTH).contains(len))
        .ok_or(MetainfoError::PieceLength(raw_piece_length))?;

    let name = text(info, "name", b"name.utf-8", INFO)?;
    check_path(std::slice::from_ref(&name))?;
    let private = info.get_int(b"private") == Some(1);

    let files = match (info.get(b"length"), info.get(b"files")) {
        (Some(length), None) => {
            let length = length
                .as_int()
                .ok_or_else(|| wrong_type("length", INFO, "an integer"))?;
            let path = vec![name.clone()];
            let length = file_length(length, &path)?;
            vec![FileEntry {
                path,
                length,
                offset: 0,
                padding: false,
            }]
        }
        (None, Some(files)) => {
            let list = files
                .as_list()
                .ok_or_else(|| wrong_type("files", INFO, "a list"))?;
            multi_file(&name, list)?
        }
        _ => return Err(MetainfoError::Layout),
    };
    let total_length = files.last().map_or(0, |f| f.offset + f.length);
    if total_length == 0 {
        return Err(MetainfoError::NoData);
    }
    let expected = total_length.div_ceil(u64::from(piece_length));
    let got = pieces.len() / 20;
    if expected != got as u64 {
        return Err(MetainfoError::PieceCount {
            total_length,
            piece_length,
            expected,
            got,
        });
    }
    check_unique(&files)?;
    let piece_hashes = pieces
        .chunks_exact(20)
        .map(|c| {
            let mut hash = [0u8; 20];
            hash.copy_from_slice(c);
            hash
        })
        .collect();
    Ok(Info {
        name,
        piece_length,
        piece_hashes,
        files,
        total_length,
        private,
    })
}

/// The `files` list: each entry a dictionary with `length` and `path`.
/// Offsets are accumulated with checked arithmetic, so every
/// `offset + length` of the result fits in a `u64`.
fn multi_file(
    name: &str,
    list: lodestone_bencode::ListIter<'_>,
) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut files = Vec::new();
    let mut offset: u64 = 0;
    for (index, entry) in list.enumerate() {
        let within = format!("file {index}");
        let entry = entry.as_dict().ok_or(MetainfoError::NotADict {
            what: "a files entry",
        })?;
        let relative = path_components(entry, &within)?;
        check_path(&relative)?;
        let length = file_length(required_int(entry, "length", &within)?, &relative)?;
        let padding = entry
            .get_bytes(b"attr")
            .is_some_and(|attr| attr.contains(&b'p'));
        let mut path = Vec::with_capacity(relative.len() + 1);
        path.push(name.to_owned());
        path.extend(relative);
        files.push(FileEntry {
            path,
            length,
            offset,
            padding,
        });
        offset = offset
            .checked_add(length)
            .ok_or(MetainfoError::TotalOverflow)?;
    }
    Ok(files)
}
