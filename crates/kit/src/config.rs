//! Layered configuration: defaults in code < `flotilla.toml` < `FLOTILLA_*` environment.
//!
//! Environment variables are `FLOTILLA_<SECTION>__<KEY>` (`FLOTILLA_GATEWAY__LISTEN`);
//! top-level settings drop the section (`FLOTILLA_DATA_DIR`). Each service reads the
//! [`Common`] settings plus its own section with [`Config::section`]. An invalid value is
//! a [`ConfigError`] naming the setting; binaries exit with [`EX_USAGE`] on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Exit code for invalid configuration (`EX_USAGE` from sysexits.h).
pub const EX_USAGE: i32 = 64;

/// A configuration problem, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be parsed; figment names the key and where it came from.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// A backend URL with a scheme this setting does not support.
    #[error("setting `{setting}`: unsupported URL {url:?}; expected one of: {expected}")]
    UnknownScheme {
        /// The setting, as an environment variable name.
        setting: String,
        /// The offending URL.
        url: String,
        /// The schemes the setting accepts.
        expected: &'static str,
    },
    /// Any other invalid value.
    #[error("setting `{setting}`: {message}")]
    Setting {
        /// The setting, as an environment variable name.
        setting: String,
        /// What is wrong with it.
        message: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // figment records the path innermost key first.
        let path: Vec<String> = e.path.iter().rev().map(|p| p.to_lowercase()).collect();
        let setting = match path.as_slice() {
            [] => return Self::Invalid(Box::new(e)),
            [key] => env_name(None, key),
            [section, rest @ ..] => env_name(Some(section), &rest.join("__")),
        };
        let source = e
            .metadata
            .as_ref()
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        Self::Setting {
            setting,
            message: format!("{}{source}", e.kind),
        }
    }
}

/// The environment variable that sets `key` in `section` (`None` for top level).
pub fn env_name(section: Option<&str>, key: &str) -> String {
    match section {
        Some(s) => format!("FLOTILLA_{}__{}", s.to_uppercase(), key.to_uppercase()),
        None => format!("FLOTILLA_{}", key.to_uppercase()),
    }
}

/// Settings every service shares (top level of `flotilla.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Common {
    /// Where embedded stores, logs, snapshots and certificates live (`FLOTILLA_DATA_DIR`).
    pub data_dir: PathBuf,
    /// How services find each other: `registry://host:port`, `etcd://host:port[,…]`,
    /// `static://…` or `dns://…` (`FLOTILLA_DISCOVERY`).
    pub discovery: String,
    /// OTLP/HTTP endpoint for traces and logs (`FLOTILLA_OTLP_ENDPOINT`; the kit posts
    /// to `<endpoint>/v1/traces` and `<endpoint>/v1/logs`); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Which traces are recorded (`FLOTILLA_TRACE_SAMPLING`): `always_on` (the default:
    /// every trace), `always_off`, or a ratio in (0, 1] for a parent-based ratio sampler
    /// (a trace the caller sampled is kept, a new one with that probability). Unsampled
    /// requests still carry a valid `traceparent` (flags `00`).
    pub trace_sampling: crate::telemetry::trace::Sampling,
    /// Log filter in `RUST_LOG` syntax (`FLOTILLA_LOG`).
    pub log: String,
    /// Version this instance reports to discovery (`FLOTILLA_VERSION`).
    pub version: String,
    /// Lease of a registration; heartbeats come every third of it (`FLOTILLA_LEASE_TTL`).
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// How long a stopping service lets in-flight requests finish (`FLOTILLA_SHUTDOWN_GRACE`).
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How long a stopping service keeps serving after it deregistered, so every
    /// client hears of it before the listener closes (`FLOTILLA_DRAIN_DELAY`; `up`
    /// sets 300 ms, Kubernetes a `preStop` pause does the same).
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// Internal traffic in plain text instead of mTLS (`FLOTILLA_INSECURE_INTERNAL=1`);
    /// for tests and experiments only, warned about at start.
    #[serde(deserialize_with = "flag")]
    pub insecure_internal: bool,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".flotilla"),
            discovery: "registry://127.0.0.1:8082".to_owned(),
            otlp_endpoint: None,
            trace_sampling: crate::telemetry::trace::Sampling::AlwaysOn,
            log: "info".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            lease_ttl: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            insecure_internal: false,
        }
    }
}

/// The loaded layers, from which each service extracts what it needs.
#[derive(Debug, Clone)]
pub struct Config {
    figment: Figment,
}

/// The file [`Config::use_file`] chose for this process.
static CHOSEN_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

impl Config {
    /// Loads defaults < the configuration file < environment. The file is the one
    /// [`Config::use_file`] chose, else the one `FLOTILLA_CONFIG` names, else
    /// `flotilla.toml` in the working directory.
    pub fn load() -> Self {
        let file = CHOSEN_FILE
            .get()
            .cloned()
            .or_else(|| std::env::var_os("FLOTILLA_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("flotilla.toml"));
        Self::from_file(&file)
    }

    /// Makes every later [`Config::load`] in this process read `file` (what
    /// `flotilla --profile` does); the first choice stands.
    pub fn use_file(file: PathBuf) {
        let _ = CHOSEN_FILE.set(file);
    }

    /// The file [`Config::load`] reads, if [`Config::use_file`] chose one.
    pub fn chosen_file() -> Option<&'static Path> {
        CHOSEN_FILE.get().map(PathBuf::as_path)
    }

    /// Loads defaults < the given TOML file (if it exists) < environment.
    pub fn from_file(file: &Path) -> Self {
        let figment = Figment::from(Serialized::defaults(Common::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("FLOTILLA_").split("__"));
        Self { figment }
    }

    /// Defaults < `FLOTILLA_*` environment, no file, with `data_dir` pinned: what tests
    /// start services with.
    pub fn for_tests(data_dir: &Path) -> Self {
        let figment = Figment::from(Serialized::defaults(Common::default()))
            .merge(Env::prefixed("FLOTILLA_").split("__"));
        Self { figment }.merged("data_dir", data_dir)
    }

    /// Settings shared by every service.
    pub fn common(&self) -> Result<Common, ConfigError> {
        Ok(self.figment.extract()?)
    }

    /// The `[name]` section as `T`; absent keys take `T`'s defaults.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        if !self.figment.contains(name) {
            return Ok(T::default());
        }
        Ok(self.figment.extract_inner(name)?)
    }

    /// The same configuration with plain-text internal traffic
    /// (`insecure_internal = true`): what in-process tests that do not exercise mTLS
    /// opt into.
    pub fn insecure_internal(self) -> Self {
        self.merged("insecure_internal", true)
    }

    /// Adds a layer on top (used by `flotilla up` and tests to pin values).
    pub fn merged(self, key: &str, value: impl Serialize) -> Self {
        Self {
            figment: self.figment.merge(Serialized::global(key, value)),
        }
    }
}

/// A switch set from the environment: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Num(i64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bool(b) => Ok(b),
        Raw::Num(1) => Ok(true),
        Raw::Num(0) => Ok(false),
        Raw::Text(t) if ["1", "true", "yes", "on"].contains(&t.to_lowercase().as_str()) => Ok(true),
        Raw::Text(t) if ["0", "false", "no", "off", ""].contains(&t.to_lowercase().as_str()) => {
            Ok(false)
        }
        _ => Err(serde::de::Error::custom("expected 1 or 0 (true or false)")),
    }
}

/// Serde support for human durations in config: `"250ms"`, `"10s"`, `"1m 30s"`, or a
/// number of milliseconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as a human string (`"1m 30s"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `"10s"`-style strings or integer milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!("{t:?} is not a duration like \"10s\": {e}"))
            }),
        }
    }
}

/// Serde support for optional human durations (`None` when absent or `null`).
pub mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as a human string, `None` as nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads what [`super::duration`] reads, or nothing.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(default)]
    struct Gateway {
        listen: String,
        #[serde(with = "duration")]
        timeout: Duration,
    }

    #[test]
    fn defaults_then_file_then_environment() {
        Jail::expect_with(|jail| {
            let c = Config::from_file(Path::new("flotilla.toml"))
                .common()
                .unwrap();
            assert_eq!(c.data_dir, PathBuf::from(".flotilla"), "code default");

            jail.create_file(
                "flotilla.toml",
                r#"
                data_dir = "/from/file"
                log = "debug"
                [gateway]
                listen = "0.0.0.0:80"
                timeout = "2s"
                "#,
            )?;
            let cfg = Config::from_file(Path::new("flotilla.toml"));
            assert_eq!(cfg.common().unwrap().data_dir, PathBuf::from("/from/file"));
            let gw: Gateway = cfg.section("gateway").unwrap();
            assert_eq!(gw.listen, "0.0.0.0:80");
            assert_eq!(gw.timeout, Duration::from_secs(2));

            jail.set_env("FLOTILLA_DATA_DIR", "/from/env");
            jail.set_env("FLOTILLA_GATEWAY__TIMEOUT", "750");
            let cfg = Config::from_file(Path::new("flotilla.toml"));
            let common = cfg.common().unwrap();
            assert_eq!(
                common.data_dir,
                PathBuf::from("/from/env"),
                "env beats file"
            );
            assert_eq!(common.log, "debug", "file beats default");
            let gw: Gateway = cfg.section("gateway").unwrap();
            assert_eq!(gw.timeout, Duration::from_millis(750));
            assert_eq!(gw.listen, "0.0.0.0:80");
            Ok(())
        });
    }

    #[test]
    fn absent_section_takes_defaults() {
        Jail::expect_with(|_| {
            let gw: Gateway = Config::from_file(Path::new("none.toml"))
                .section("gateway")
                .unwrap();
            assert_eq!(gw, Gateway::default());
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_setting() {
        Jail::expect_with(|jail| {
            jail.set_env("FLOTILLA_GATEWAY__TIMEOUT", "soon");
            let err = Config::from_file(Path::new("none.toml"))
                .section::<Gateway>("gateway")
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a duration"), "{err}");
            assert!(err.contains("FLOTILLA_GATEWAY__TIMEOUT"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn insecure_internal_is_an_explicit_switch() {
        Jail::expect_with(|jail| {
            let common = |jail: &mut Jail, v: &str| {
                jail.set_env("FLOTILLA_INSECURE_INTERNAL", v);
                Config::from_file(Path::new("none.toml")).common()
            };
            assert!(
                !Config::from_file(Path::new("none.toml"))
                    .common()
                    .unwrap()
                    .insecure_internal
            );
            assert!(common(jail, "1").unwrap().insecure_internal);
            assert!(common(jail, "true").unwrap().insecure_internal);
            assert!(!common(jail, "0").unwrap().insecure_internal);
            let err = common(jail, "maybe").unwrap_err().to_string();
            assert!(err.contains("FLOTILLA_INSECURE_INTERNAL"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn trace_sampling_is_always_on_a_ratio_or_a_named_error() {
        Jail::expect_with(|jail| {
            use crate::telemetry::trace::Sampling;
            let common = |jail: &mut Jail, v: &str| {
                jail.set_env("FLOTILLA_TRACE_SAMPLING", v);
                Config::from_file(Path::new("none.toml")).common()
            };
            assert_eq!(
                Config::from_file(Path::new("none.toml"))
                    .common()
                    .unwrap()
                    .trace_sampling,
                Sampling::AlwaysOn
            );
            assert_eq!(
                common(jail, "0.1").unwrap().trace_sampling,
                Sampling::Ratio(0.1)
            );
            assert_eq!(
                common(jail, "1").unwrap().trace_sampling,
                Sampling::Ratio(1.0)
            );
            assert_eq!(
                common(jail, "always_off").unwrap().trace_sampling,
                Sampling::AlwaysOff
            );
            for bad in ["0", "1.5", "-0.2", "sometimes", "NaN"] {
                let err = common(jail, bad).unwrap_err().to_string();
                assert!(err.contains("FLOTILLA_TRACE_SAMPLING"), "{bad}: {err}");
            }
            jail.clear_env();
            jail.create_file("t.toml", "trace_sampling = 0.25")?;
            assert_eq!(
                Config::from_file(Path::new("t.toml"))
                    .common()
                    .unwrap()
                    .trace_sampling,
                Sampling::Ratio(0.25)
            );
            Ok(())
        });
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name(Some("gateway"), "listen"),
            "FLOTILLA_GATEWAY__LISTEN"
        );
        assert_eq!(env_name(None, "data_dir"), "FLOTILLA_DATA_DIR");
    }
}
