//! The iterative scanner that turns untrusted bytes into a [`Document`].

use crate::Error;
use crate::value::{Document, Kind, Token};

/// Bounds applied while scanning. Each is checked before the memory it guards
/// is allocated, so hostile input costs at most what the limits allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries (the top-level container is depth 1).
    pub max_depth: usize,
    /// Longest input accepted, in bytes (never more than `u32::MAX`).
    pub max_input: usize,
    /// Most values (integers, strings, lists, dictionaries, keys included).
    pub max_items: usize,
    /// Longest single byte string.
    pub max_string: usize,
}

impl Limits {
    /// For one KRPC datagram: UDP payloads are at most 64 KiB, real messages
    /// are a few levels deep and hold tens of values.
    pub const KRPC: Limits = Limits {
        max_depth: 8,
        max_input: 65_535,
        max_items: 1_024,
        max_string: 65_535,
    };

    /// For peer wire extension messages (handshakes, ut_metadata headers).
    pub const PEER_MESSAGE: Limits = Limits {
        max_depth: 16,
        max_input: 1 << 20,
        max_items: 16_384,
        max_string: 1 << 20,
    };

    /// For `.torrent` files and info dictionaries: large piece lists and many
    /// files are legitimate, deep nesting is not.
    pub const METAINFO: Limits = Limits {
        max_depth: 32,
        max_input: 64 << 20,
        max_items: 4_000_000,
        max_string: 64 << 20,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::PEER_MESSAGE
    }
}

/// Scans `input`, which must hold exactly one value and nothing after it.
pub fn parse<'a>(input: &'a [u8], limits: &Limits) -> Result<Document<'a>, Error> {
    let (doc, end) = parse_prefix(input, limits)?;
    if end != input.len() {
        return Err(Error::Trailing {
            offset: end,
            count: input.len() - end,
        });
    }
    Ok(doc)
}

/// Scans one value at the start of `input` and returns it with the offset
/// where it ends; whatever follows is left alone.
pub fn parse_prefix<'a>(input: &'a [u8], limits: &Limits) -> Result<(Document<'a>, usize), Error> {
    let max_input = limits.max_input.min(u32::MAX as usize);
    if input.len() > max_input {
        return Err(Error::TooLarge {
            len: input.len(),
            limit: max_input,
        });
    }
    Scanner {
        input,
        limits,
        pos: 0,
        // Every value takes at least two bytes, so this is an upper bound that
        // saves regrowing the tape; it is capped by the item limit.
        tokens: Vec::with_capacity((input.len() / 2 + 1).min(limits.max_items).min(4096)),
        innermost: None,
        depth: 0,
    }
    .run()
}

struct Scanner<'a, 'l> {
    input: &'a [u8],
    limits: &'l Limits,
    pos: usize,
    tokens: Vec<Token>,
    /// The token of the innermost container still open. The stack of open
    /// containers lives in the tape itself (see [`OpenLink`]), so a scan
    /// allocates nothing but the tape: one allocation per message matters
    /// to a DHT node answering a query every few microseconds.
    innermost: Option<usize>,
    /// How many containers are open.
    depth: usize,
}

/// What an open container's token holds in its payload until it closes
/// (containers have no payload of their own): the container enclosing it,
/// and for a dictionary whether its next value is a key.
#[derive(Clone, Copy)]
struct OpenLink {
    enclosing: Option<usize>,
    expect_key: bool,
}

impl OpenLink {
    fn encode(self) -> i64 {
        let enclosing = self.enclosing.map_or(0, |t| t as i64 + 1);
        enclosing << 1 | i64::from(self.expect_key)
    }

    fn decode(payload: i64) -> Self {
        Self {
            enclosing: usize::try_from(payload >> 1)
                .ok()
                .and_then(|t| t.checked_sub(1)),
            expect_key: payload & 1 == 1,
        }
    }
}

impl<'a> Scanner<'a, '_> {
    fn run(mut self) -> Result<(Document<'a>, usize), Error> {
        loop {
            let byte = self.peek()?;
            let expect_key = self.expect_key();
            if byte == b'e'
                && let Some(innermost) = self.innermost
            {
                // A dictionary may only close where a key would start.
                if expect_key == Some(false) {
                    return Err(Error::Unexpected {
                        offset: self.pos,
                        byte,
                    });
                }
                self.pos += 1;
                self.close(innermost);
            } else if expect_key == Some(true) && !byte.is_ascii_digit() {
                return Err(Error::KeyNotString { offset: self.pos });
            } else {
                match byte {
                    b'i' => self.integer()?,
                    b'0'..=b'9' => self.string()?,
                    b'l' | b'd' => {
                        self.container(byte == b'd')?;
                        continue;
                    }
                    _ => {
                        return Err(Error::Unexpected {
                            offset: self.pos,
                            byte,
                        });
                    }
                }
            }
            // A value (or container) just completed.
            let Some(innermost) = self.innermost else {
                break;
            };
            let token = &mut self.tokens[innermost];
            if token.kind == Kind::Dict {
                // Keys and values alternate.
                let mut link = OpenLink::decode(token.payload);
                link.expect_key = !link.expect_key;
                token.payload = link.encode();
            }
        }
        let end = self.pos;
        Ok((Document::new(self.input, self.tokens), end))
    }

    /// Whether the innermost open container wants a key next: `None` in a
    /// list or outside any container.
    fn expect_key(&self) -> Option<bool> {
        let token = &self.tokens[self.innermost?];
        (token.kind == Kind::Dict).then(|| OpenLink::decode(token.payload).expect_key)
    }

    /// Closes `innermost`, the innermost open container, at the current
    /// position.
    fn close(&mut self, innermost: usize) {
        let next = self.tokens.len() as u32;
        let token = &mut self.tokens[innermost];
        self.innermost = OpenLink::decode(token.payload).enclosing;
        token.end = self.pos as u32;
        token.next = next;
        token.payload = 0;
        self.depth -= 1;
    }

    fn peek(&self) -> Result<u8, Error> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(Error::Truncated { offset: self.pos })
    }

    fn push(&mut self, kind: Kind, start: usize, payload: i64) -> Result<usize, Error> {
        if self.tokens.len() >= self.limits.max_items {
            return Err(Error::TooManyItems {
                limit: self.limits.max_items,
            });
        }
        let index = self.tokens.len();
        self.tokens.push(Token {
            kind,
            start: start as u32,
            end: self.pos as u32,
            next: index as u32 + 1,
            payload,
        });
        Ok(index)
    }

    fn container(&mut self, dict: bool) -> Result<(), Error> {
        if self.depth >= self.limits.max_depth {
            return Err(Error::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        let start = self.pos;
        self.pos += 1;
        let kind = if dict { Kind::Dict } else { Kind::List };
        let link = OpenLink {
            enclosing: self.innermost,
            expect_key: dict,
        };
        self.innermost = Some(self.push(kind, start, link.encode())?);
        self.depth += 1;
        Ok(())
    }

    /// Reads the digits of a non-negative decimal up to `terminator`, refusing
    /// leading zeros and overflow.
    fn digits(&mut self, start: usize, terminator: u8) -> Result<u64, Error> {
        let first = self.pos;
        let mut value: u64 = 0;
        loop {
            let byte = self.peek()?;
            if byte == terminator {
                break;
            }
            if !byte.is_ascii_digit() {
                return Err(Error::Unexpected {
                    offset: self.pos,
                    byte,
                });
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(byte - b'0')))
                .ok_or(Error::BadNumber { offset: start })?;
            self.pos += 1;
        }
        let len = self.pos - first;
        if len == 0 || (len > 1 && self.input[first] == b'0') {
            return Err(Error::BadNumber { offset: start });
        }
        self.pos += 1; // the terminator
        Ok(value)
    }

    fn integer(&mut self) -> Result<(), Error> {
        let start = self.pos;
        self.pos += 1;
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let magnitude = self.digits(start, b'e')?;
        let value = if negative {
            if magnitude == 0 {
                return Err(Error::BadNumber { offset: start });
            }
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
        .ok_or(Error::BadNumber { offset: start })?;
        self.push(Kind::Int, start, value)?;
        Ok(())
    }

    fn string(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let len = self.digits(start, b':')?;
        if len > self.limits.max_string as u64 {
            return Err(Error::StringTooLong {
                offset: start,
                len,
                limit: self.limits.max_string,
            });
        }
        let payload = self.pos;
        let remaining = self.input.len() - payload;
        if len > remaining as u64 {
            return Err(Error::Truncated {
                offset: self.input.len(),
            });
        }
        self.pos += len as usize;
        self.push(Kind::Bytes, start, payload as i64)?;
        Ok(())
    }
}
