//! One tracker, whatever its transport, and the client shared by all.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::InfoHash;
use url::Url;

use crate::announce::{Announce, AnnounceReply, ScrapeStats};
use crate::error::TrackerError;
use crate::http;
use crate::udp::{UdpConfig, UdpDone, UdpLink, UdpRequest};

/// What every tracker exchange of a session uses: one HTTP client (so the
/// root certificates load once, at the first HTTP announce; connections
/// are not pooled, see [`lodestone_http::Client`]) and the UDP timing.
#[derive(Debug, Clone)]
pub struct Client {
    http: lodestone_http::Client,
    udp: UdpConfig,
}

impl Client {
    /// A client whose HTTP exchanges end within `http_timeout` and read at
    /// most [`http::MAX_REPLY`] bytes.
    pub fn new(http_timeout: Duration, udp: UdpConfig) -> Client {
        let http = lodestone_http::Client::new(lodestone_http::Limits {
            max_body: http::MAX_REPLY,
            timeout: http_timeout,
            max_redirects: 2,
            // A tracker URL is anyone's: it reaches this machine only by
            // saying so, where `Tracker::parse` holds it to `/announce`.
            names_may_resolve_here: false,
        });
        Client { http, udp }
    }
}

#[derive(Debug)]
enum Transport {
    Http,
    /// The link, once the host is resolved and a socket bound (boxed: it
    /// holds the exchange state).
    Udp(Option<Box<UdpLink>>),
}

/// One tracker URL and what talking to it keeps (a UDP connection id).
#[derive(Debug)]
pub struct Tracker {
    url: Url,
    transport: Transport,
}

impl Tracker {
    /// A tracker from its announce URL: `http`, `https` or `udp`. An HTTP
    /// tracker on this machine must be at `/announce`
    /// ([`TrackerError::LocalNotAnnounce`]).
    pub fn parse(text: &str) -> Result<Tracker, TrackerError> {
        let unsupported = || TrackerError::UnsupportedUrl(text.to_owned());
        let url = Url::parse(text).map_err(|_| unsupported())?;
        let transport = match url.scheme() {
            "http" | "https"
                if lodestone_http::names_this_machine(&url) && url.path() != "/announce" =>
            {
                return Err(TrackerError::LocalNotAnnounce(text.to_owned()));
            }
            "http" | "https" => Transport::Http,
            "udp" if url.host().is_some() && url.port().is_some() => Transport::Udp(None),
            _ => return Err(unsupported()),
        };
        Ok(Tracker { url, transport })
    }

    /// The announce URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Announces `a` and returns the reply.
    pub async fn announce(
        &mut self,
        client: &Client,
        a: &Announce,
    ) -> Result<AnnounceReply, TrackerError> {
        match &mut self.transport {
            Transport::Http => {
                let fetched = client.http.fetch(&http::announce_url(&self.url, a)).await?;
                let mut reply = http::parse_announce(&fetched.body)?;
                keep_named_by(&mut reply, fetched.server);
                Ok(reply)
            }
            Transport::Udp(link) => {
                let link = udp_link(link, &self.url, client.udp).await?;
                match link.exchange(UdpRequest::Announce(*a)).await? {
                    UdpDone::Announced(mut reply) => {
                        keep_named_by(&mut reply, Some(link.tracker()));
                        Ok(reply)
                    }
                    UdpDone::Scraped(_) => {
                        Err(TrackerError::Malformed("scrape reply to an announce"))
                    }
                }
            }
        }
    }

    /// The tracker's counts for `info_hash`; `None` when an HTTP tracker
    /// has no scrape URL by the BEP 48 convention.
    pub async fn scrape(
        &mut self,
        client: &Client,
        info_hash: &InfoHash,
    ) -> Result<Option<ScrapeStats>, TrackerError> {
        match &mut self.transport {
            Transport::Http => {
                let Some(url) = http::scrape_url(&self.url, info_hash) else {
                    return Ok(None);
                };
                let body = client.http.get(&url).await?;
                http::parse_scrape(&body, info_hash).map(Some)
            }
            Transport::Udp(link) => {
                let link = udp_link(link, &self.url, client.udp).await?;
                match link.exchange(UdpRequest::Scrape(*info_hash)).await? {
                    UdpDone::Scraped(stats) => Ok(Some(stats)),
                    UdpDone::Announced(_) => {
                        Err(TrackerError::Malformed("announce reply to a scrape"))
                    }
                }
            }
        }
    }
}

/// Drops the peers on our own machine (loopback) that a tracker elsewhere
/// names: they would aim our dials at our own services. Private addresses
/// are kept, unlike what a PEX peer or DHT node may name: a tracker is the
/// torrent's own choice, and ISPs run trackers that hand their customers
/// each other's private addresses (libtorrent keeps them for that). A
/// server of unknown address (which a TCP connection never is) is taken at
/// its word.
fn keep_named_by(reply: &mut AnnounceReply, server: Option<SocketAddr>) {
    let ours = |ip: std::net::IpAddr| ip.to_canonical().is_loopback();
    if server.is_some_and(|s| !ours(s.ip())) {
        reply.peers.retain(|peer| !ours(peer.ip()));
    }
}

/// The UDP link, opened on first use: the host is resolved then.
async fn udp_link<'l>(
    slot: &'l mut Option<Box<UdpLink>>,
    url: &Url,
    config: UdpConfig,
) -> Result<&'l mut UdpLink, TrackerError> {
    let link = match slot.take() {
        Some(link) => link,
        None => {
            let server = resolve(url, config.base_timeout).await?;
            Box::new(UdpLink::open(server, config).await?)
        }
    };
    Ok(slot.insert(link))
}

/// The address of `url`'s host, looked up within `within`.
async fn resolve(url: &Url, within: Duration) -> Result<SocketAddr, TrackerError> {
    let fail = || TrackerError::Resolve(url.to_string());
    let (host, port) = (
        url.host_str().ok_or_else(fail)?,
        url.port().ok_or_else(fail)?,
    );
    // IPv6 literals come bracketed in URLs.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    first_address(within, tokio::net::lookup_host((host, port)))
        .await
        .ok_or_else(fail)
}

/// The first address `lookup` gives within `within`. The system resolver's
/// own timeouts (seconds per server, each server tried in turn, several
/// rounds) can add up to minutes, and meanwhile the tier's next tracker
/// waits. (The lookup's thread runs on to the resolver's end; only the
/// wait for it stops.)
async fn first_address<I: Iterator<Item = SocketAddr>>(
    within: Duration,
    lookup: impl Future<Output = std::io::Result<I>>,
) -> Option<SocketAddr> {
    tokio::time::timeout(within, lookup)
        .await
        .ok()?
        .ok()?
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(peers: &[&str]) -> AnnounceReply {
        AnnounceReply {
            interval: Duration::from_secs(60),
            min_interval: None,
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
            seeders: None,
            leechers: None,
            warning: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_lookup_that_hangs_gives_up_in_time() {
        type Lookup = std::io::Result<std::vec::IntoIter<SocketAddr>>;
        let within = Duration::from_secs(15);
        let hung = std::future::pending::<Lookup>();
        let started = tokio::time::Instant::now();
        assert_eq!(first_address(within, hung).await, None);
        assert_eq!(started.elapsed(), within);
        let server: SocketAddr = "198.51.100.1:6969".parse().unwrap();
        let answered = std::future::ready::<Lookup>(Ok(vec![server].into_iter()));
        assert_eq!(first_address(within, answered).await, Some(server));
    }

    #[test]
    fn an_http_tracker_on_this_machine_must_be_at_announce() {
        for local in [
            "http://127.0.0.1:631/admin/conf",
            "http://localhost:8080/api/shutdown?now=1",
            "https://[::1]:9000/",
            "http://0.0.0.0:6969/announce.php",
        ] {
            assert!(
                matches!(
                    Tracker::parse(local),
                    Err(TrackerError::LocalNotAnnounce(_))
                ),
                "{local}"
            );
        }
        for fine in [
            "http://127.0.0.1:6969/announce",
            "http://localhost:6969/announce?passkey=x",
            "http://tracker.example/admin/announce.php",
            "udp://127.0.0.1:53/anything",
        ] {
            assert!(Tracker::parse(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_tracker_elsewhere_cannot_point_us_at_our_own_machine() {
        let peers = [
            "127.0.0.1:22",
            "[::ffff:127.0.0.1]:22",
            "[::1]:22",
            "192.168.1.1:6881",
            "203.0.113.5:6881",
        ];
        let mut from_public = reply(&peers);
        keep_named_by(&mut from_public, Some("198.51.100.1:80".parse().unwrap()));
        assert_eq!(from_public.peers, reply(&peers[3..]).peers);
        // A tracker on our machine (a test's, or the user's own) names any.
        let mut from_loopback = reply(&peers);
        keep_named_by(&mut from_loopback, Some("127.0.0.1:6969".parse().unwrap()));
        assert_eq!(from_loopback.peers, reply(&peers).peers);
    }
}
