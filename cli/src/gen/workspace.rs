//! What the generators need to know about a Cargo workspace: its root, its Rust version,
//! a crate's binary and the workspace crates it depends on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use toml::Value;

/// A Cargo workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Its root directory.
    pub root: PathBuf,
    manifest: Value,
}

fn read_toml(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn str_at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
}

/// The root of the workspace `dir` belongs to: the nearest directory at or above it
/// whose Cargo.toml has `[workspace]`, or `dir` itself for a crate on its own.
pub fn workspace_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no directory {}", dir.display()))?;
    if !dir.join("Cargo.toml").exists() {
        bail!("{} has no Cargo.toml", dir.display());
    }
    for candidate in dir.ancestors() {
        let cargo = candidate.join("Cargo.toml");
        if cargo.exists() && read_toml(&cargo)?.get("workspace").is_some() {
            return Ok(candidate.to_path_buf());
        }
    }
    Ok(dir)
}

impl Workspace {
    /// Reads the workspace at `root`.
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            root: root.to_path_buf(),
            manifest: read_toml(&root.join("Cargo.toml"))?,
        })
    }

    /// The Rust version a crate builds with: its `rust-version` (or the workspace's),
    /// else `1` (the newest stable image).
    pub fn rust_version(&self, krate: &Value) -> String {
        let own = krate.get("package").and_then(|p| p.get("rust-version"));
        let inherited = own
            .and_then(|v| v.get("workspace"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let version = if inherited || own.is_none() {
            str_at(&self.manifest, &["workspace", "package", "rust-version"])
        } else {
            own.and_then(Value::as_str)
        };
        version.unwrap_or("1").to_owned()
    }

    /// The crate at `dir` (relative to the root): its parsed Cargo.toml.
    pub fn krate(&self, dir: &Path) -> anyhow::Result<Value> {
        read_toml(&self.root.join(dir).join("Cargo.toml"))
    }

    /// The directories (relative to the root) of the workspace crates that the crate at
    /// `dir` depends on, directly or not, itself excluded.
    pub fn local_dependencies(&self, dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(at) = todo.pop() {
            let krate = self.krate(&at)?;
            let Some(deps) = krate.get("dependencies").and_then(Value::as_table) else {
                continue;
            };
            for (name, spec) in deps {
                let path = if spec.get("workspace").and_then(Value::as_bool) == Some(true) {
                    str_at(&self.manifest, &["workspace", "dependencies", name, "path"])
                        .map(PathBuf::from)
                } else {
                    str_at(spec, &["path"]).map(|p| normalize(&at.join(p)))
                };
                if let Some(path) = path
                    && path != dir
                    && seen.insert(path.clone())
                {
                    todo.push(path);
                }
            }
        }
        Ok(seen)
    }
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The binary a crate builds: its first `[[bin]]`, else the package name (with
/// `src/main.rs`).
pub fn binary_of(krate: &Value, dir: &Path) -> anyhow::Result<String> {
    let bins = krate.get("bin").and_then(Value::as_array);
    if let Some(name) = bins
        .and_then(|b| b.first())
        .and_then(|b| str_at(b, &["name"]))
    {
        return Ok(name.to_owned());
    }
    let package = str_at(krate, &["package", "name"])
        .with_context(|| format!("{}: no [package] name", dir.display()))?;
    if !dir.join("src/main.rs").exists() {
        bail!("{}: the crate {package} has no binary", dir.display());
    }
    Ok(package.to_owned())
}
