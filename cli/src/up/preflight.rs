//! Before `up` starts services on real servers (the infra profile), it checks that each
//! server answers, so a missing PostgreSQL is one clear line rather than ten services
//! failing their start-up in turn.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::bail;
use kit::config::{Config, env_name};

use crate::services::NAMES;

/// How long one server may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The servers the configuration names (discovery, bus, every service's store, the
/// gateway's rate-limit store), as `(setting, url)`; embedded ones (SQLite, the
/// embedded registry and bus, in-memory) are left out.
pub fn servers(config: &Config) -> anyhow::Result<Vec<(String, String)>> {
    #[derive(Default, serde::Deserialize)]
    struct Section {
        store: Option<String>,
        rate_limit_store: Option<String>,
    }
    let mut out = vec![
        ("FLOTILLA_DISCOVERY".to_owned(), config.common()?.discovery),
        (
            "FLOTILLA_BUS".to_owned(),
            kit_events::url_from_config(config),
        ),
    ];
    for name in NAMES.iter().filter(|n| !matches!(**n, "registry" | "bus")) {
        // A section that is not a table (or has other keys only) names no server.
        let section: Section = config.section(name).unwrap_or_default();
        for (key, url) in [
            ("store", section.store),
            ("rate_limit_store", section.rate_limit_store),
        ] {
            if let Some(url) = url {
                out.push((env_name(Some(name), key), url));
            }
        }
    }
    out.retain(|(_, url)| default_port(url).is_some());
    Ok(out)
}

/// The server a URL's scheme names — `postgresql`, `mariadb`, `redis`, `nats` or `etcd`
/// (what `restart-server.sh` takes) — and the port it listens on by default; `None` for
/// what is not a network server.
pub fn server_of(url: &str) -> Option<(&'static str, u16)> {
    Some(match kit::store::scheme(url) {
        "postgres" | "postgresql" => ("postgresql", 5432),
        "mysql" | "mariadb" => ("mariadb", 3306),
        "redis" | "rediss" => ("redis", 6379),
        "nats" => ("nats", 4222),
        "etcd" => ("etcd", 2379),
        _ => return None,
    })
}

fn default_port(url: &str) -> Option<u16> {
    server_of(url).map(|(_, port)| port)
}

/// `host:port` of every server a URL names (`etcd://a:2379,b:2379` names two).
fn hosts(url: &str) -> Vec<String> {
    let port = default_port(url).unwrap_or(0);
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    authority
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            let bracketed = h.starts_with('[') && h.ends_with(']');
            if h.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !bracketed
            {
                h.to_owned()
            } else {
                format!("{h}:{port}")
            }
        })
        .collect()
}

/// Fails, naming the setting and the server, if any server the configuration names
/// does not accept a TCP connection.
pub fn servers_reachable(config: &Config) -> anyhow::Result<()> {
    for (setting, url) in servers(config)? {
        let any_up = hosts(&url).iter().any(|h| {
            h.to_socket_addrs().is_ok_and(|mut addrs| {
                addrs.any(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).is_ok())
            })
        });
        if !any_up {
            bail!(
                "cannot reach {} ({setting}); the infra profile needs PostgreSQL, MariaDB, \
                 Redis, NATS JetStream and etcd running, and their databases created \
                 (deploy/infra/create-databases.sh): see docs/operations.md",
                kit::store::redact(&url)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_the_schemes_port_and_drop_credentials() {
        assert_eq!(hosts("postgres://u:p@db:5433/x"), ["db:5433"]);
        assert_eq!(hosts("mysql://u:p@127.0.0.1/pay"), ["127.0.0.1:3306"]);
        assert_eq!(hosts("etcd://a:2379,b?prefix=/f"), ["a:2379", "b:2379"]);
        assert_eq!(hosts("nats://[::1]:4222"), ["[::1]:4222"]);
        assert_eq!(hosts("redis://[::1]/0"), ["[::1]:6379"]);
        assert!(default_port("sqlite:///tmp/x.db").is_none());
        assert!(default_port("registry://127.0.0.1:8082").is_none());
    }

    #[test]
    fn an_unreachable_server_is_named_with_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_file(&dir.path().join("none.toml"))
            .merged("discovery", "registry://127.0.0.1:1")
            .merged("bus", "bus://127.0.0.1:1")
            .merged(
                "orders",
                serde_json::json!({"store": "postgres://u:secret@127.0.0.1:1/o"}),
            );
        let e = servers_reachable(&config).unwrap_err().to_string();
        assert!(e.contains("FLOTILLA_ORDERS__STORE"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
