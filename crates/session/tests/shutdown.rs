//! A session that shuts down leaves no task behind on its runtime: a
//! library user may start and stop many sessions in one process.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use lodestone_dht::DhtConfig;
use lodestone_session::{Session, SessionConfig};

/// A session on 127.0.0.1 with uTP and TCP, and the DHT as given.
fn config(dht: Option<DhtConfig>) -> SessionConfig {
    let mut config = common::local_config();
    config.dht = dht;
    config.trackers = false;
    config
}

/// Starts and shuts down a session, then lets the runtime run every task
/// that is ready: none of the session's may be left.
async fn leaves_no_task(config: SessionConfig) {
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let session = Session::start(config).await.unwrap();
    assert!(runtime.num_alive_tasks() > before, "the session runs tasks");
    session.shutdown().await;
    // Aborted tasks end when next polled; a single-threaded runtime polls
    // every ready task between two of our yields.
    for _ in 0..64 {
        if runtime.num_alive_tasks() == before {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "{} of the session's tasks outlive it",
        runtime.num_alive_tasks() - before
    );
}

#[tokio::test]
async fn without_a_dht_utp_stops_with_the_session() {
    leaves_no_task(config(None)).await;
}

#[tokio::test]
async fn with_a_dht_utp_stops_with_the_session() {
    let dht = DhtConfig {
        bind: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        bootstrap: Vec::new(),
        ..DhtConfig::default()
    };
    leaves_no_task(config(Some(dht))).await;
}
