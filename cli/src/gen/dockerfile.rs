//! `gen dockerfile`: a multi-stage Dockerfile per binary — dependencies cached with
//! cargo-chef, a release build of the one binary, a distroless runtime running as a
//! non-root user with a health check that runs the binary itself (there is no shell).

use std::path::{Path, PathBuf};

use toml::Value;

use super::manifest::Manifest;
use super::workspace::{self, Workspace};
use super::{File, header};

const TEMPLATE: &str = include_str!("templates/Dockerfile");
const DOCKERIGNORE: &str = include_str!("templates/dockerignore");

/// Where a Flotilla service's data directory is inside its image.
pub const DATA_DIR: &str = "/var/lib/flotilla";

/// What differs between one Dockerfile and another.
#[derive(Debug)]
struct Image {
    title: String,
    description: String,
    bin: String,
    rust_version: String,
    dockerfile: PathBuf,
    image: String,
    repository: String,
    license: String,
    env: Vec<(String, String)>,
    ports: Vec<u16>,
    healthcheck: bool,
}

/// Replaces each `{{key}}` of `template`; every placeholder must be given.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    let unfilled = out.split("{{").skip(1).find(|rest| {
        rest.split_once("}}")
            .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    });
    assert!(
        unfilled.is_none(),
        "a template placeholder was left unfilled"
    );
    out
}

fn dockerfile(image: &Image, header: &str) -> String {
    let env = if image.env.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = image.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("ENV {}\n", lines.join(" \\\n    "))
    };
    let healthcheck = if image.healthcheck {
        format!(
            "HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \\\n  \
             CMD [\"/usr/local/bin/{}\", \"healthcheck\"]\n",
            image.bin
        )
    } else {
        "# No HEALTHCHECK: the image has no shell or HTTP client, so give the binary a way\n\
         # to probe itself and add `HEALTHCHECK CMD [\"/usr/local/bin/<bin>\", \"...\"]`.\n"
            .to_owned()
    };
    let expose: Vec<String> = image.ports.iter().map(u16::to_string).collect();
    render(
        TEMPLATE,
        &[
            ("header", header),
            ("title", &image.title),
            ("description", &image.description),
            ("bin", &image.bin),
            ("rust_version", &image.rust_version),
            ("dockerfile", &image.dockerfile.display().to_string()),
            ("image", &image.image),
            ("repository", &image.repository),
            ("license", &image.license),
            ("data_dir", DATA_DIR),
            ("env", &env),
            ("expose", &expose.join(" ")),
            ("healthcheck", &healthcheck),
        ],
    )
}

fn package_field(ws: &Workspace, krate: &Value, key: &str) -> String {
    let own = krate.get("package").and_then(|p| p.get(key));
    let inherited = own.and_then(|v| v.get("workspace")).is_some();
    let value = if inherited || own.is_none() {
        ws_package(ws, key)
    } else {
        own.and_then(Value::as_str).map(str::to_owned)
    };
    value.unwrap_or_default()
}

fn ws_package(ws: &Workspace, key: &str) -> Option<String> {
    let root = ws.krate(Path::new("")).ok()?;
    root.get("workspace")?
        .get("package")?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

/// The Dockerfile of a Flotilla service: `services/<name>/Dockerfile`.
pub fn for_service(ws: &Workspace, m: &Manifest) -> File {
    let dir = PathBuf::from("services").join(&m.name);
    let krate = ws.krate(&dir).unwrap_or(Value::Table(Default::default()));
    let mut env = vec![("FLOTILLA_DATA_DIR".to_owned(), DATA_DIR.to_owned())];
    env.extend(m.listen_env());
    let image = Image {
        title: format!("flotilla-{}", m.name),
        description: m.description.clone(),
        bin: m.bin(),
        rust_version: ws.rust_version(&krate),
        dockerfile: dir.join("Dockerfile"),
        image: format!("flotilla/{}", m.name),
        repository: package_field(ws, &krate, "repository"),
        license: package_field(ws, &krate, "license"),
        env,
        ports: m.named_ports().into_iter().map(|(_, p)| p).collect(),
        healthcheck: true,
    };
    File::new(
        dir.join("Dockerfile"),
        dockerfile(&image, &header("#", &format!("dockerfile {}", m.name))),
    )
}

/// The Dockerfile of any binary crate, written beside its Cargo.toml, and the
/// workspace's `.dockerignore` (seeded: an existing one is kept). Paths are relative to
/// the crate's workspace root.
pub fn for_crate(dir: &Path) -> anyhow::Result<Vec<File>> {
    let root = workspace::workspace_root(dir)?;
    let ws = Workspace::read(&root)?;
    let abs = dir.canonicalize()?;
    let rel = abs
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let krate = ws.krate(&rel)?;
    let bin = workspace::binary_of(&krate, &abs)?;
    let description = package_field(&ws, &krate, "description");
    let image = Image {
        title: bin.clone(),
        description: if description.is_empty() {
            bin.clone()
        } else {
            description
        },
        rust_version: ws.rust_version(&krate),
        dockerfile: rel.join("Dockerfile"),
        image: bin.clone(),
        repository: package_field(&ws, &krate, "repository"),
        license: package_field(&ws, &krate, "license"),
        env: Vec::new(),
        ports: vec![8080],
        healthcheck: false,
        bin,
    };
    let shown = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.clone()
    };
    let header = format!(
        "# Generated by `flotilla gen dockerfile --path {}`.\n",
        shown.display()
    );
    Ok(vec![
        File::new(rel.join("Dockerfile"), dockerfile(&image, &header)),
        File::seed(".dockerignore", dockerignore().contents),
    ])
}

/// The `.dockerignore` at the workspace root (the build context of every image).
pub fn dockerignore() -> File {
    File::new(
        ".dockerignore",
        render(DOCKERIGNORE, &[("header", &header("#", "dockerfile"))]),
    )
}
