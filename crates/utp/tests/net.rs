//! Two drivers on real loopback UDP sockets, in process: a transfer through
//! `UtpStream`s arrives exact and the end of the stream reaches the reader.

// The helpers outside the test functions panic on failure like the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use lodestone_utp::Config;
use lodestone_utp::net::{self, Senders, UtpHandle, UtpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

async fn endpoint() -> (UtpHandle, mpsc::Receiver<UtpStream>, std::net::SocketAddr) {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    let (tx, engine) = net::inbox(Config::default());
    tokio::spawn(net::recv_loop(socket.clone(), tx));
    let senders = Senders {
        v4: Some(socket),
        v6: None,
    };
    let (handle, incoming) = net::spawn(engine, senders);
    (handle, incoming, addr)
}

#[tokio::test]
async fn a_stream_carries_bytes_exact_both_ways() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (dialer, _, _) = endpoint().await;
        let (_, mut incoming, addr) = endpoint().await;
        let len = 8 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let mut s = dialer.connect(addr).await.unwrap();
            s.write_all(&sent).await.unwrap();
            let mut reply = [0u8; 5];
            s.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"thank");
            s.shutdown().await.unwrap();
        });
        let mut s = incoming.recv().await.unwrap();
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).await.unwrap();
        assert!(got == data, "bytes differ");
        s.write_all(b"thank").await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        writer.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dialing_nobody_fails_instead_of_hanging() {
    let (dialer, _, _) = endpoint().await;
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        dialer.connect(silent.local_addr().unwrap()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

/// A stream written without pause rings the driver all the time; a dial on
/// the same driver to a silent peer must still see its SYN timers fire and
/// fail. The driver once handled due timers only when its sleep woke it,
/// and rang itself when one was due: rings always won, and it spun with a
/// timer due. On a single-threaded runtime that spin never yields, so the
/// test runs it on a thread of its own and watches the wall clock.
#[test]
fn timers_fire_while_a_busy_stream_keeps_ringing_the_driver() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let kind = runtime.block_on(async {
            let (dialer, _, _) = endpoint().await;
            let (_, mut incoming, addr) = endpoint().await;
            let mut busy = dialer.connect(addr).await.unwrap();
            let mut sink = incoming.recv().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                while sink.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
            tokio::spawn(async move { while busy.write_all(&[7; 100]).await.is_ok() {} });
            let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            dialer
                .connect(silent.local_addr().unwrap())
                .await
                .unwrap_err()
                .kind()
        });
        let _ = done_tx.send(kind);
    });
    let kind = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the dial to a silent peer ended");
    assert_eq!(kind, std::io::ErrorKind::TimedOut);
}
