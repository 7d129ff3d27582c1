//! A plain HTTP server on loopback serving a directory
//! (`tests/py/http_serve.py`), for fetching `.torrent` files by URL.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::tools::script;
use crate::{HarnessError, Result};

/// A running HTTP server; stopped on drop.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    _process: Proc,
}

impl HttpServer {
    /// Serves the files under `directory` on `ip`, at a free port.
    pub fn serve(directory: &Path, ip: IpAddr) -> Result<HttpServer> {
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(script("http_serve.py"))
            .arg(directory)
            .arg(ip.to_string());
        let mut process = Proc::spawn("http-server", command)?;
        let ready = process.wait_event("ready", Duration::from_secs(30))?;
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| HarnessError::Protocol {
                what: "http-server".to_owned(),
                detail: format!("no port in {ready}"),
            })?;
        Ok(HttpServer {
            addr: SocketAddr::new(ip, port),
            _process: process,
        })
    }

    /// The URL of `path` (relative, without a leading slash) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}
