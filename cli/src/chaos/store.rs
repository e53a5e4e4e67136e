//! `store-restart`: restarts one of the real servers the infra profile runs on
//! (PostgreSQL, MariaDB, Redis, NATS, etcd) while the load runs, through a command that
//! knows how this machine runs them (`deploy/infra/restart-server.sh` by default).
//! On the embedded profile every store lives inside its service's process: there is
//! nothing to restart that `kill` does not already.

use std::time::Duration;

use kit::config::Config;
use tokio::time::Instant;

use crate::up::preflight;

/// One server the configuration names, by the name the restart command takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `postgresql`, `mariadb`, `redis`, `nats` or `etcd`.
    pub kind: &'static str,
    /// The settings that name it (`FLOTILLA_ORDERS__STORE`, …).
    pub used_by: Vec<String>,
}

/// The servers `config` runs on, once each, in a stable order.
pub fn servers(config: &Config) -> anyhow::Result<Vec<Server>> {
    let mut out: Vec<Server> = Vec::new();
    for (setting, url) in preflight::servers(config)? {
        let Some((kind, _)) = preflight::server_of(&url) else {
            continue;
        };
        match out.iter_mut().find(|s| s.kind == kind) {
            Some(s) => s.used_by.push(setting),
            None => out.push(Server {
                kind,
                used_by: vec![setting],
            }),
        }
    }
    out.sort_by_key(|s| s.kind);
    Ok(out)
}

/// Runs `command <kind>` (with `--kill` first when `kill`) through `sh`; how long the
/// server took to be back, or what went wrong.
pub async fn restart(command: &str, server: &str, kill: bool) -> Result<Duration, String> {
    let begun = Instant::now();
    let line = format!("{command}{} {server}", if kill { " --kill" } else { "" });
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(90), run).await {
        Err(_) => Err(format!("`{line}` did not finish in 90 s")),
        Ok(Err(e)) => Err(format!("cannot run `{line}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(begun.elapsed()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "`{line}` failed ({}): {}",
                out.status,
                stderr.trim().lines().last().unwrap_or("no output")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_named_once_with_every_setting_that_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_file(&dir.path().join("none.toml"))
            .merged("discovery", "etcd://127.0.0.1:2379")
            .merged("bus", "nats://127.0.0.1:4222")
            .merged("orders", serde_json::json!({"store": "postgres://o@h/o"}))
            .merged("users", serde_json::json!({"store": "postgres://u@h/u"}))
            .merged(
                "payments",
                serde_json::json!({"store": "sqlite:///tmp/p.db"}),
            );
        let servers = servers(&config).unwrap();
        let kinds: Vec<_> = servers.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["etcd", "nats", "postgresql"]);
        assert_eq!(
            servers[2].used_by,
            ["FLOTILLA_USERS__STORE", "FLOTILLA_ORDERS__STORE"]
        );
    }

    #[test]
    fn embedded_stores_name_no_server() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_file(&dir.path().join("none.toml"))
            .merged("discovery", "registry://127.0.0.1:8082")
            .merged("bus", "bus://127.0.0.1:8083");
        assert!(servers(&config).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failing_restart_command_says_why() {
        let e = restart("echo nope >&2; false", "redis", false)
            .await
            .unwrap_err();
        assert!(e.contains("nope"), "{e}");
        restart("true", "redis", true).await.unwrap();
    }
}
