//! Every way a `lodestone download` can end says why, with the exit code
//! scripts expect: a run that makes no progress gives up with the stage it
//! reached, Ctrl-C or SIGTERM while the metadata is fetched stops cleanly and keeps
//! the DHT state, and an unusable output directory is refused before any
//! network work.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{dht_bind, fixture, lodestone, stderr, stdout};
use lodestone_tests::workdir::WorkDir;
use serde_json::Value;

/// A magnet whose swarm does not exist.
const NOBODYS_MAGNET: &str = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567";

/// The `stalled` event on stdout.
fn stalled_event(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "stalled")
        .unwrap_or_else(|| panic!("no stalled event in {out}"))
}

fn download_nowhere(work: &WorkDir, extra: &[&str]) -> std::process::Output {
    let torrent = fixture("mktorrent-single.torrent");
    let out = work.path().to_string_lossy().into_owned();
    let mut args = vec![
        "download",
        &torrent,
        "-o",
        &out,
        "--json",
        "--stall-timeout",
        "2",
    ];
    args.extend(extra);
    lodestone(&args)
}

/// Sends `signal` (a `kill` option) while the metadata is fetched and
/// expects a message, exit 1, and the DHT state saved for the next run.
fn stop_during_the_metadata_phase(signal: &str, name: &str) {
    let work = WorkDir::new(name).expect("work dir");
    let out = work.path().to_string_lossy().into_owned();
    let state = work.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args([
            "download",
            NOBODYS_MAGNET,
            "--bootstrap",
            "127.0.0.1:9",
            &dht_bind(2),
            "-o",
            &out,
            "--json",
        ])
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lodestone runs");
    let events = BufReader::new(child.stdout.take().expect("stdout"));
    for line in events.lines() {
        let line = line.expect("stdout line");
        if line.contains("\"phase\":\"metadata\"") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill")
            .success()
    );
    let output = child.wait_with_output().expect("lodestone exits");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("stopped before the metadata arrived"),
        "{}",
        stderr(&output)
    );
    assert!(
        state.join("dht.state").exists(),
        "the DHT state was not saved"
    );
}

lodestone_tests::isolated_test! {
    /// Nobody answers at the bootstrap address: the run gives up naming it.
    fn no_dht_node_answering_is_named() {
        let work = WorkDir::new("stall-dht").expect("work dir");
        let bind = dht_bind(1);
        let output = download_nowhere(&work, &["--bootstrap", "127.0.0.1:9", &bind]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_eq!(stalled_event(&stdout(&output))["reason"], "no_dht_nodes");
        assert!(stderr(&output).contains("127.0.0.1:9"), "{}", stderr(&output));
    }

    /// Without the DHT and without peers: "no peers found".
    fn no_peers_is_said() {
        let work = WorkDir::new("stall-no-peers").expect("work dir");
        let output = download_nowhere(&work, &["--no-dht"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_eq!(stalled_event(&stdout(&output))["reason"], "no_peers_found");
        assert!(stderr(&output).contains("no peers found"), "{}", stderr(&output));
    }

    /// A peer that refuses every connection: "none accepted".
    fn a_peer_refusing_connections_is_said() {
        let work = WorkDir::new("stall-refused").expect("work dir");
        let output = download_nowhere(&work, &["--no-dht", "--peer", "127.0.0.1:9"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_eq!(stalled_event(&stdout(&output))["reason"], "none_accepted");
    }

    /// Ctrl-C while the metadata is fetched: a message, exit 1, and the
    /// DHT state saved for the next run.
    fn ctrl_c_during_the_metadata_phase_stops_cleanly() {
        stop_during_the_metadata_phase("-INT", "ctrl-c-metadata");
    }

    /// SIGTERM, as a service manager or `kill` sends it, stops as cleanly
    /// as Ctrl-C does.
    fn sigterm_during_the_metadata_phase_stops_cleanly() {
        stop_during_the_metadata_phase("-TERM", "sigterm-metadata");
    }

    /// A magnet whose output directory cannot be made is refused at once,
    /// before the (here endless) metadata fetch.
    fn an_unusable_output_directory_is_refused_before_the_metadata() {
        let work = WorkDir::new("bad-output").expect("work dir");
        let file = work.path().join("a-file");
        std::fs::write(&file, b"not a directory").expect("write");
        let under_file = file.join("out");
        let output = lodestone(&[
            "download",
            NOBODYS_MAGNET,
            "--bootstrap",
            "127.0.0.1:9",
            &dht_bind(3),
            "-o",
            &under_file.to_string_lossy(),
            "--json",
        ]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(stderr(&output).contains(&*under_file.to_string_lossy()), "{}", stderr(&output));
        // Refused before the metadata phase began (it would never end).
        assert!(!stdout(&output).contains("\"phase\""), "{}", stdout(&output));
        assert!(!under_file.exists());
    }
}
