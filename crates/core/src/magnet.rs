//! Magnet links (BEP 9, with BEP 53 file selection).
//!
//! A magnet link names a swarm by its infohash and may carry hints: a display
//! name (`dn`), trackers (`tr`), peer addresses to try first (`x.pe`) and the
//! files to download (`so`). The user pastes it, so every refusal says what is
//! wrong with it. A bare 40-hex or 32-base32 infohash is accepted as well,
//! because that is what people copy out of other clients.
//!
//! [`Magnet`]'s `Display` prints a canonical URI (`xt` first, then `dn`, `tr`,
//! `x.pe`, `so`) that parses back to the same value. Parameters lodestone does
//! not use (`xl`, `ws`, `as`, `kt`, ...) are ignored when parsing and not
//! printed.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, PercentEncode, utf8_percent_encode};
use url::Url;

use crate::id::{IdParseError, InfoHash};

/// Why a magnet link was refused. Always the fault of the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    /// The text is a URI of another scheme (`http:`, `file:`, ...).
    #[error("not a magnet link: the scheme is {scheme:?}, expected \"magnet\"")]
    NotMagnet {
        /// The scheme that was found.
        scheme: String,
    },
    /// The text starts with `magnet:` but is not a well-formed URI.
    #[error("magnet link is not a valid URI")]
    Uri(#[from] url::ParseError),
    /// No `xt=urn:btih:` and no `xt=urn:btmh:` parameter.
    #[error("magnet link has no xt=urn:btih parameter")]
    NoInfoHash,
    /// Only a BitTorrent v2 infohash (`xt=urn:btmh:`), which lodestone cannot use.
    #[error("v2-only magnet links are not supported (no xt=urn:btih parameter)")]
    V2Only,
    /// The v1 infohash (or a bare infohash) is malformed.
    #[error(transparent)]
    InfoHash(#[from] IdParseError),
    /// Two `xt=urn:btih:` parameters name different swarms.
    #[error("magnet link has two different xt=urn:btih infohashes: {first} and {second}")]
    ConflictingInfoHashes {
        /// The first infohash seen.
        first: InfoHash,
        /// The one that disagrees with it.
        second: InfoHash,
    },
    /// Two `xt=urn:btmh:` parameters name different swarms.
    #[error("magnet link has two different xt=urn:btmh infohashes")]
    ConflictingV2InfoHashes,
    /// An `xt=urn:btmh:` value that is not a SHA-256 multihash.
    #[error(
        "xt=urn:btmh value {value:?} is not a SHA-256 multihash (1220 followed by 64 hex characters)"
    )]
    BadMultihash {
        /// The value as given.
        value: String,
    },
    /// An `x.pe` value that is not an IP literal with a port.
    #[error(
        "x.pe peer address {value:?} is not an IP address with a port, like 1.2.3.4:6881 or [::1]:6881 (host names are not supported)"
    )]
    BadPeer {
        /// The value as given.
        value: String,
    },
    /// An `so` value that is not a list of indices and inclusive ranges.
    #[error("so={value:?} is not a list of file indices and ranges like 0,2,4-6: {reason}")]
    BadSelection {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One entry of a BEP 53 `so=` list: the file indices `first..=last`.
///
/// A single index is a range with `first == last` and prints without a dash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileSelection {
    /// First selected file index.
    pub first: u32,
    /// Last selected file index, inclusive; never below `first`.
    pub last: u32,
}

impl FileSelection {
    /// Whether the file at `index` is in this range.
    pub fn selects(&self, index: u32) -> bool {
        (self.first..=self.last).contains(&index)
    }

    fn parse(item: &str) -> Result<Self, &'static str> {
        let number = |text: &str| {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err("an entry is not a decimal number");
            }
            text.parse::<u32>()
                .map_err(|_| "a file index is larger than 4294967295")
        };
        match item.split_once('-') {
            None => number(item).map(|i| FileSelection { first: i, last: i }),
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err("a range ends before it starts");
                }
                Ok(FileSelection { first, last })
            }
        }
    }
}

impl fmt::Display for FileSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    /// The v1 infohash (`xt=urn:btih:`): the swarm to join.
    pub info_hash: InfoHash,
    /// The v2 SHA-256 infohash (`xt=urn:btmh:1220...`) of a hybrid torrent,
    /// kept so the link prints back whole; lodestone itself uses v1 only.
    pub info_hash_v2: Option<[u8; 32]>,
    /// `dn`: a name to show until the metadata arrives.
    pub display_name: Option<String>,
    /// `tr`: tracker URLs, in the order given, kept as text.
    pub trackers: Vec<String>,
    /// `x.pe`: peers to contact directly, in the order given.
    pub peers: Vec<SocketAddr>,
    /// `so` (BEP 53): only these files are wanted; `None` means all of them.
    pub select_only: Option<Vec<FileSelection>>,
}

impl Magnet {
    /// A link naming just `info_hash`.
    pub fn new(info_hash: InfoHash) -> Self {
        Magnet {
            info_hash,
            info_hash_v2: None,
            display_name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            select_only: None,
        }
    }

    /// Parses a `magnet:?` URI or a bare 40-hex / 32-base32 infohash.
    /// Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Magnet, MagnetError> {
        let text = text.trim();
        let looks_like_uri = text
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("magnet:"));
        if !looks_like_uri {
            // Another scheme is named as such; anything else is taken as a bare infohash.
            if let Ok(url) = Url::parse(text) {
                return Err(MagnetError::NotMagnet {
                    scheme: url.scheme().to_owned(),
                });
            }
            return Ok(Magnet::new(InfoHash::parse(text)?));
        }
        let url = Url::parse(text)?;
        let mut v1: Option<InfoHash> = None;
        let mut v2: Option<[u8; 32]> = None;
        let mut magnet = Magnet::new(InfoHash::default());
        for (key, value) in url.query_pairs() {
            match &*key {
                "xt" => {
                    if let Some(hash) = strip_prefix_ignore_case(&value, "urn:btih:") {
                        let hash = InfoHash::parse(hash)?;
                        match v1 {
                            Some(first) if first != hash => {
                                return Err(MagnetError::ConflictingInfoHashes {
                                    first,
                                    second: hash,
                                });
                            }
                            _ => v1 = Some(hash),
                        }
                    } else if let Some(hash) = strip_prefix_ignore_case(&value, "urn:btmh:") {
                        let hash = parse_sha256_multihash(hash).ok_or_else(|| {
                            MagnetError::BadMultihash {
                                value: hash.to_owned(),
                            }
                        })?;
                        if v2.is_some_and(|first| first != hash) {
                            return Err(MagnetError::ConflictingV2InfoHashes);
                        }
                        v2 = Some(hash);
                    }
                    // Other exact topics (ed2k, sha1, ...) name other networks: ignore them.
                }
                // The first dn wins; later ones are ignored like unknown parameters.
                "dn" if magnet.display_name.is_none() => {
                    magnet.display_name = Some(value.into_owned());
                }
                "tr" => magnet.trackers.push(value.into_owned()),
                "x.pe" => {
                    let peer = SocketAddr::from_str(&value).map_err(|_| MagnetError::BadPeer {
                        value: value.clone().into_owned(),
                    })?;
                    magnet.peers.push(peer);
                }
                "so" => {
                    let selection = parse_selection(&value)?;
                    magnet
                        .select_only
                        .get_or_insert_with(Vec::new)
                        .extend(selection);
                }
                _ => {}
            }
        }
        magnet.info_hash = match (v1, v2) {
            (Some(v1), _) => v1,
            (None, Some(_)) => return Err(MagnetError::V2Only),
            (None, None) => return Err(MagnetError::NoInfoHash),
        };
        magnet.info_hash_v2 = v2;
        Ok(magnet)
    }

    /// Whether the file at `index` is wanted: true for every file when the
    /// link has no `so` parameter.
    pub fn selects(&self, index: u32) -> bool {
        self.select_only
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.selects(index)))
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Magnet::parse(text)
    }
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "magnet:?xt=urn:btih:{}", self.info_hash)?;
        if let Some(v2) = &self.info_hash_v2 {
            write!(f, "&xt=urn:btmh:1220{}", hex::encode(v2))?;
        }
        if let Some(name) = &self.display_name {
            write!(f, "&dn={}", query_value(name))?;
        }
        for tracker in &self.trackers {
            write!(f, "&tr={}", query_value(tracker))?;
        }
        for peer in &self.peers {
            write!(f, "&x.pe={}", query_value(&peer.to_string()))?;
        }
        if let Some(ranges) = &self.select_only {
            f.write_str("&so=")?;
            for (i, range) in ranges.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{range}")?;
            }
        }
        Ok(())
    }
}

fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `1220` (SHA-256, 32 bytes) followed by 64 hex characters.
fn parse_sha256_multihash(text: &str) -> Option<[u8; 32]> {
    let digest = strip_prefix_ignore_case(text, "1220")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(digest, &mut out).ok()?;
    Some(out)
}

/// Parses a BEP 53 file list such as `0,2,4-6` (the `so=` value, also taken
/// by `lodestone download --select`).
pub fn parse_selection(value: &str) -> Result<Vec<FileSelection>, MagnetError> {
    let bad = |reason| MagnetError::BadSelection {
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    value
        .split(',')
        .map(|item| FileSelection::parse(item).map_err(bad))
        .collect()
}

/// The bytes a query value escapes, so that it parses back to the same text.
///
/// Unreserved characters and the harmless sub-delimiters stay readable (so a
/// tracker URL keeps its `:` and `/`); `&`, `=`, `+`, `#`, `%`, brackets,
/// spaces and every non-ASCII byte are escaped. `+` must be escaped because
/// query parsing reads it as a space, which is how `dn=a+b` works in the wild.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'/')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b'?');

/// `text` percent-encoded as a query value.
fn query_value(text: &str) -> PercentEncode<'_> {
    utf8_percent_encode(text, QUERY_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn parse(text: &str) -> Magnet {
        Magnet::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn error(text: &str) -> String {
        Magnet::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn hex_and_base32_name_the_same_swarm() {
        let hex = parse(&format!("magnet:?xt=urn:btih:{HASH}"));
        let b32 = parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK");
        assert_eq!(hex, b32);
        assert_eq!(hex.info_hash.to_hex(), HASH);
        assert_eq!(hex, Magnet::new(hex.info_hash));
    }

    #[test]
    fn bare_infohash_is_a_magnet() {
        assert_eq!(parse(HASH).info_hash.to_hex(), HASH);
        assert_eq!(
            parse(" YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK\n")
                .info_hash
                .to_hex(),
            HASH
        );
        assert_eq!(
            error(&HASH[..39]),
            "infohash must be 40 hex or 32 base32 characters, got 39 characters"
        );
    }

    #[test]
    fn every_parameter_is_read() {
        let m = parse(&format!(
            "MAGNET:?xt=URN:BTIH:{}&dn=Some+Name%20%C3%A9&tr=udp%3A%2F%2Ft1%3A80&tr=http://t2/a?b=1\
             &x.pe=1.2.3.4:6881&x.pe=%5B::1%5D:7000&x.pe=[fe80::2]:1&so=0,2,4-6&xl=1234&ws=x",
            HASH.to_uppercase()
        ));
        assert_eq!(m.info_hash.to_hex(), HASH);
        assert_eq!(m.display_name.as_deref(), Some("Some Name é"));
        assert_eq!(m.trackers, ["udp://t1:80", "http://t2/a?b=1"]);
        let peers: Vec<String> = m.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["1.2.3.4:6881", "[::1]:7000", "[fe80::2]:1"]);
        let so = m.select_only.as_ref().unwrap();
        assert_eq!(so.len(), 3);
        let selected: Vec<u32> = (0..9).filter(|&i| m.selects(i)).collect();
        assert_eq!(selected, [0, 2, 4, 5, 6]);
    }

    #[test]
    fn no_so_selects_everything() {
        let m = parse(HASH);
        assert!(m.selects(0) && m.selects(u32::MAX));
    }

    #[test]
    fn hybrid_keeps_both_hashes_and_v2_only_is_refused() {
        let v2 = format!("1220{}", "ab".repeat(32));
        let m = parse(&format!(
            "magnet:?xt=urn:btmh:{v2}&xt=urn:btih:{HASH}&xt=urn:ed2k:xyz"
        ));
        assert_eq!(m.info_hash.to_hex(), HASH);
        assert_eq!(m.info_hash_v2, Some([0xab; 32]));
        assert_eq!(
            error(&format!("magnet:?xt=urn:btmh:{v2}&dn=x")),
            "v2-only magnet links are not supported (no xt=urn:btih parameter)"
        );
        assert!(
            error(&format!(
                "magnet:?xt=urn:btih:{HASH}&xt=urn:btmh:1114{}",
                "ab".repeat(32)
            ))
            .contains("is not a SHA-256 multihash")
        );
    }

    #[test]
    fn two_v2_hashes_must_agree() {
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        let same = format!("magnet:?xt=urn:btih:{HASH}&xt=urn:btmh:1220{a}&xt=urn:btmh:1220{a}");
        assert_eq!(parse(&same).info_hash_v2, Some([0xab; 32]));
        let differ = format!("magnet:?xt=urn:btih:{HASH}&xt=urn:btmh:1220{a}&xt=urn:btmh:1220{b}");
        assert_eq!(
            error(&differ),
            "magnet link has two different xt=urn:btmh infohashes"
        );
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(
            error("magnet:?dn=x&tr=udp://t:1"),
            "magnet link has no xt=urn:btih parameter"
        );
        assert_eq!(
            error("magnet:?xt=urn:btih:abc"),
            "infohash must be 40 hex or 32 base32 characters, got 3 characters"
        );
        assert!(
            error(&format!("magnet:?xt=urn:btih:{HASH}&x.pe=example.org:1"))
                .contains("\"example.org:1\"")
        );
        assert!(error(&format!("magnet:?xt=urn:btih:{HASH}&x.pe=1.2.3.4")).contains("\"1.2.3.4\""));
        assert!(
            error(&format!("magnet:?xt=urn:btih:{HASH}&so=3-1")).contains("ends before it starts")
        );
        assert!(
            error(&format!("magnet:?xt=urn:btih:{HASH}&so=1,,2")).contains("not a decimal number")
        );
        assert!(error(&format!("magnet:?xt=urn:btih:{HASH}&so=")).contains("it is empty"));
        assert!(error(&format!("magnet:?xt=urn:btih:{HASH}&so=-1")).contains("not a decimal"));
        assert!(error(&format!("magnet:?xt=urn:btih:{HASH}&so=99999999999")).contains("larger"));
        assert!(
            error(&format!(
                "magnet:?xt=urn:btih:{HASH}&xt=urn:btih:{}",
                "0".repeat(40)
            ))
            .contains("two different")
        );
        assert_eq!(
            error("https://example.org/a.torrent"),
            "not a magnet link: the scheme is \"https\", expected \"magnet\""
        );
    }

    #[test]
    fn repeated_identical_btih_is_fine() {
        let m = parse(&format!(
            "magnet:?xt=urn:btih:{HASH}&xt=urn:btih:{}",
            HASH.to_uppercase()
        ));
        assert_eq!(m.info_hash.to_hex(), HASH);
    }

    #[test]
    fn display_is_canonical() {
        let mut m = parse(HASH);
        m.display_name = Some("a b+c&d=é".into());
        m.trackers = vec!["udp://tracker:80/announce".into()];
        m.peers = vec!["[::1]:6881".parse().unwrap()];
        m.select_only = Some(vec![
            FileSelection { first: 0, last: 0 },
            FileSelection { first: 4, last: 6 },
        ]);
        let text = m.to_string();
        assert_eq!(
            text,
            format!(
                "magnet:?xt=urn:btih:{HASH}&dn=a%20b%2Bc%26d%3D%C3%A9\
                 &tr=udp://tracker:80/announce&x.pe=%5B::1%5D:6881&so=0,4-6"
            )
        );
        assert_eq!(parse(&text), m);
    }
}
