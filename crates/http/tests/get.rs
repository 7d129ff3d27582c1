//! GETs against a real HTTP server on loopback, inside a fresh network
//! namespace: bodies arrive whole, the cap and the deadline hold, and each
//! failure says whose fault it was.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use lodestone_http::{Client, HttpError, Limits};
use lodestone_tests::http::HttpServer;
use lodestone_tests::workdir::WorkDir;
use url::Url;

fn client(max_body: u64, timeout: Duration) -> Client {
    Client::new(Limits {
        max_body,
        timeout,
        ..Limits::default()
    })
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("url")
}

lodestone_tests::isolated_test! {
    fn a_body_arrives_whole_and_the_cap_holds() {
        let work = WorkDir::new("http-get").expect("work dir");
        let body: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(work.path().join("x.torrent"), &body).expect("write");
        let server = HttpServer::serve(work.path(), Ipv4Addr::LOCALHOST.into()).expect("server");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let at = url(&server.url("x.torrent"));
            let got = client(2000, Duration::from_secs(30)).get(&at).await.expect("get");
            assert_eq!(got, body);

            let refused = client(1999, Duration::from_secs(30)).get(&at).await.unwrap_err();
            assert!(matches!(refused, HttpError::TooLarge { limit: 1999, .. }), "{refused}");
            assert!(!refused.is_request_fault());

            let missing = client(2000, Duration::from_secs(30))
                .get(&url(&server.url("missing.torrent")))
                .await
                .unwrap_err();
            assert!(matches!(missing, HttpError::Status { status: 404, .. }), "{missing}");
            assert!(missing.is_request_fault());
        });
    }

    /// A server that accepts the connection and never answers.
    fn a_silent_server_meets_the_deadline() {
        let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let at = url(&format!("http://{}/x.torrent", silent.local_addr().expect("addr")));
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let error = runtime
            .block_on(client(1000, Duration::from_millis(300)).get(&at))
            .unwrap_err();
        assert!(matches!(error, HttpError::Timeout { .. }), "{error}");
        assert!(error.to_string().contains("did not answer within 0.3 s"), "{error}");
    }

    /// A server that announces no length and sends more than the cap: the
    /// count of bytes received stops it.
    fn a_body_without_a_length_is_counted() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let at = url(&format!("http://{}/x.torrent", listener.local_addr().expect("addr")));
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).expect("request");
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(&[b'x'; 1 << 20]);
        });
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let error = runtime
            .block_on(client(1000, Duration::from_secs(30)).get(&at))
            .unwrap_err();
        assert!(matches!(error, HttpError::TooLarge { limit: 1000, .. }), "{error}");
        server.join().expect("server thread");
    }

    /// A server that answers once per connection and closes it without
    /// saying so (as opentracker does): a second GET right after the
    /// first must not be sent down the connection it is closing.
    fn a_server_closing_after_each_answer_serves_back_to_back_gets() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let at = url(&format!("http://{}/announce", listener.local_addr().expect("addr")));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // A request that arrives anyway is read, then the
                // connection closes unanswered: the close was in flight.
                let _ = stream.read(&mut request);
            }
        });
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let client = client(1000, Duration::from_secs(30));
        for round in 0..3 {
            let got = runtime.block_on(client.get(&at));
            assert_eq!(got.expect("each GET is answered").as_slice(), b"ok", "round {round}");
        }
    }

    /// A client that takes URLs from untrusted parties never connects to
    /// this machine through a name that merely resolves here (inside the
    /// test's namespace, the public routers' names resolve to 127.0.0.1),
    /// while one taking the user's URLs does; `localhost` names itself.
    fn a_name_resolving_here_is_refused_before_connecting_when_asked() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let name = lodestone_tests::netns::ROUTER_NAMES[0];
        let at = url(&format!("http://{name}:{port}/announce"));
        let guarded = Client::new(Limits {
            max_body: 1000,
            timeout: Duration::from_millis(300),
            names_may_resolve_here: false,
            ..Limits::default()
        });
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let error = runtime.block_on(guarded.get(&at)).unwrap_err();
        assert!(matches!(error, HttpError::Transport { .. }), "{error}");
        let chain = lodestone_core::ErrorChain(&error).to_string();
        assert!(chain.contains("resolves to this machine"), "{chain}");
        // The GET has ended, so a connection it made would be queued.
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        // The same name from a user-typed URL connects (and times out,
        // as nothing answers).
        let trusting = client(1000, Duration::from_millis(300));
        assert!(runtime.block_on(trusting.get(&at)).is_err());
        assert!(listener.accept().is_ok(), "the user's URL connected");
        let localhost = url(&format!("http://localhost:{port}/announce"));
        assert!(runtime.block_on(guarded.get(&localhost)).is_err());
        assert!(listener.accept().is_ok(), "localhost connected");
    }

    /// Nothing listens: a transport failure, not the user's fault.
    fn a_refused_connection_is_a_transport_error() {
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let at = url(&format!("http://{}/x.torrent", closed.local_addr().expect("addr")));
        drop(closed);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let error = runtime
            .block_on(client(1000, Duration::from_secs(30)).get(&at))
            .unwrap_err();
        assert!(matches!(error, HttpError::Transport { .. }), "{error}");
        assert!(!error.is_request_fault());
    }
}

#[test]
fn other_schemes_are_refused_before_any_io() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let error = runtime
        .block_on(client(1000, Duration::from_secs(1)).get(&url("ftp://127.0.0.1/x.torrent")))
        .unwrap_err();
    assert!(
        matches!(error, HttpError::UnsupportedScheme { .. }),
        "{error}"
    );
    assert!(error.is_request_fault());
}
