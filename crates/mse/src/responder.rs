//! The side that accepts: answers `Ya` with `Yb, PadB`, finds the
//! initiator's marker, learns the torrent from the obfuscated infohash,
//! reads its methods and initial payload, and answers with its choice.

use lodestone_core::InfoHash;
use rc4::StreamCipher;

use crate::crypto::{self, Cipher};
use crate::dh::{KEY_LEN, KeyPair};
use crate::types::{
    Core, Crypto, Entropy, MAX_PAD, Method, Methods, MseError, Outcome, Step, VC, drive,
    find_marker, u16_at, u32_at,
};

/// Bytes of `VC, crypto_provide, len(PadC)`.
const REQUEST_HEAD: usize = 8 + 4 + 2;

enum State {
    /// Waiting for the initiator's public key.
    AwaitKey,
    /// Scanning PadA for `HASH('req1', S)`.
    AwaitReq1 {
        secret: [u8; KEY_LEN],
        marker: [u8; 20],
    },
    /// Waiting for the obfuscated infohash.
    AwaitSkey { secret: [u8; KEY_LEN] },
    /// Waiting for `VC, crypto_provide, len(PadC)`.
    AwaitProvide { info_hash: InfoHash, cipher: Cipher },
    /// Waiting for PadC and `len(IA)`.
    AwaitPadC {
        info_hash: InfoHash,
        cipher: Cipher,
        method: Method,
        pad_len: usize,
    },
    /// Waiting for the initial payload.
    AwaitPayload {
        info_hash: InfoHash,
        cipher: Cipher,
        method: Method,
        len: usize,
    },
}

/// The responder's state machine, with `lookup` mapping
/// `HASH('req2', SKEY)` to the torrent it stands for (see
/// [`crate::req2`]). Use it like [`crate::Initiator`].
pub struct Responder<L> {
    allowed: Methods,
    lookup: L,
    keys: KeyPair,
    pad: Vec<u8>,
    core: Core<State>,
}

impl<L: FnMut(&[u8; 20]) -> Option<InfoHash>> Responder<L> {
    /// A responder accepting `allowed` methods.
    pub fn new(allowed: Methods, lookup: L, entropy: &Entropy) -> Self {
        Self {
            allowed,
            lookup,
            keys: KeyPair::new(&entropy.private_key),
            pad: entropy.pad().to_vec(),
            core: Core::new(State::AwaitKey, Vec::new()),
        }
    }

    /// Bytes to send now, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.poll_transmit()
    }

    /// Takes bytes received; returns the outcome once the handshake is
    /// complete (send what [`Responder::poll_transmit`] holds first).
    /// Truncated input just waits for more.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<Option<Outcome>, MseError> {
        let state = self.core.feed(bytes)?;
        let (state, result) = drive(state, |s| self.step(s));
        self.core.state = state;
        result
    }

    fn step(&mut self, state: State) -> Result<Step<State>, MseError> {
        Ok(match state {
            State::AwaitKey => {
                let Some(theirs) = self.core.input.get(..KEY_LEN) else {
                    return Ok(Step::Wait(State::AwaitKey));
                };
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(theirs);
                self.core.input.drain(..KEY_LEN);
                let secret = self
                    .keys
                    .shared_secret(&key)
                    .ok_or(MseError::BadPublicKey)?;
                self.core.output.extend_from_slice(&self.keys.public);
                self.core.output.extend_from_slice(&self.pad);
                Step::Next(State::AwaitReq1 {
                    secret,
                    marker: crypto::req1(&secret),
                })
            }
            State::AwaitReq1 { secret, marker } => match find_marker(&self.core.input, &marker)? {
                None => Step::Wait(State::AwaitReq1 { secret, marker }),
                Some(at) => {
                    self.core.input.drain(..at + marker.len());
                    Step::Next(State::AwaitSkey { secret })
                }
            },
            State::AwaitSkey { secret } => {
                let Some(bytes) = self.core.input.get(..20) else {
                    return Ok(Step::Wait(State::AwaitSkey { secret }));
                };
                let mut hidden = [0u8; 20];
                hidden.copy_from_slice(bytes);
                self.core.input.drain(..20);
                let req2 = crypto::xor(&hidden, &crypto::req3(&secret));
                let info_hash = (self.lookup)(&req2).ok_or(MseError::UnknownInfoHash)?;
                let cipher = Cipher::responder(&secret, &info_hash);
                Step::Next(State::AwaitProvide { info_hash, cipher })
            }
            State::AwaitProvide {
                info_hash,
                mut cipher,
            } => {
                let Some(bytes) = self.core.input.get(..REQUEST_HEAD) else {
                    return Ok(Step::Wait(State::AwaitProvide { info_hash, cipher }));
                };
                let mut head = [0u8; REQUEST_HEAD];
                head.copy_from_slice(bytes);
                self.core.input.drain(..REQUEST_HEAD);
                cipher.decrypt.apply_keystream(&mut head);
                if head[..8] != VC {
                    return Err(MseError::BadVc);
                }
                let offered = u32_at(&head, 8);
                let pad_len = u16_at(&head, 12);
                if usize::from(pad_len) > MAX_PAD {
                    return Err(MseError::PadTooLong(pad_len));
                }
                let method = self.allowed.select(Methods::from_bits(offered)).ok_or(
                    MseError::NoCommonMethod {
                        offered,
                        allowed: self.allowed.bits(),
                    },
                )?;
                Step::Next(State::AwaitPadC {
                    info_hash,
                    cipher,
                    method,
                    pad_len: usize::from(pad_len),
                })
            }
            State::AwaitPadC {
                info_hash,
                mut cipher,
                method,
                pad_len,
            } => {
                // PadC, then len(IA).
                let Some(bytes) = self.core.input.get(..pad_len + 2) else {
                    return Ok(Step::Wait(State::AwaitPadC {
                        info_hash,
                        cipher,
                        method,
                        pad_len,
                    }));
                };
                let mut request = bytes.to_vec();
                self.core.input.drain(..pad_len + 2);
                cipher.decrypt.apply_keystream(&mut request);
                let len = usize::from(u16_at(&request, pad_len));
                Step::Next(State::AwaitPayload {
                    info_hash,
                    cipher,
                    method,
                    len,
                })
            }
            State::AwaitPayload {
                info_hash,
                mut cipher,
                method,
                len,
            } => {
                if self.core.input.len() < len {
                    return Ok(Step::Wait(State::AwaitPayload {
                        info_hash,
                        cipher,
                        method,
                        len,
                    }));
                }
                // The initial payload is always RC4; what follows it is in
                // the selected method.
                let mut received = std::mem::take(&mut self.core.input);
                cipher.decrypt.apply_keystream(&mut received[..len]);
                let mut answer = Vec::with_capacity(14);
                answer.extend_from_slice(&VC);
                answer.extend_from_slice(&method.bit().to_be_bytes());
                answer.extend_from_slice(&0u16.to_be_bytes());
                cipher.encrypt.apply_keystream(&mut answer);
                self.core.output.extend_from_slice(&answer);
                let crypto = match method {
                    Method::Rc4 => {
                        cipher.decrypt.apply_keystream(&mut received[len..]);
                        Crypto::Rc4(Box::new(cipher))
                    }
                    Method::Plaintext => Crypto::Plaintext,
                };
                Step::Done(Outcome {
                    info_hash,
                    crypto,
                    received,
                })
            }
        })
    }
}
