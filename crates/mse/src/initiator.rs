//! The side that connects: sends `Ya, PadA`, then on `Yb` the obfuscated
//! infohash, its methods and the initial payload, and waits for the
//! responder's encrypted verification constant and choice.

use lodestone_core::InfoHash;
use rc4::StreamCipher;

use crate::crypto::{self, Cipher};
use crate::dh::{KEY_LEN, KeyPair};
use crate::types::{
    Core, Crypto, Entropy, MAX_PAD, Method, Methods, MseError, Outcome, Step, VC, drive,
    find_marker, u16_at, u32_at,
};

/// Most bytes of initial payload the initiator sends (the length field is
/// 16 bits).
pub const MAX_INITIAL_PAYLOAD: usize = u16::MAX as usize;

enum State {
    /// Waiting for the responder's public key.
    AwaitKey,
    /// Scanning PadB for the encrypted verification constant.
    AwaitVc { cipher: Cipher, marker: [u8; 8] },
    /// Waiting for `crypto_select` and `len(PadD)`.
    AwaitSelect { cipher: Cipher },
    /// Waiting for PadD.
    AwaitPadD {
        cipher: Cipher,
        method: Method,
        pad_len: usize,
    },
}

/// The initiator's state machine. Feed it every byte received with
/// [`Initiator::handle_input`] and send what [`Initiator::poll_transmit`]
/// returns, until `handle_input` returns the [`Outcome`].
pub struct Initiator {
    info_hash: InfoHash,
    provide: Methods,
    initial_payload: Vec<u8>,
    keys: KeyPair,
    core: Core<State>,
    /// Whether the shared secret, once known, begins with a zero byte.
    secret_starts_with_zero: bool,
}

impl Initiator {
    /// Starts a handshake for `info_hash` offering `provide`; `initial_payload`
    /// (our BitTorrent handshake, typically; cut to
    /// [`MAX_INITIAL_PAYLOAD`]) goes out encrypted with the handshake. `Ya`
    /// and PadA are ready to send at once.
    pub fn new(
        info_hash: InfoHash,
        provide: Methods,
        initial_payload: &[u8],
        entropy: &Entropy,
    ) -> Self {
        let keys = KeyPair::new(&entropy.private_key);
        let mut output = Vec::with_capacity(KEY_LEN + MAX_PAD);
        output.extend_from_slice(&keys.public);
        output.extend_from_slice(entropy.pad());
        let cut = initial_payload.len().min(MAX_INITIAL_PAYLOAD);
        Self {
            info_hash,
            provide,
            initial_payload: initial_payload[..cut].to_vec(),
            keys,
            core: Core::new(State::AwaitKey, output),
            secret_starts_with_zero: false,
        }
    }

    /// Whether the shared secret begins with a zero byte: then a
    /// libtorrent 2.0 responder misreads it and hangs up (see
    /// [`crate::io::StreamError::ClosedOnZeroLedSecret`]), and a new
    /// connection with fresh keys is worth another try.
    pub fn secret_starts_with_zero(&self) -> bool {
        self.secret_starts_with_zero
    }

    /// Bytes to send now, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.poll_transmit()
    }

    /// Takes bytes received; returns the outcome once the handshake is
    /// complete (send what [`Initiator::poll_transmit`] holds first).
    /// Truncated input just waits for more.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<Option<Outcome>, MseError> {
        let state = self.core.feed(bytes)?;
        let (state, result) = drive(state, |s| self.step(s));
        self.core.state = state;
        result
    }

    fn step(&mut self, state: State) -> Result<Step<State>, MseError> {
        match state {
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
                self.secret_starts_with_zero = secret[0] == 0;
                let mut cipher = Cipher::initiator(&secret, &self.info_hash);
                self.send_request(&secret, &mut cipher);
                // The marker is the responder's keystream applied to VC (all
                // zero): computing it consumes exactly the keystream VC uses.
                let mut marker = VC;
                cipher.decrypt.apply_keystream(&mut marker);
                Ok(Step::Next(State::AwaitVc { cipher, marker }))
            }
            State::AwaitVc { cipher, marker } => match find_marker(&self.core.input, &marker)? {
                None => Ok(Step::Wait(State::AwaitVc { cipher, marker })),
                Some(at) => {
                    self.core.input.drain(..at + VC.len());
                    Ok(Step::Next(State::AwaitSelect { cipher }))
                }
            },
            State::AwaitSelect { mut cipher } => {
                // crypto_select (4) and len(PadD) (2).
                let Some(bytes) = self.core.input.get(..6) else {
                    return Ok(Step::Wait(State::AwaitSelect { cipher }));
                };
                let mut head = [0u8; 6];
                head.copy_from_slice(bytes);
                self.core.input.drain(..6);
                cipher.decrypt.apply_keystream(&mut head);
                let select = u32_at(&head, 0);
                let pad_len = u16_at(&head, 4);
                if usize::from(pad_len) > MAX_PAD {
                    return Err(MseError::PadTooLong(pad_len));
                }
                let method = [Method::Rc4, Method::Plaintext]
                    .into_iter()
                    .find(|m| m.bit() == select && self.provide.contains(*m))
                    .ok_or(MseError::BadSelect(select))?;
                Ok(Step::Next(State::AwaitPadD {
                    cipher,
                    method,
                    pad_len: usize::from(pad_len),
                }))
            }
            State::AwaitPadD {
                mut cipher,
                method,
                pad_len,
            } => {
                if self.core.input.len() < pad_len {
                    return Ok(Step::Wait(State::AwaitPadD {
                        cipher,
                        method,
                        pad_len,
                    }));
                }
                let mut received = std::mem::take(&mut self.core.input);
                // PadD is decrypted to keep the keystream in step, then dropped.
                cipher.decrypt.apply_keystream(&mut received[..pad_len]);
                received.drain(..pad_len);
                let crypto = match method {
                    Method::Rc4 => {
                        cipher.decrypt.apply_keystream(&mut received);
                        Crypto::Rc4(Box::new(cipher))
                    }
                    Method::Plaintext => Crypto::Plaintext,
                };
                Ok(Step::Done(Outcome {
                    info_hash: self.info_hash,
                    crypto,
                    received,
                }))
            }
        }
    }

    /// Queues step 3: `HASH('req1', S)`, `HASH('req2', SKEY) xor
    /// HASH('req3', S)`, then encrypted `VC, crypto_provide, len(PadC) = 0,
    /// len(IA), IA`. PadC is empty: it is encrypted, so padding it hides
    /// nothing PadA did not.
    fn send_request(&mut self, secret: &[u8; KEY_LEN], cipher: &mut Cipher) {
        self.core.output.extend_from_slice(&crypto::req1(secret));
        self.core.output.extend_from_slice(&crypto::xor(
            &crypto::req2(&self.info_hash),
            &crypto::req3(secret),
        ));
        let mut tail = Vec::with_capacity(16 + self.initial_payload.len());
        tail.extend_from_slice(&VC);
        tail.extend_from_slice(&self.provide.bits().to_be_bytes());
        tail.extend_from_slice(&0u16.to_be_bytes());
        // Cut to MAX_INITIAL_PAYLOAD in `new`, so it fits 16 bits.
        let ia_len = u16::try_from(self.initial_payload.len()).unwrap_or(u16::MAX);
        tail.extend_from_slice(&ia_len.to_be_bytes());
        tail.extend_from_slice(&self.initial_payload);
        cipher.encrypt.apply_keystream(&mut tail);
        self.core.output.extend_from_slice(&tail);
    }
}
