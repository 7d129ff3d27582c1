//! Writing `.torrent` files, and creating torrents from content (for tests
//! and for seeding local data).

use lodestone_bencode::Writer;
use sha1::{Digest, Sha1};

use super::Metainfo;
use super::error::MetainfoError;

impl Metainfo {
    /// Encodes a `.torrent` file. The info dictionary is copied verbatim from
    /// the bytes it was parsed from, so the infohash is preserved even when
    /// those bytes were not canonical bencode or held keys lodestone ignores.
    /// Keys of the outer dictionary are written in sorted order.
    pub fn to_torrent_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw_info.len() + 256);
        Writer::new(&mut out).dict(|d| {
            if let Some(announce) = &self.announce {
                d.bytes(b"announce", announce.as_bytes());
            }
            if !self.announce_list.is_empty() {
                d.key(b"announce-list").list(|w| {
                    for tier in &self.announce_list {
                        w.list(|w| tier.iter().for_each(|url| w.bytes(url.as_bytes())));
                    }
                });
            }
            if let Some(comment) = &self.comment {
                d.bytes(b"comment", comment.as_bytes());
            }
            if let Some(created_by) = &self.created_by {
                d.bytes(b"created by", created_by.as_bytes());
            }
            if let Some(date) = self.creation_date {
                d.int(b"creation date", date);
            }
            d.key(b"info").raw(&self.raw_info);
        });
        out
    }

    /// Creates a torrent over in-memory content: a single file when `files`
    /// holds one entry with an empty path, otherwise a directory `name` with
    /// the files at their relative paths (components). The info dictionary is
    /// canonical bencode, hashed and validated like any received one.
    pub fn create(
        name: &str,
        piece_length: u32,
        files: &[(Vec<String>, &[u8])],
    ) -> Result<Metainfo, MetainfoError> {
        let single = matches!(files, [(path, _)] if path.is_empty());
        let mut hasher = PieceHasher::new(piece_length);
        files.iter().for_each(|(_, data)| hasher.update(data));
        let pieces = hasher.finish();
        // Slice lengths are below isize::MAX, so `as i64` is exact.
        let mut raw = Vec::new();
        Writer::new(&mut raw).dict(|d| {
            if !single {
                d.key(b"files").list(|w| {
                    for (path, data) in files {
                        w.dict(|f| {
                            f.int(b"length", data.len() as i64);
                            f.key(b"path").list(|w| {
                                path.iter().for_each(|c| w.bytes(c.as_bytes()));
                            });
                        });
                    }
                });
            } else if let [(_, data)] = files {
                d.int(b"length", data.len() as i64);
            }
            d.bytes(b"name", name.as_bytes());
            d.int(b"piece length", i64::from(piece_length));
            d.bytes(b"pieces", &pieces);
        });
        Metainfo::from_info_bytes(raw)
    }
}

/// SHA-1 of each `piece_length` chunk of a stream fed in arbitrary slices.
struct PieceHasher {
    piece_length: usize,
    filled: usize,
    sha: Sha1,
    out: Vec<u8>,
}

impl PieceHasher {
    fn new(piece_length: u32) -> Self {
        PieceHasher {
            piece_length: (piece_length as usize).max(1),
            filled: 0,
            sha: Sha1::new(),
            out: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (self.piece_length - self.filled).min(data.len());
            self.sha.update(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == self.piece_length {
                self.out.extend_from_slice(&self.sha.finalize_reset());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.out.extend_from_slice(&self.sha.finalize());
        }
        self.out
    }
}
