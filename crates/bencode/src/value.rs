//! Read-only views over a scanned document.

use std::fmt;
use std::ops::Range;

/// What a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `i…e`
    Int,
    /// `N:…`
    Bytes,
    /// `l…e`
    List,
    /// `d…e`
    Dict,
}

/// One value on the tape. `payload` is the integer for [`Kind::Int`] and the
/// offset of the first data byte for [`Kind::Bytes`]; `next` is the index of
/// the token after this value and everything inside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) next: u32,
    pub(crate) payload: i64,
}

/// A scanned bencode value: the input and a flat tape of its tokens.
pub struct Document<'a> {
    input: &'a [u8],
    tokens: Vec<Token>,
}

impl<'a> Document<'a> {
    pub(crate) fn new(input: &'a [u8], tokens: Vec<Token>) -> Self {
        Self { input, tokens }
    }

    /// The top-level value.
    pub fn root(&self) -> Value<'_> {
        Value {
            input: self.input,
            tokens: &self.tokens,
            index: 0,
        }
    }

    /// How many values the document holds, keys included.
    pub fn item_count(&self) -> usize {
        self.tokens.len()
    }
}

impl fmt::Debug for Document<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root().fmt(f)
    }
}

/// A view of one value inside a [`Document`]; cheap to copy.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    input: &'a [u8],
    tokens: &'a [Token],
    index: usize,
}

impl<'a> Value<'a> {
    fn token(&self) -> &'a Token {
        &self.tokens[self.index]
    }

    fn at(&self, index: usize) -> Value<'a> {
        Value { index, ..*self }
    }

    /// What kind of value this is.
    pub fn kind(&self) -> Kind {
        self.token().kind
    }

    /// Byte range of the whole encoded value within the input.
    pub fn span(&self) -> Range<usize> {
        let t = self.token();
        t.start as usize..t.end as usize
    }

    /// The exact encoded bytes of this value, as received.
    pub fn raw(&self) -> &'a [u8] {
        &self.input[self.span()]
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        (self.kind() == Kind::Int).then(|| self.token().payload)
    }

    /// The contents of the byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        let t = self.token();
        (t.kind == Kind::Bytes).then(|| &self.input[t.payload as usize..t.end as usize])
    }

    /// The byte string as UTF-8, if this is a string and valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The elements, if this is a list.
    pub fn as_list(&self) -> Option<ListIter<'a>> {
        let t = self.token();
        (t.kind == Kind::List).then(|| ListIter {
            value: *self,
            next: self.index + 1,
            end: t.next as usize,
        })
    }

    /// The entries, if this is a dictionary.
    pub fn as_dict(&self) -> Option<Dict<'a>> {
        (self.kind() == Kind::Dict).then_some(Dict { value: *self })
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Kind::Int => write!(f, "{}", self.token().payload),
            Kind::Bytes => {
                let bytes = self.as_bytes().unwrap_or_default();
                match std::str::from_utf8(bytes) {
                    Ok(s) => write!(f, "{s:?}"),
                    Err(_) => write!(f, "<{} bytes>", bytes.len()),
                }
            }
            Kind::List => f
                .debug_list()
                .entries(self.as_list().into_iter().flatten())
                .finish(),
            Kind::Dict => {
                let mut map = f.debug_map();
                for (k, v) in self.as_dict().into_iter().flat_map(|d| d.iter()) {
                    map.entry(&String::from_utf8_lossy(k), &v);
                }
                map.finish()
            }
        }
    }
}

/// Iterator over a list's elements.
#[derive(Clone)]
pub struct ListIter<'a> {
    value: Value<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.next >= self.end {
            return None;
        }
        let item = self.value.at(self.next);
        self.next = item.token().next as usize;
        Some(item)
    }
}

/// A dictionary view. Keys are kept in input order; lookups return the first
/// match, so a duplicated key cannot smuggle in a second value.
#[derive(Clone, Copy)]
pub struct Dict<'a> {
    value: Value<'a>,
}

impl<'a> Dict<'a> {
    /// The value under `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The integer under `key`, if present and an integer.
    pub fn get_int(&self, key: &[u8]) -> Option<i64> {
        self.get(key)?.as_int()
    }

    /// The byte string under `key`, if present and a string.
    pub fn get_bytes(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.get(key)?.as_bytes()
    }

    /// The dictionary under `key`, if present and a dictionary.
    pub fn get_dict(&self, key: &[u8]) -> Option<Dict<'a>> {
        self.get(key)?.as_dict()
    }

    /// The list under `key`, if present and a list.
    pub fn get_list(&self, key: &[u8]) -> Option<ListIter<'a>> {
        self.get(key)?.as_list()
    }

    /// Entries in input order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Value<'a>)> + use<'a> {
        let mut items = ListIter {
            value: self.value,
            next: self.value.index + 1,
            end: self.value.token().next as usize,
        };
        std::iter::from_fn(move || {
            let key = items.next()?;
            let value = items.next()?;
            Some((key.as_bytes().unwrap_or_default(), value))
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The dictionary as a value (for its raw bytes or span).
    pub fn as_value(&self) -> Value<'a> {
        self.value
    }
}
