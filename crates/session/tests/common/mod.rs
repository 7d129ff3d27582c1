//! What the session's integration tests share.

use std::net::Ipv4Addr;

use lodestone_session::SessionConfig;

/// A session on 127.0.0.1 only, on a port the OS picks, without a DHT:
/// peers come from the test alone.
pub fn local_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    config.dht = None;
    config.listen_port = 0;
    config.listen_ipv4 = Some(Ipv4Addr::LOCALHOST);
    config.listen_ipv6 = None;
    config
}
