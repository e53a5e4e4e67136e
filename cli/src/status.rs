//! `flotilla status`: services, instances, addresses, health, uptime and memory, read
//! from discovery (the registry, or etcd). Exits non-zero when the system is not up.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kit::config::Config;
use kit::discovery::{Directory, directory_from_url};

/// Runs `flotilla status`.
pub fn status() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla status: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match report().await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(e) => {
                eprintln!("flotilla status: {e:#}");
                ExitCode::from(3)
            }
        }
    })
}

/// Where `flotilla` commands read and change discovery: `FLOTILLA_DISCOVERY` if it
/// names a registry or etcd, else the configured registry address.
pub fn directory_url() -> anyhow::Result<String> {
    let config = Config::load();
    let common = config.common()?;
    if ["registry://", "etcd://"]
        .iter()
        .any(|s| common.discovery.starts_with(s))
    {
        return Ok(common.discovery);
    }
    let reg: registry::RegistryConfig = config.section("registry")?;
    Ok(format!("registry://{}", reg.listen))
}

/// The directory at [`directory_url`].
pub fn directory() -> anyhow::Result<Arc<dyn Directory>> {
    Ok(directory_from_url(&directory_url()?)?)
}

async fn report() -> anyhow::Result<bool> {
    let directory = directory()?;
    let services = directory.services().await.map_err(|e| {
        anyhow::anyhow!(
            "Flotilla is not running (nothing answers at {}): {e}",
            directory.location()
        )
    })?;
    println!(
        "{:<13} {:<20} {:<22} {:<9} {:>9} {:>9}  VERSION",
        "SERVICE", "INSTANCE", "ADDRESS", "HEALTH", "UPTIME", "RSS"
    );
    let mut total_rss = 0u64;
    let mut all_healthy = true;
    for s in &services {
        for i in &s.instances {
            all_healthy &= i.healthy;
            let rss = i
                .metadata
                .get("rss_bytes")
                .and_then(|r| r.parse::<u64>().ok());
            total_rss += rss.unwrap_or(0);
            let uptime = i
                .metadata
                .get("started_at")
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<13} {:<20} {:<22} {:<9} {:>9} {:>9}  {}",
                s.name,
                i.id,
                i.addr,
                if i.healthy { "healthy" } else { "expired" },
                uptime,
                rss.map(mib).unwrap_or_else(|| "-".into()),
                i.metadata.get("version").map(String::as_str).unwrap_or("-"),
            );
        }
    }
    println!("\ntotal RSS {}", mib(total_rss));
    let gateway_up = services
        .iter()
        .any(|s| s.name == "gateway" && s.instances.iter().any(|i| i.healthy));
    if !gateway_up {
        eprintln!("the gateway has no healthy instance");
    }
    Ok(gateway_up && all_healthy)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
