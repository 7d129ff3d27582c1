//! `--bootstrap HOST:PORT` values, checked before the DHT starts: a name
//! the user typed that has no port or does not resolve is their mistake to
//! hear about at once (exit 2), not a warning in a log while the DHT waits
//! for nodes that will never answer.

use anyhow::anyhow;

use crate::failure::Failure;

/// Resolves every name to its addresses (`ip:port` text, as the DHT takes
/// them), refusing a value without a port or one that resolves to nothing.
pub async fn resolve(names: &[String]) -> Result<Vec<String>, Failure> {
    let mut addresses = Vec::new();
    for name in names {
        check_form(name)?;
        let resolved = tokio::net::lookup_host(name.as_str())
            .await
            .map_err(|e| bad(anyhow!(e).context(format!("cannot resolve --bootstrap {name}"))))?;
        let before = addresses.len();
        addresses.extend(resolved.map(|addr| addr.to_string()));
        if addresses.len() == before {
            return Err(bad(anyhow!("--bootstrap {name} resolves to no address")));
        }
    }
    Ok(addresses)
}

/// `HOST:PORT` with a non-empty host and a port from 1 to 65535; an IPv6
/// literal in brackets.
fn check_form(name: &str) -> Result<(), Failure> {
    let form = || {
        bad(anyhow!(
            "--bootstrap {name:?} is not HOST:PORT (like router.example.org:6881, 10.0.0.1:6881 or [::1]:6881)"
        ))
    };
    let (host, port) = name.rsplit_once(':').ok_or_else(form)?;
    let bare_ipv6 = host.contains(':') && !(host.starts_with('[') && host.ends_with(']'));
    if host.is_empty() || bare_ipv6 || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(form());
    }
    Ok(())
}

fn bad(error: anyhow::Error) -> Failure {
    Failure::BadInput(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_host_colon_port() {
        for good in [
            "router.example.org:6881",
            "10.0.0.1:1",
            "[::1]:6881",
            "a:65535",
        ] {
            assert!(check_form(good).is_ok(), "{good}");
        }
        for bad in [
            "foo",
            "foo:",
            ":6881",
            "foo:0",
            "foo:65536",
            "foo:x",
            "::1",
            "::1:6881",
        ] {
            assert!(check_form(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn literals_resolve_to_themselves() {
        let names = ["127.0.0.1:6881".to_owned(), "[::1]:7000".to_owned()];
        assert_eq!(
            resolve(&names).await.ok(),
            Some(vec!["127.0.0.1:6881".to_owned(), "[::1]:7000".to_owned()])
        );
    }
}
