//! The `--metrics` HTTP responder: the node's counters in the Prometheus
//! text format, to any request on any path.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use lodestone_dht::{Dht, DhtStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::rss;

/// The Prometheus text exposition of `s`.
fn text(s: &DhtStats) -> String {
    let t = &s.traffic;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    metric(
        "lodestone_dht_queries_total",
        "counter",
        "Queries answered, by method.",
        &[
            ("{method=\"ping\"}", t.queries_by_method[0]),
            ("{method=\"find_node\"}", t.queries_by_method[1]),
            ("{method=\"get_peers\"}", t.queries_by_method[2]),
            ("{method=\"announce_peer\"}", t.queries_by_method[3]),
        ],
    );
    metric(
        "lodestone_dht_replies_total",
        "counter",
        "Answers sent.",
        &[("", t.replies_out)],
    );
    metric(
        "lodestone_dht_errors_total",
        "counter",
        "Error answers sent.",
        &[("", t.errors_out)],
    );
    metric(
        "lodestone_dht_dropped_total",
        "counter",
        "Datagrams dropped unanswered.",
        &[("", t.dropped)],
    );
    metric(
        "lodestone_dht_rate_limited_total",
        "counter",
        "Datagrams refused or answers withheld by the rate limits.",
        &[("", t.rate_limited)],
    );
    metric(
        "lodestone_dht_queries_sent_total",
        "counter",
        "Queries we sent.",
        &[("", t.queries_out)],
    );
    metric(
        "lodestone_dht_table_nodes",
        "gauge",
        "Routing table entries.",
        &[
            ("{family=\"v4\"}", s.ipv4_nodes as u64),
            ("{family=\"v6\"}", s.ipv6_nodes as u64),
        ],
    );
    metric(
        "lodestone_dht_pool_nodes",
        "gauge",
        "Verified pool entries.",
        &[
            ("{family=\"v4\"}", s.pool.0 as u64),
            ("{family=\"v6\"}", s.pool.1 as u64),
        ],
    );
    metric(
        "lodestone_dht_verify_queue",
        "gauge",
        "Nodes waiting for a verification ping.",
        &[("", s.verify_queued as u64)],
    );
    metric(
        "lodestone_dht_stored_swarms",
        "gauge",
        "Swarms in the peer store.",
        &[("", s.stored.0 as u64)],
    );
    metric(
        "lodestone_dht_stored_peers",
        "gauge",
        "Peers in the peer store.",
        &[("", s.stored.1 as u64)],
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
        &[("", rss().unwrap_or(0))],
    );
    out
}

/// Longest request head read from a metrics client.
const MAX_REQUEST: usize = 4096;
/// Time a metrics client gets to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once; more are closed on arrival.
const MAX_CLIENTS: usize = 64;

/// First pause after a failed `accept`, doubled up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A minimal HTTP/1.0 responder: bounded request size and time; every
/// path gets the metrics.
pub(super) async fn serve(listener: TcpListener, dht: Dht) {
    serve_each(listener, move |mut stream| {
        let dht = dht.clone();
        async move { exchange(&mut stream, &dht).await }
    })
    .await
}

/// Answers each connection with `answer` on a task of its own, within
/// [`CLIENT_TIMEOUT`], at most [`MAX_CLIENTS`] at once: served one after
/// another, one client that said nothing held every scrape back for the
/// whole timeout.
async fn serve_each<F, Fut>(listener: TcpListener, answer: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = accept_with_backoff(|| listener.accept()).await.0;
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {MAX_CLIENTS} clients already; one closed");
            continue;
        };
        let exchange = answer(stream);
        tokio::spawn(async move {
            if tokio::time::timeout(CLIENT_TIMEOUT, exchange)
                .await
                .is_err()
            {
                tracing::debug!("metrics client too slow; dropped");
            }
            drop(place);
        });
    }
}

/// The next connection from `accept`. Failures such as EMFILE (out of file
/// descriptors) last until something else closes one, so retrying at once
/// would spin a core against the DHT it reports on: wait, doubling the pause
/// after each failure in a row.
async fn accept_with_backoff<T, F, Fut>(mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut pause = ACCEPT_BACKOFF_MIN;
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!("metrics: cannot accept a connection ({e}); retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Reads one request head (bounded) and answers it with the metrics.
async fn exchange(stream: &mut TcpStream, dht: &Dht) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let body = match dht.stats().await {
        Ok(stats) => text(&stats),
        Err(_) => return Ok(()),
    };
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that connects and says nothing holds no one else back.
    #[tokio::test]
    async fn a_silent_client_holds_no_one_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(serve_each(listener, |mut stream| async move {
            let mut request = [0u8; 1];
            stream.read_exact(&mut request).await?;
            stream.write_all(b"ok").await
        }));
        let _silent = TcpStream::connect(at).await.unwrap();
        let mut asking = TcpStream::connect(at).await.unwrap();
        asking.write_all(b"?").await.unwrap();
        let mut answer = Vec::new();
        // A liveness bound well short of the silent client's 5 s.
        tokio::time::timeout(Duration::from_secs(2), asking.read_to_end(&mut answer))
            .await
            .expect("answered while the silent client waits")
            .unwrap();
        assert_eq!(answer, b"ok");
    }

    /// An acceptor failing with EMFILE is retried after growing pauses, not
    /// in a loop that never yields the clock.
    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off() {
        let start = tokio::time::Instant::now();
        let mut attempts = Vec::new();
        let accepted = accept_with_backoff(|| {
            attempts.push(start.elapsed());
            let n = attempts.len();
            async move {
                if n <= 8 {
                    Err(io::Error::from_raw_os_error(24)) // EMFILE
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(accepted, 9);
        let ms: Vec<u128> = attempts.iter().map(|d| d.as_millis()).collect();
        // 10, 20, 40, … ms apart, capped at one second.
        assert_eq!(ms, [0, 10, 30, 70, 150, 310, 630, 1270, 2270]);
    }
}
