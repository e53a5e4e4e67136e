//! `--profile`: which servers the system runs on.
//!
//! `embedded` (the default) is what `flotilla up` needs nothing installed for: SQLite per
//! service, the embedded registry and bus. `infra` is `flotilla.infra.toml`: PostgreSQL,
//! MariaDB, Redis, NATS JetStream and etcd on this machine, one database and user per
//! service (`deploy/infra/create-databases.sh` creates them). A profile is only a
//! configuration file: `FLOTILLA_CONFIG=flotilla.infra.toml` does the same, and
//! `FLOTILLA_*` variables override it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kit::config::Config;

use crate::services::NAMES;

/// The infrastructure profile as built into this binary (the repository's
/// `flotilla.infra.toml`), used when the working directory has no such file.
pub const INFRA_TOML: &str = include_str!("../../flotilla.infra.toml");

/// Which servers the system runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// Nothing to install: SQLite per service, embedded registry and bus.
    #[default]
    Embedded,
    /// PostgreSQL, MariaDB, Redis, NATS JetStream and etcd (`flotilla.infra.toml`).
    Infra,
}

/// Makes this process (and what `up` starts) read the profile's configuration file:
/// `./flotilla.infra.toml` if there is one, else the built-in copy written to
/// `<data dir>/flotilla.infra.toml`.
pub fn apply(profile: Profile, data_dir: &Path) -> anyhow::Result<()> {
    let Profile::Infra = profile else {
        return Ok(());
    };
    let local = Path::new("flotilla.infra.toml");
    let file = if local.is_file() {
        local.to_path_buf()
    } else {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let file = data_dir.join("flotilla.infra.toml");
        std::fs::write(&file, INFRA_TOML)
            .with_context(|| format!("cannot write {}", file.display()))?;
        file
    };
    let file: PathBuf = std::fs::canonicalize(&file)?;
    Config::use_file(file);
    Ok(())
}

/// The services this system runs: not the embedded registry or bus when etcd or NATS
/// take their place.
pub fn system_services(config: &kit::config::Config) -> Vec<&'static str> {
    let registry = config
        .common()
        .is_ok_and(|c| kit::store::scheme(&c.discovery) == "registry");
    let bus = kit::store::scheme(&kit_events::url_from_config(config)) == "bus";
    NAMES
        .iter()
        .copied()
        .filter(|n| match *n {
            "registry" => registry,
            "bus" => bus,
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_profile_names_a_real_server_for_every_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("infra.toml");
        std::fs::write(&file, INFRA_TOML).unwrap();
        let config = Config::from_file(&file);
        assert!(config.common().unwrap().discovery.starts_with("etcd://"));
        assert!(kit_events::url_from_config(&config).starts_with("nats://"));
        #[derive(Default, serde::Deserialize)]
        struct Store {
            store: Option<String>,
        }
        for (service, scheme) in [
            ("auth", "postgres"),
            ("users", "postgres"),
            ("orders", "postgres"),
            ("notifications", "postgres"),
            ("analytics", "postgres"),
            ("payments", "mysql"),
            ("inventory", "redis"),
        ] {
            let s: Store = config.section(service).unwrap();
            let url = s.store.unwrap_or_default();
            assert_eq!(kit::store::scheme(&url), scheme, "{service}: {url}");
        }
    }
}
