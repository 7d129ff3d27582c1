//! Canonical bencode output.
//!
//! [`Writer`] streams straight into a buffer for hot paths (KRPC replies);
//! [`OwnedValue`] builds a tree whose dictionaries are sorted by construction.

use std::collections::BTreeMap;

use crate::value::{Kind, Value};

/// Streams bencode into a byte buffer.
pub struct Writer<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> Writer<'o> {
    /// Writes into `out`, appending.
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Writes an integer.
    pub fn int(&mut self, value: i64) {
        self.out.push(b'i');
        if value < 0 {
            self.out.push(b'-');
        }
        write_decimal(value.unsigned_abs(), self.out);
        self.out.push(b'e');
    }

    /// Writes a byte string.
    pub fn bytes(&mut self, value: &[u8]) {
        self.bytes_header(value.len());
        self.out.extend_from_slice(value);
    }

    /// Writes the length prefix (`len:`) of a byte string whose `len` bytes
    /// the caller then writes with [`Writer::raw`]: a string assembled in
    /// pieces (a KRPC reply's contacts) goes out without first being
    /// gathered in a buffer of its own.
    pub fn bytes_header(&mut self, len: usize) {
        write_decimal(len as u64, self.out);
        self.out.push(b':');
    }

    /// Writes a list whose elements `fill` writes.
    pub fn list(&mut self, fill: impl FnOnce(&mut Writer<'_>)) {
        self.out.push(b'l');
        fill(&mut Writer { out: self.out });
        self.out.push(b'e');
    }

    /// Writes a dictionary whose entries `fill` writes, in ascending key order.
    pub fn dict(&mut self, fill: impl FnOnce(&mut DictWriter<'_>)) {
        self.out.push(b'd');
        fill(&mut DictWriter {
            writer: Writer { out: self.out },
            last_key: None,
        });
        self.out.push(b'e');
    }

    /// Copies an already-encoded value verbatim.
    pub fn raw(&mut self, encoded: &[u8]) {
        self.out.extend_from_slice(encoded);
    }
}

/// Appends the decimal digits of `n` without allocating: encoding sits on the
/// DHT reply path, where a `to_string` per integer or string length showed up
/// as a malloc and a free per key (4 % of a bootstrap node's CPU).
fn write_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes the entries of one dictionary.
///
/// Keys must come in strictly ascending byte order: that is what makes the
/// output canonical. Callers write keys in a fixed order chosen in the code,
/// so a mistake is a programming error caught by tests in debug builds.
pub struct DictWriter<'o> {
    writer: Writer<'o>,
    last_key: Option<Vec<u8>>,
}

impl<'o> DictWriter<'o> {
    /// Writes `key` and hands back the writer for its value.
    pub fn key(&mut self, key: &[u8]) -> &mut Writer<'o> {
        debug_assert!(
            self.last_key.as_deref().is_none_or(|last| last < key),
            "bencode dictionary keys out of order: {:?} after {:?}",
            String::from_utf8_lossy(key),
            self.last_key.as_deref().map(String::from_utf8_lossy),
        );
        if cfg!(debug_assertions) {
            self.last_key = Some(key.to_vec());
        }
        self.writer.bytes(key);
        &mut self.writer
    }

    /// Writes an integer entry.
    pub fn int(&mut self, key: &[u8], value: i64) {
        self.key(key).int(value);
    }

    /// Writes a byte-string entry.
    pub fn bytes(&mut self, key: &[u8], value: &[u8]) {
        self.key(key).bytes(value);
    }
}

/// An owned bencode value; dictionaries are sorted by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedValue {
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<OwnedValue>),
    /// A dictionary.
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    /// Writes this value canonically.
    pub fn write(&self, w: &mut Writer<'_>) {
        match self {
            OwnedValue::Int(i) => w.int(*i),
            OwnedValue::Bytes(b) => w.bytes(b),
            OwnedValue::List(items) => w.list(|w| items.iter().for_each(|item| item.write(w))),
            OwnedValue::Dict(map) => w.dict(|d| {
                for (k, v) in map {
                    v.write(d.key(k));
                }
            }),
        }
    }
}

impl From<Value<'_>> for OwnedValue {
    /// Copies a scanned value. Recursion is bounded by the depth limit the
    /// document was scanned with. Duplicate keys keep their first value, as
    /// lookups on [`crate::Dict`] do.
    fn from(value: Value<'_>) -> Self {
        match value.kind() {
            Kind::Int => OwnedValue::Int(value.as_int().unwrap_or_default()),
            Kind::Bytes => OwnedValue::Bytes(value.as_bytes().unwrap_or_default().to_vec()),
            Kind::List => OwnedValue::List(
                value
                    .as_list()
                    .into_iter()
                    .flatten()
                    .map(Self::from)
                    .collect(),
            ),
            Kind::Dict => {
                let mut map = BTreeMap::new();
                for (k, v) in value.as_dict().into_iter().flat_map(|d| d.iter()) {
                    map.entry(k.to_vec()).or_insert_with(|| Self::from(v));
                }
                OwnedValue::Dict(map)
            }
        }
    }
}

/// Encodes a value canonically into a new buffer.
pub fn encode(value: &OwnedValue) -> Vec<u8> {
    let mut out = Vec::new();
    value.write(&mut Writer::new(&mut out));
    out
}
