//! Arguments a user can get wrong are refused at once with exit 2 and one
//! line that names the mistake.

mod common;

use common::{lodestone, stderr};

const HASH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

lodestone_tests::isolated_test! {
    /// A bootstrap node without a port, or whose name does not resolve.
    fn a_bad_bootstrap_value_is_bad_input() {
        for (value, says) in [
            ("foo", "is not HOST:PORT"),
            ("no-such-router.invalid:6881", "cannot resolve --bootstrap no-such-router.invalid:6881"),
        ] {
            for command in [
                &["dht", "get-peers", HASH, "--timeout", "1", "--bootstrap", value][..],
                &["metadata", HASH, "--timeout", "1", "--bootstrap", value][..],
                &["node", "--bind", "127.0.0.1:0", "--bootstrap", value][..],
            ] {
                let output = lodestone(command);
                let text = stderr(&output);
                assert_eq!(output.status.code(), Some(2), "{command:?}: {text}");
                assert!(text.starts_with("lodestone: ") && text.contains(says), "{command:?}: {text}");
                assert_eq!(text.lines().count(), 1, "{command:?}: {text}");
            }
        }
    }
}

lodestone_tests::isolated_test! {
    /// A .torrent served over HTTP reads as the same file on disk does; a
    /// missing one and a URL of another scheme are bad input.
    fn a_torrent_url_is_fetched() {
        let fixtures = std::path::Path::new(&common::fixture("x")).parent().expect("dir").to_owned();
        let server = lodestone_tests::http::HttpServer::serve(&fixtures, [127, 0, 0, 1].into())
            .expect("http server");
        let output = lodestone(&["inspect", &server.url("libtorrent-v1-single.torrent")]);
        assert!(
            common::stdout(&output)
                .starts_with("infohash:    3c214e52c80194c3feee9b34fc53417b48e1806b\n"),
            "{}",
            stderr(&output)
        );

        let missing = server.url("missing.torrent");
        let output = lodestone(&["inspect", &missing]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert_eq!(stderr(&output), format!("lodestone: {missing} answered HTTP 404\n"));

        let output = lodestone(&["inspect", "ftp://127.0.0.1/x.torrent"]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains("supported only as http:// and https://"), "{}", stderr(&output));
    }
}

lodestone_tests::isolated_test! {
    /// `--bind` takes at most one address per family.
    fn two_bind_addresses_of_one_family_are_bad_input() {
        let output = lodestone(&[
            "download", HASH, "--no-dht", "--bind", "127.0.0.1", "--bind", "127.0.0.2",
        ]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.starts_with("lodestone: --bind: more than one address"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}

lodestone_tests::isolated_test! {
    /// A magnet with no way to a peer (no DHT, no tracker to ask, no
    /// x.pe) is refused at once rather than after the timeout; a tracker
    /// is a way, unless trackers are turned off.
    fn a_magnet_without_any_peer_source_is_bad_input() {
        let with_tr = format!("magnet:?xt=urn:btih:{HASH}&tr=udp%3A%2F%2F127.0.0.1%3A9");
        for (args, says) in [
            (&[HASH, "--no-dht"][..], "must name peers (x.pe=IP:PORT) or trackers (tr=)"),
            (&[&with_tr, "--no-dht", "--no-trackers"][..], "with --no-dht and --no-trackers"),
        ] {
            for command in ["metadata", "download"] {
                let output = lodestone(&[&[command][..], args].concat());
                let text = stderr(&output);
                assert_eq!(output.status.code(), Some(2), "{command} {args:?}: {text}");
                assert!(text.starts_with("lodestone: no peer source: ") && text.contains(says), "{command} {args:?}: {text}");
                assert_eq!(text.lines().count(), 1, "{command} {args:?}: {text}");
            }
        }
    }
}
