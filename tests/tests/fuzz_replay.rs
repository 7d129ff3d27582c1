//! Replays the fuzz corpora in git through the fuzz checks, on stable.
//!
//! The checks are the very files the cargo-fuzz targets run
//! (`fuzz/checks/*.rs`, included with `#[path]`), so a corpus input or a
//! fixed crash saved under `fuzz/regressions/<target>/` keeps being tested
//! by plain `cargo test`, without nightly or libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/bencode.rs"]
mod bencode;
#[path = "../../fuzz/checks/dht_node.rs"]
mod dht_node;
#[path = "../../fuzz/checks/extension.rs"]
mod extension;
#[path = "../../fuzz/checks/handshake.rs"]
mod handshake;
#[path = "../../fuzz/checks/krpc.rs"]
mod krpc;
#[path = "../../fuzz/checks/magnet.rs"]
mod magnet;
#[path = "../../fuzz/checks/metadata_fetch.rs"]
mod metadata_fetch;
#[path = "../../fuzz/checks/metainfo.rs"]
mod metainfo;
#[path = "../../fuzz/checks/mse.rs"]
mod mse;
#[path = "../../fuzz/checks/peer_session.rs"]
mod peer_session;
#[path = "../../fuzz/checks/script.rs"]
mod script;
#[path = "../../fuzz/checks/state_files.rs"]
mod state_files;
#[path = "../../fuzz/checks/tracker_http.rs"]
mod tracker_http;
#[path = "../../fuzz/checks/tracker_udp.rs"]
mod tracker_udp;
#[path = "../../fuzz/checks/ut_holepunch.rs"]
mod ut_holepunch;
#[path = "../../fuzz/checks/ut_metadata.rs"]
mod ut_metadata;
#[path = "../../fuzz/checks/ut_pex.rs"]
mod ut_pex;
#[path = "../../fuzz/checks/utp.rs"]
mod utp;
#[path = "../../fuzz/checks/wire_stream.rs"]
mod wire_stream;

/// A fuzz check: panics when a property fails on the input.
type Check = fn(&[u8]);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `check` on every file of the target's corpus and regressions;
/// fails listing every input that panicked. At
/// least `min_inputs` corpus files must exist, so a lost corpus cannot pass
/// silently.
fn replay(target: &str, min_inputs: usize, check: Check) {
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_ne!(kind, "corpus", "missing corpus directory {}", dir.display());
            continue;
        };
        inputs.extend(entries.map(|e| e.expect("read corpus entry").path()));
    }
    inputs.sort();
    assert!(
        inputs.len() >= min_inputs,
        "{target}: only {} inputs, expected at least {min_inputs}",
        inputs.len()
    );
    run_all(target, &inputs, check);
}

/// Fails listing every input on which `check` panicked.
fn run_all(target: &str, inputs: &[PathBuf], check: Check) {
    let failed: Vec<_> = inputs
        .iter()
        .filter(|path| {
            let bytes = std::fs::read(path).expect("read corpus file");
            catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: inputs that failed the check: {failed:#?}"
    );
}

#[test]
fn bencode_corpus() {
    replay("bencode", 10, bencode::check);
}

#[test]
fn state_files_corpus() {
    replay("state_files", 6, state_files::check);
}

#[test]
fn utp_corpus() {
    replay("utp", 4, utp::check);
}

#[test]
fn magnet_corpus() {
    replay("magnet", 5, magnet::check);
}

#[test]
fn metainfo_corpus() {
    replay("metainfo", 3, metainfo::check);
}

#[test]
fn krpc_corpus() {
    replay("krpc", 20, krpc::check);
}

#[test]
fn dht_node_corpus() {
    replay("dht_node", 10, dht_node::check);
}

#[test]
fn wire_stream_corpus() {
    replay("wire_stream", 5, wire_stream::check);
}

#[test]
fn handshake_corpus() {
    replay("handshake", 5, handshake::check);
}

#[test]
fn extension_corpus() {
    replay("extension", 3, extension::check);
}

#[test]
fn ut_metadata_corpus() {
    replay("ut_metadata", 3, ut_metadata::check);
}

#[test]
fn ut_holepunch_corpus() {
    replay("ut_holepunch", 5, ut_holepunch::check);
}

#[test]
fn ut_pex_corpus() {
    replay("ut_pex", 5, ut_pex::check);
}

#[test]
fn metadata_fetch_corpus() {
    replay("metadata_fetch", 10, metadata_fetch::check);
}

#[test]
fn tracker_http_corpus() {
    replay("tracker_http", 8, tracker_http::check);
}

#[test]
fn tracker_udp_corpus() {
    replay("tracker_udp", 6, tracker_udp::check);
}

#[test]
fn mse_initiator_corpus() {
    replay("mse_initiator", 5, |data| {
        mse::check_initiator(data);
    });
    finished("mse_initiator", mse::check_initiator);
}

#[test]
fn mse_responder_corpus() {
    replay("mse_responder", 5, |data| {
        mse::check_responder(data);
    });
    finished("mse_responder", mse::check_responder);
}

/// Some corpus inputs of an MSE target must complete the handshake:
/// otherwise the replay would only ever see refusals.
fn finished(target: &str, check: fn(&[u8]) -> bool) {
    let dir = fuzz_dir().join("corpus").join(target);
    let done = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter(|e| {
            let path = e.as_ref().expect("corpus entry").path();
            check(&std::fs::read(path).expect("read corpus file"))
        })
        .count();
    assert!(
        done >= 2,
        "{target}: only {done} corpus inputs finish the handshake"
    );
}

#[test]
fn peer_session_corpus() {
    replay("peer_session", 10, peer_session::check);
}

/// Corpus files named by `prefixes` (a real client's output, or a link we
/// wrote to be valid) must be accepted: otherwise the checks above would
/// only ever see the refusal path.
fn accepted(target: &str, prefixes: &[&str], accepts: fn(&[u8]) -> bool) {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        if prefixes.iter().any(|p| name.starts_with(p)) {
            seen += 1;
            let bytes = std::fs::read(&path).expect("read corpus file");
            assert!(accepts(&bytes), "{target}: valid seed {name} refused");
        }
    }
    assert!(seen > 0, "{target}: no seed matched {prefixes:?}");
}

#[test]
fn valid_seeds_are_accepted() {
    use lodestone_bencode::{Limits, parse};
    use lodestone_core::{Magnet, Metainfo};
    accepted(
        "bencode",
        &["krpc-query", "krpc-libtorrent", "bep10", "bep9-re"],
        |b| parse(b, &Limits::KRPC).is_ok(),
    );
    accepted(
        "metainfo",
        &["libtorrent", "mktorrent", "transmission"],
        |b| {
            Metainfo::from_torrent_bytes(b).is_ok() || Metainfo::from_info_bytes(b.to_vec()).is_ok()
        },
    );
    accepted(
        "magnet",
        &[
            "bare", "minimal", "dn", "trackers", "peers", "select", "hybrid", "every",
        ],
        |b| std::str::from_utf8(b).is_ok_and(|s| Magnet::parse(s).is_ok()),
    );
}

/// What aria2, libtorrent and transmission really sent (captured by
/// `tests/py/capture_corpus.py`) must be accepted by our decoders.
#[test]
fn real_client_seeds_are_accepted() {
    use bytes::BytesMut;
    use lodestone_wire::{Decoder, ExtendedHandshake, Handshake};
    const CLIENTS: &[&str] = &["aria2", "libtorrent", "transmission"];
    accepted("krpc", CLIENTS, |b| {
        lodestone_dht::krpc::Message::decode(b).is_ok()
    });
    accepted("handshake", CLIENTS, |b| Handshake::decode(b).is_ok());
    accepted("extension", CLIENTS, |b| {
        ExtendedHandshake::decode(b).is_ok()
    });
    accepted("ut_metadata", CLIENTS, |b| {
        lodestone_metadata::Message::decode(b).is_ok()
    });
    accepted("wire_stream", CLIENTS, |b| {
        let Some(rest) = b.get(lodestone_wire::handshake::HANDSHAKE_LEN..) else {
            return false;
        };
        let mut buf = BytesMut::from(rest);
        let decoder = Decoder::new();
        let mut messages = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => messages += 1,
                // Streams are cut at 12 KiB, usually inside a piece.
                Ok(None) => return messages > 0,
                Err(_) => return false,
            }
        }
    });
}
