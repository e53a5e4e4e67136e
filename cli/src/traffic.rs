//! `flotilla traffic <service>`: show or set how calls to a service are spread over
//! its versions. The rules live in discovery (the registry, or etcd), so the gateway and
//! every kit client apply the same ones at once.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use kit::discovery::traffic::{TrafficPolicy, VERSION_HEADER};

/// `flotilla traffic <service> [--split v=w,…] [--sticky] [--header NAME] [--clear]`
#[derive(Debug, Args)]
pub struct Traffic {
    /// The service.
    service: String,
    /// Weights per version: `stable=90,canary=10`.
    #[arg(long, value_delimiter = ',')]
    split: Vec<String>,
    /// Keep each signed-in user on one version.
    #[arg(long)]
    sticky: bool,
    /// The request header that picks a version outright.
    #[arg(long)]
    header: Option<String>,
    /// Remove the rules: every healthy instance alike again.
    #[arg(long, conflicts_with_all = ["split", "sticky", "header"])]
    clear: bool,
}

/// Runs `flotilla traffic`.
pub fn traffic(cmd: Traffic) -> ExitCode {
    crate::block_on("traffic", run(cmd))
}

/// `a=90,b=10` as a split.
fn parse_split(pairs: &[String]) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut split = BTreeMap::new();
    for pair in pairs {
        let (version, weight) = pair
            .split_once('=')
            .with_context(|| format!("--split takes version=weight pairs, not {pair:?}"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("the weight of {version:?} is not a whole number"))?;
        if split.insert(version.trim().to_owned(), weight).is_some() {
            bail!("--split names {version:?} twice");
        }
    }
    Ok(split)
}

async fn run(cmd: Traffic) -> anyhow::Result<()> {
    let client = crate::status::directory()?;
    if cmd.clear {
        client.set_traffic(&cmd.service, None).await?;
        println!("{}: traffic rules removed", cmd.service);
        return Ok(());
    }
    if !cmd.split.is_empty() || cmd.sticky || cmd.header.is_some() {
        let rules = TrafficPolicy {
            split: parse_split(&cmd.split)?,
            header: cmd.header.unwrap_or_else(|| VERSION_HEADER.to_owned()),
            sticky: cmd.sticky,
        };
        rules.validate().map_err(|e| anyhow::anyhow!(e))?;
        client.set_traffic(&cmd.service, Some(&rules)).await?;
    }
    let entry = client
        .service(&cmd.service)
        .await
        .context("is Flotilla running?")?;
    print!("{}", describe(&entry));
    Ok(())
}

/// The rules and the instances per version, as `flotilla traffic` prints them.
fn describe(entry: &kit::discovery::registry::ServiceEntry) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in entry.instances.iter().filter(|i| i.healthy) {
        *counts
            .entry(i.metadata.get("version").map_or("?", String::as_str))
            .or_default() += 1;
    }
    let mut out = format!("{}\n", entry.name);
    let Some(rules) = &entry.traffic else {
        out.push_str("  rules    none: every healthy instance alike\n");
        for (v, n) in &counts {
            out.push_str(&format!("  {v:<16} {n} instance(s)\n"));
        }
        return out;
    };
    out.push_str(&format!(
        "  rules    header {}{}\n",
        rules.header,
        if rules.sticky { ", sticky by user" } else { "" }
    ));
    let mut versions: Vec<&str> = counts.keys().copied().collect();
    for v in rules.split.keys() {
        if !versions.contains(&v.as_str()) {
            versions.push(v);
        }
    }
    versions.sort_unstable();
    // Shares among the weighted versions that have instances, as the clients route.
    let live: u32 = rules
        .split
        .iter()
        .filter(|(v, _)| counts.contains_key(v.as_str()))
        .map(|(_, w)| *w)
        .sum();
    out.push_str(&format!(
        "  {:<16} {:>9} {:>6} {:>7}\n",
        "version", "instances", "weight", "share"
    ));
    for v in versions {
        let n = counts.get(v).copied().unwrap_or(0);
        let w = rules.split.get(v).copied();
        let share = match w {
            Some(w) if n > 0 && live > 0 => {
                format!("{:.1}%", f64::from(w) * 100.0 / f64::from(live))
            }
            _ if rules.split.is_empty() && n > 0 => "all".to_owned(),
            _ => "0%".to_owned(),
        };
        out.push_str(&format!(
            "  {v:<16} {n:>9} {:>6} {share:>7}\n",
            w.map_or("-".to_owned(), |w| w.to_string())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parse_and_bad_ones_say_why() {
        let s = parse_split(&["stable=90".into(), "canary=10".into()]).unwrap();
        assert_eq!(s["stable"], 90);
        assert_eq!(s["canary"], 10);
        assert!(
            parse_split(&["stable".into()])
                .unwrap_err()
                .to_string()
                .contains("version=weight")
        );
        assert!(
            parse_split(&["a=x".into()])
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
        assert!(
            parse_split(&["a=1".into(), "a=2".into()])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
