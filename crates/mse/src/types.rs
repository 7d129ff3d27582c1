//! What both handshake state machines share: the methods, the injected
//! randomness, the outcome and the errors.

use lodestone_core::InfoHash;

use crate::crypto::Cipher;

/// Most bytes of any padding (PadA, PadB, PadC, PadD) the specification
/// allows; also the window in which each synchronisation marker must start.
pub const MAX_PAD: usize = 512;

/// The verification constant: eight zero bytes, sent encrypted.
pub(crate) const VC: [u8; 8] = [0; 8];

/// How the stream after the handshake is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Plaintext after the handshake (`0x01`).
    Plaintext,
    /// RC4 in both directions (`0x02`).
    Rc4,
}

impl Method {
    /// The method's bit in `crypto_provide` / `crypto_select`.
    pub const fn bit(self) -> u32 {
        match self {
            Method::Plaintext => 0x01,
            Method::Rc4 => 0x02,
        }
    }
}

/// A set of [`Method`]s, as in `crypto_provide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Methods(u32);

impl Methods {
    /// RC4 only: nothing after the handshake travels in plaintext.
    pub const RC4: Methods = Methods(0x02);
    /// Plaintext only (the handshake itself still hides the infohash).
    pub const PLAINTEXT: Methods = Methods(0x01);
    /// Either; RC4 is chosen when both sides offer it.
    pub const BOTH: Methods = Methods(0x03);

    /// The set from wire bits; unknown bits are dropped.
    pub const fn from_bits(bits: u32) -> Methods {
        Methods(bits & 0x03)
    }

    /// The wire bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether `method` is in the set.
    pub const fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// The method a responder selects from what both sides accept: RC4
    /// when possible.
    pub(crate) fn select(self, other: Methods) -> Option<Method> {
        let common = Methods(self.0 & other.0);
        [Method::Rc4, Method::Plaintext]
            .into_iter()
            .find(|m| common.contains(*m))
    }
}

/// The randomness a handshake uses, injected so that tests are
/// deterministic.
#[derive(Debug, Clone)]
pub struct Entropy {
    /// Our Diffie–Hellman private exponent (the specification asks for 160
    /// bits or more).
    pub private_key: [u8; 20],
    /// The random padding after our public key (PadA or PadB), at most
    /// [`MAX_PAD`] bytes: longer is cut.
    pub pad: Vec<u8>,
}

impl Entropy {
    /// Fresh randomness from the thread's generator: a random key and
    /// 0..=512 random padding bytes.
    pub fn random() -> Entropy {
        let len = usize::from(rand::random::<u16>()) % (MAX_PAD + 1);
        let mut pad = Vec::with_capacity(len);
        while pad.len() < len {
            let chunk: [u8; 32] = rand::random();
            pad.extend_from_slice(&chunk[..(len - pad.len()).min(32)]);
        }
        Entropy {
            private_key: rand::random(),
            pad,
        }
    }

    /// The padding, cut to [`MAX_PAD`].
    pub(crate) fn pad(&self) -> &[u8] {
        &self.pad[..self.pad.len().min(MAX_PAD)]
    }
}

/// How the stream is carried from here on.
#[derive(Debug)]
pub enum Crypto {
    /// Plaintext.
    Plaintext,
    /// RC4, with our two keystreams positioned after the handshake.
    Rc4(Box<Cipher>),
}

impl Crypto {
    /// The method this is.
    pub fn method(&self) -> Method {
        match self {
            Crypto::Plaintext => Method::Plaintext,
            Crypto::Rc4(_) => Method::Rc4,
        }
    }
}

/// A finished handshake.
#[derive(Debug)]
pub struct Outcome {
    /// The torrent the connection is for: ours as initiator, the one the
    /// lookup found as responder.
    pub info_hash: InfoHash,
    /// The method selected, and the keystreams for RC4.
    pub crypto: Crypto,
    /// Stream bytes received after the handshake, already decrypted: for a
    /// responder the initiator's initial payload (its BitTorrent handshake)
    /// comes first.
    pub received: Vec<u8>,
}

/// Why a handshake failed. Every variant but [`MseError::Finished`] is the
/// peer's fault (or the peer is not speaking MSE at all): drop the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    /// The synchronisation marker did not show within the padding bound:
    /// padding too long, or not MSE at all.
    #[error("no MSE synchronisation marker within {MAX_PAD} bytes of padding")]
    NoSync,
    /// The peer's public key is 0, 1 or p-1 and would give a guessable
    /// secret.
    #[error("degenerate Diffie-Hellman public key")]
    BadPublicKey,
    /// The decrypted verification constant is not zero (wrong key or
    /// infohash).
    #[error("bad verification constant")]
    BadVc,
    /// A padding length field above [`MAX_PAD`].
    #[error("padding of {0} bytes, more than {MAX_PAD}")]
    PadTooLong(u16),
    /// The peer's methods and ours have nothing in common.
    #[error("no common method: peer offers {offered:#x}, we allow {allowed:#x}")]
    NoCommonMethod {
        /// The peer's `crypto_provide`.
        offered: u32,
        /// Ours.
        allowed: u32,
    },
    /// The responder selected a method we did not offer, or several.
    #[error("peer selected method {0:#x}, not one we offered")]
    BadSelect(u32),
    /// The obfuscated infohash matches no torrent we serve.
    #[error("encrypted connection for a torrent we do not serve")]
    UnknownInfoHash,
    /// Input after the handshake ended (a bug of the caller, which should
    /// have taken the [`Outcome`]).
    #[error("the handshake is over")]
    Finished,
}

/// The offset of `marker` in `buf` if it starts within the first
/// `MAX_PAD + 1` positions; `Err(NoSync)` once enough bytes are buffered to
/// know it does not; `Ok(None)` while it still may.
pub(crate) fn find_marker(buf: &[u8], marker: &[u8]) -> Result<Option<usize>, MseError> {
    let window = &buf[..buf.len().min(MAX_PAD + marker.len())];
    if let Some(at) = window.windows(marker.len()).position(|w| w == marker) {
        return Ok(Some(at));
    }
    if buf.len() >= MAX_PAD + marker.len() {
        Err(MseError::NoSync)
    } else {
        Ok(None)
    }
}

/// A big-endian `u16` at `at`; the caller checked the length.
pub(crate) fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// A big-endian `u32` at `at`; the caller checked the length.
pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// What one step of a handshake state machine did.
// States hold the keystreams by value; a step moves one once, so boxing
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step<S> {
    /// Moved on: step again.
    Next(S),
    /// Needs more input.
    Wait(S),
    /// Finished.
    Done(Outcome),
}

/// What both handshake sides keep besides their own facts: the step they
/// are at, bytes received and not yet consumed, bytes to send.
pub(crate) struct Core<S> {
    /// `None` once finished or failed.
    pub(crate) state: Option<S>,
    /// Received, not yet consumed.
    pub(crate) input: Vec<u8>,
    /// To send.
    pub(crate) output: Vec<u8>,
}

impl<S> Core<S> {
    /// At `state`, with `output` ready to send.
    pub(crate) fn new(state: S, output: Vec<u8>) -> Self {
        Self {
            state: Some(state),
            input: Vec::new(),
            output,
        }
    }

    /// Bytes to send now, if any.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.output.is_empty()).then(|| std::mem::take(&mut self.output))
    }

    /// Takes received bytes and the state to step from;
    /// [`MseError::Finished`] once the handshake ended.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<S, MseError> {
        let state = self.state.take().ok_or(MseError::Finished)?;
        self.input.extend_from_slice(bytes);
        Ok(state)
    }
}

/// Steps a state machine from `state` over its buffered input until it
/// waits or finishes. Returns the state to keep (`None` once finished or
/// failed) and the outcome, if any.
pub(crate) fn drive<S>(
    mut state: S,
    mut step: impl FnMut(S) -> Result<Step<S>, MseError>,
) -> (Option<S>, Result<Option<Outcome>, MseError>) {
    loop {
        match step(state) {
            Ok(Step::Next(next)) => state = next,
            Ok(Step::Wait(waiting)) => return (Some(waiting), Ok(None)),
            Ok(Step::Done(outcome)) => return (None, Ok(Some(outcome))),
            Err(e) => return (None, Err(e)),
        }
    }
}
