//! `gen ci`: a GitHub Actions workflow per service, filtered on the paths it is built
//! from (its crate, the workspace crates it depends on, the lock file, its manifest and
//! Dockerfile), that tests it, builds and pushes its image and updates an overlay's
//! image tag.

use std::path::PathBuf;

use anyhow::Context as _;

use super::dockerfile::render;
use super::manifest::Manifest;
use super::workspace::Workspace;
use super::{File, header};

const TEMPLATE: &str = include_str!("templates/workflow.yml");

/// Every service's workflow.
pub fn files(ws: &Workspace, manifests: &[Manifest]) -> anyhow::Result<Vec<File>> {
    manifests.iter().map(|m| workflow(ws, m)).collect()
}

/// The workflow of one service: `.github/workflows/<name>.yml`.
pub fn workflow(ws: &Workspace, m: &Manifest) -> anyhow::Result<File> {
    let dir = PathBuf::from("services").join(&m.name);
    let krate = ws.krate(&dir)?;
    let package = krate
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: no package name", dir.display()))?
        .to_owned();
    let workflow = PathBuf::from(".github/workflows").join(format!("{}.yml", m.name));
    let mut paths: Vec<String> = vec![format!("{}/**", dir.display())];
    paths.extend(
        ws.local_dependencies(&dir)?
            .iter()
            .map(|d| format!("{}/**", d.display())),
    );
    paths.extend(["Cargo.toml".to_owned(), "Cargo.lock".to_owned()]);
    paths.push(workflow.display().to_string());
    let paths: String = paths.iter().map(|p| format!("      - \"{p}\"\n")).collect();
    let contents = render(
        TEMPLATE,
        &[
            ("header", &header("#", &format!("ci {}", m.name))),
            ("name", &m.name),
            ("bin", &m.bin()),
            ("package", &package),
            ("paths", &paths),
            ("dockerfile", &dir.join("Dockerfile").display().to_string()),
        ],
    );
    Ok(File::new(workflow, contents))
}
