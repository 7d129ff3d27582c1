//! Bounded HTTP(S) GETs.
//!
//! lodestone fetches a `.torrent` named by URL, and its HTTP tracker
//! announces and scrapes are GETs too. Both read bytes from a server
//! nobody vetted, so one [`Client`] applies the same rules to every
//! request: a deadline for the whole exchange, a cap on the body checked
//! before and while it arrives (a server may lie about or omit
//! `Content-Length`), a bounded number of redirects, none of which may go
//! from HTTPS to plain HTTP nor lead from elsewhere to an address or name
//! of this machine (a tracker or a `.torrent` link must not make us fetch
//! our own services; a name that
//! merely resolves here is caught only once connected, so its answer is
//! refused but the request was sent, unless the client refuses such names
//! before connecting, as a tracker's does), and errors that say whose fault
//! it was.
//!
//! TLS is rustls with the ring provider and the platform's certificate
//! store; no OpenSSL, and no proxy is taken from the environment.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use url::{Host, Url};

/// Why a GET failed, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http:` or `https:` (the caller's input).
    #[error("{url} is not an http or https URL")]
    UnsupportedScheme {
        /// The URL given.
        url: Url,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL asked for.
        url: Url,
        /// The status code.
        status: u16,
    },
    /// The body is larger than the cap (announced or counted).
    #[error("{url} sends more than {limit} bytes")]
    TooLarge {
        /// The URL asked for.
        url: Url,
        /// The cap in bytes.
        limit: u64,
    },
    /// No answer before the deadline.
    #[error("{url} did not answer within {} s", timeout.as_secs_f64())]
    Timeout {
        /// The URL asked for.
        url: Url,
        /// The deadline of the whole exchange.
        timeout: Duration,
    },
    /// The connection, TLS or HTTP exchange failed (the network or the
    /// server); the cause is the source.
    #[error("cannot fetch {url}")]
    Transport {
        /// The URL asked for.
        url: Url,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// A redirect from elsewhere led to a name that resolved to this
    /// machine: the answer, from one of our own services, is refused.
    #[error("{url} redirected to {to}, which is this machine")]
    RedirectedHome {
        /// The URL asked for.
        url: Url,
        /// Where the redirects ended (boxed: the error stays small).
        to: Box<Url>,
    },
    /// The HTTP client could not be set up (a local failure): the builder
    /// failed, or the thread building it did not finish.
    #[error("cannot set up the HTTP client")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl HttpError {
    /// Whether the request itself was at fault (a URL of another scheme, or
    /// one the server says does not exist or is not ours to read), rather
    /// than the network or the server.
    pub fn is_request_fault(&self) -> bool {
        match self {
            HttpError::UnsupportedScheme { .. } => true,
            HttpError::Status { status, .. } => (400..500).contains(status),
            _ => false,
        }
    }
}

/// The reqwest client for `limits`, identifying itself as lodestone.
fn build(limits: Limits) -> Result<reqwest::Client, reqwest::Error> {
    // The process-wide TLS provider; an earlier call already set it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .user_agent(concat!("lodestone/", env!("CARGO_PKG_VERSION")))
        .timeout(limits.timeout)
        .redirect(redirect_policy(limits.max_redirects))
        .no_proxy()
        .pool_max_idle_per_host(0);
    if limits.names_may_resolve_here {
        builder.build()
    } else {
        builder.dns_resolver(ResolverAwayFromHere).build()
    }
}

/// The system's resolver, refusing a name other than `localhost` whose
/// answers include this machine (see [`Limits::names_may_resolve_here`]).
/// Literal addresses never come here; [`names_this_machine`] judges them.
struct ResolverAwayFromHere;

impl reqwest::dns::Resolve for ResolverAwayFromHere {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let answers: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if resolves_here_unnamed(&host, &answers) {
                return Err(format!("{host} resolves to this machine").into());
            }
            Ok(Box::new(answers.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `host`, answered with `answers`, leads to this machine without
/// saying so by its name.
fn resolves_here_unnamed(host: &str, answers: &[SocketAddr]) -> bool {
    !is_localhost_name(host) && answers.iter().any(|a| is_this_machine(a.ip()))
}

/// Follows at most `max` redirects, none from elsewhere to this machine
/// and none from HTTPS to plain HTTP.
fn redirect_policy(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            attempt.error(format!("more than {max} redirects"))
        } else if downgrades(attempt.previous(), attempt.url()) {
            attempt.error("a redirect from https to plain http")
        } else if attempt
            .previous()
            .first()
            .is_some_and(|first| leads_home(first, attempt.url()))
        {
            attempt.error("a redirect to this machine from elsewhere")
        } else {
            attempt.follow()
        }
    })
}

/// Whether a redirect to `next`, after a chain that passed through
/// `previous`, would send in plain HTTP what was asked over HTTPS. A tracker
/// named by `https:` was chosen so that nobody on the path learns which
/// torrents this machine announces, and a `.torrent` URL so that nobody
/// there can swap the file: following the redirect would give up both.
fn downgrades(previous: &[Url], next: &Url) -> bool {
    next.scheme() == "http" && previous.iter().any(|url| url.scheme() == "https")
}

/// Whether a redirect from a request that began at `first` to `next` would
/// lead to this machine from elsewhere. A name is judged as written: one
/// whose DNS answer is loopback still gets through, as the policy is not
/// shown where a name resolves.
fn leads_home(first: &Url, next: &Url) -> bool {
    names_this_machine(next) && !names_this_machine(first)
}

/// Whether a request for `first` that ended at `last`, answered from
/// `server`, was led home from elsewhere by a name that resolved here
/// (what [`leads_home`] cannot see). Only a redirect to another host
/// counts: the URL a response reports is rewritten even without one (no
/// fragment, no user info), and a name of the user's own that resolves
/// here is taken as meant, with whatever scheme, port or path its own
/// redirects give it.
fn redirected_home(first: &Url, last: &Url, server: Option<SocketAddr>) -> bool {
    last.host() != first.host()
        && !names_this_machine(first)
        && server.is_some_and(|s| is_this_machine(s.ip()))
}

/// Whether `ip` is this machine: loopback, or the unspecified address
/// (which Linux connects to loopback).
fn is_this_machine(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified()
}

/// Whether `url`'s host is this machine as written: a loopback or
/// unspecified address, or `localhost`. Callers that take URLs from
/// untrusted parties use it to hold such URLs to stricter rules.
pub fn names_this_machine(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => is_this_machine(ip.into()),
        Some(Host::Ipv6(ip)) => is_this_machine(ip.into()),
        Some(Host::Domain(name)) => is_localhost_name(name),
        None => false,
    }
}

/// Whether a host name is `localhost` or one of its subdomains, which
/// resolve to loopback by definition (RFC 6761).
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// A body, and the server it came from.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body, within the cap.
    pub body: Vec<u8>,
    /// The address the answer came from, when the connection knows it (a
    /// TCP connection always does).
    pub server: Option<SocketAddr>,
}

/// The rules every request of a [`Client`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_body: u64,
    /// Deadline for the whole exchange: connect, redirects and body.
    pub timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Whether a host name other than `localhost` may resolve to this
    /// machine. Off for URLs an untrusted party wrote, such as a tracker's:
    /// a name of its own pointed at 127.0.0.1 would otherwise reach a
    /// service here, and [`names_this_machine`] cannot see that from the
    /// URL. The connection then never opens, so no request is sent.
    pub names_may_resolve_here: bool,
}

impl Default for Limits {
    /// 32 MiB, 30 seconds, 5 redirects, names may resolve here (a URL the
    /// user typed).
    fn default() -> Self {
        Limits {
            max_body: 32 << 20,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
            names_may_resolve_here: true,
        }
    }
}

/// An HTTP(S) client that enforces [`Limits`]; cheap to clone, so one
/// serves a whole process.
///
/// Each request opens its own connection. Trackers are asked minutes apart,
/// and many (opentracker among them) close the connection after answering
/// without saying so: a pooled connection reused a moment later, before
/// their close arrives, meets a reset and the request fails.
///
/// The underlying client is built at the first request, not by
/// [`Client::new`]: building it loads and parses the platform's root
/// certificates, 5.6–7.5 ms measured here, which a session whose torrents
/// meet no HTTP tracker need never pay, and which used to delay every
/// magnet's first DHT lookup. It is built on a blocking thread, so that
/// first request does not stall the async worker it runs on.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<OnceCell<reqwest::Client>>,
    limits: Limits,
}

impl Client {
    /// A client following `limits`, identifying itself as lodestone.
    pub fn new(limits: Limits) -> Client {
        Client {
            inner: Arc::default(),
            limits,
        }
    }

    /// The underlying client, built on first use.
    async fn reqwest(&self) -> Result<&reqwest::Client, HttpError> {
        let limits = self.limits;
        self.inner
            .get_or_try_init(|| async move {
                match tokio::task::spawn_blocking(move || build(limits)).await {
                    Ok(built) => built.map_err(|e| HttpError::Setup(e.into())),
                    Err(unfinished) => Err(HttpError::Setup(unfinished.into())),
                }
            })
            .await
    }

    /// GETs `url` and returns its body, refusing one over the cap before
    /// reading past it.
    pub async fn get(&self, url: &Url) -> Result<Vec<u8>, HttpError> {
        self.fetch(url).await.map(|fetched| fetched.body)
    }

    /// [`Client::get`], and the address of the server that answered (after
    /// any redirect): a tracker's peers are judged by where it stands.
    pub async fn fetch(&self, url: &Url) -> Result<Fetched, HttpError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::UnsupportedScheme { url: url.clone() });
        }
        let client = self.reqwest().await?;
        let fail = |source: reqwest::Error| self.failure(url, source);
        let mut response = client.get(url.clone()).send().await.map_err(fail)?;
        let server = response.remote_addr();
        if redirected_home(url, response.url(), server) {
            return Err(HttpError::RedirectedHome {
                url: url.clone(),
                to: Box::new(response.url().clone()),
            });
        }
        let status = response.status();
        if !status.is_success() {
            return Err(HttpError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let limit = self.limits.max_body;
        let too_large = || HttpError::TooLarge {
            url: url.clone(),
            limit,
        };
        let announced = response.content_length().unwrap_or(0);
        if announced > limit {
            return Err(too_large());
        }
        // The announced length sizes the buffer only up to the cap.
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, server })
    }

    fn failure(&self, url: &Url, source: reqwest::Error) -> HttpError {
        if source.is_timeout() {
            HttpError::Timeout {
                url: url.clone(),
                timeout: self.limits.timeout,
            }
        } else {
            HttpError::Transport {
                url: url.clone(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_from_elsewhere_to_this_machine_is_refused() {
        let url = |s: &str| Url::parse(s).unwrap();
        let public = url("http://tracker.example/announce");
        for home in [
            "http://127.0.0.1:6379/",
            "http://127.8.9.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0:22/",
            "http://localhost/",
            "http://LocalHost./",
            "http://admin.localhost/",
        ] {
            assert!(leads_home(&public, &url(home)), "{home}");
        }
        assert!(!leads_home(&public, &url("http://198.51.100.1/announce")));
        // A request that began here may stay here (a tracker on loopback).
        let local = url("http://127.0.0.1:6969/announce");
        assert!(!leads_home(&local, &url("http://localhost:6969/announce")));
    }

    #[test]
    fn a_redirect_from_https_to_plain_http_is_refused() {
        let url = |s: &str| Url::parse(s).unwrap();
        let secure = url("https://tracker.example/announce");
        let plain = url("http://tracker.example/announce");
        let elsewhere = url("https://mirror.example/announce");
        assert!(downgrades(std::slice::from_ref(&secure), &plain));
        // However many redirects later, and whichever hop was secure.
        assert!(downgrades(
            &[plain.clone(), secure.clone(), elsewhere.clone()],
            &plain
        ));
        assert!(!downgrades(std::slice::from_ref(&secure), &elsewhere));
        // Plain HTTP may become HTTPS, or stay as it was.
        assert!(!downgrades(std::slice::from_ref(&plain), &secure));
        assert!(!downgrades(std::slice::from_ref(&plain), &plain));
    }

    #[test]
    fn only_localhost_may_resolve_here_when_names_may_not() {
        let here = [SocketAddr::from(([127, 0, 1, 1], 0))];
        let away = [SocketAddr::from(([198, 51, 100, 1], 0))];
        let mixed = [away[0], SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 0))];
        assert!(resolves_here_unnamed("tracker.example", &here));
        assert!(resolves_here_unnamed("tracker.example", &mixed));
        assert!(!resolves_here_unnamed("tracker.example", &away));
        assert!(!resolves_here_unnamed("localhost", &here));
        assert!(!resolves_here_unnamed("Tracker.LOCALHOST.", &here));
    }

    #[tokio::test]
    async fn the_resolver_away_from_here_still_answers_for_localhost() {
        use reqwest::dns::Resolve;
        let name = "localhost".parse().unwrap();
        let answers: Vec<SocketAddr> = ResolverAwayFromHere.resolve(name).await.unwrap().collect();
        assert!(answers.iter().all(|a| a.ip().is_loopback()) && !answers.is_empty());
    }

    #[test]
    fn a_redirect_to_a_name_that_resolves_here_is_refused_once_connected() {
        let url = |s: &str| Url::parse(s).unwrap();
        let public = url("http://tracker.example/announce");
        let rebound = url("http://rebound.example/announce");
        let home = Some(SocketAddr::from(([127, 0, 0, 1], 80)));
        let away = Some(SocketAddr::from(([198, 51, 100, 1], 80)));
        assert!(redirected_home(&public, &rebound, home));
        assert!(!redirected_home(&public, &rebound, away));
        // Not redirected (as the response reports it, without fragment or
        // user info), or redirected on its own host: a name of the user's
        // own that resolves here.
        assert!(!redirected_home(&public, &public, home));
        let with_extras = url("http://u:p@tracker.example/announce#x");
        assert!(!redirected_home(&with_extras, &public, home));
        let same_host = url("https://tracker.example:8443/v2/announce");
        assert!(!redirected_home(&public, &same_host, home));
        // Begun here, it may end here.
        let local = url("http://127.0.0.1:6969/announce");
        assert!(!redirected_home(&local, &rebound, home));
    }
}
