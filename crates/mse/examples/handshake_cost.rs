//! Measures the CPU cost of MSE handshakes: full in-memory exchanges
//! between an initiator and a responder (two 768-bit modular
//! exponentiations a side), and RC4 throughput.
//!
//! `cargo run --release -p lodestone-mse --example handshake_cost`

use std::time::Instant;

use lodestone_core::InfoHash;
use lodestone_mse::{Crypto, Entropy, Initiator, Methods, Responder, req2};
use rc4::StreamCipher;

const ROUNDS: u32 = 200;

fn main() {
    let torrent = InfoHash::new([7; 20]);
    let lookup = |h: &[u8; 20]| (*h == req2(&torrent)).then_some(torrent);
    let started = Instant::now();
    let mut last = None;
    for i in 0..ROUNDS {
        let entropy = |k: u32| Entropy {
            private_key: std::array::from_fn(|j| (j as u32 * 31 + k * 7 + i) as u8 | 1),
            pad: vec![0; 64],
        };
        let mut a = Initiator::new(torrent, Methods::RC4, b"payload", &entropy(1));
        let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2));
        let step1 = a.poll_transmit().unwrap_or_default();
        b.handle_input(&step1).expect("step 1");
        let step2 = b.poll_transmit().unwrap_or_default();
        a.handle_input(&step2).expect("step 2");
        let step3 = a.poll_transmit().unwrap_or_default();
        b.handle_input(&step3)
            .expect("step 3")
            .expect("responder done");
        let step4 = b.poll_transmit().unwrap_or_default();
        last = a.handle_input(&step4).expect("step 4");
    }
    let per = started.elapsed() / ROUNDS;
    println!(
        "full handshake, both sides: {per:?} ({:?} per side)",
        per / 2
    );

    let Some(Crypto::Rc4(mut cipher)) = last.map(|o| o.crypto) else {
        panic!("RC4 not selected");
    };
    let mut data = vec![0u8; 64 << 20];
    let started = Instant::now();
    cipher.encrypt.apply_keystream(&mut data);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RC4: {:.0} MiB/s, {:.2} CPU s per GiB",
        64.0 / secs,
        secs * 16.0
    );
}
