//! The generator against golden files (one fixture service through every template) and
//! the committed tree against what the manifests generate.

use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest};
use super::workspace::Workspace;
use super::{File, ci, compose, dockerfile, generate_all, k8s};

/// The workspace root (this crate is `cli/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gen/golden")
}

/// Compares `actual` with `golden/<name>`; `FLOTILLA_UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("FLOTILLA_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (FLOTILLA_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from its golden file {} (FLOTILLA_UPDATE_GOLDEN=1 rewrites it):\n{actual}",
        path.display()
    );
}

/// A fixture: a service that has every feature (gRPC, a store, the bus, a caller, a
/// callee, an optional secret, egress, extra settings).
fn fixture() -> Vec<Manifest> {
    let parse = |text: &str| -> Manifest { toml::from_str(text).unwrap() };
    vec![
        parse(
            r#"
            name = "orders"
            description = "Orders"
            calls = ["stock"]
            bus = true
            replicas = 3
            [ports]
            http = 8080
            admin = 9100
            [store]
            kind = "postgres"
            setting = "store"
            [[secrets]]
            key = "smtp-url"
            setting = "smtp"
            optional = true
            [[egress]]
            name = "smtp"
            port = 587
            [env]
            FLOTILLA_ORDERS__MODE = "fast"
            [resources]
            cpu = "100m"
            memory = "64Mi"
            cpu_limit = "500m"
            memory_limit = "256Mi"
            [autoscale]
            max = 6
            cpu_percent = 70
            "#,
        ),
        parse(
            r#"
            name = "stock"
            description = "Stock"
            replicas = 2
            [ports]
            http = 8080
            grpc = 9090
            admin = 9100
            [store]
            kind = "redis"
            setting = "store"
            database = 3
            [resources]
            cpu = "50m"
            memory = "32Mi"
            cpu_limit = "250m"
            memory_limit = "128Mi"
            [autoscale]
            max = 4
            cpu_percent = 80
            "#,
        ),
    ]
}

fn find<'a>(files: &'a [File], path: &str) -> &'a File {
    files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} was not generated"))
}

#[test]
fn dockerfile_template() {
    let ws = Workspace::read(&root()).unwrap();
    let file = dockerfile::for_service(&ws, &fixture()[1]);
    assert_eq!(file.path, Path::new("services/stock/Dockerfile"));
    assert_golden("stock.Dockerfile", &file.contents);
    assert_golden("dockerignore", &dockerfile::dockerignore().contents);
}

#[test]
fn dockerfile_for_any_binary_crate() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nmembers = [\"apps/hello\"]\n[workspace.package]\nrust-version = \"1.85\"\n",
    )
    .unwrap();
    let app = ws.join("apps/hello");
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::write(
        app.join("Cargo.toml"),
        "[package]\nname = \"hello-svc\"\ndescription = \"Says hello\"\nrust-version.workspace = true\n\n[[bin]]\nname = \"hello\"\npath = \"src/main.rs\"\n",
    )
    .unwrap();
    std::fs::write(app.join("src/main.rs"), "fn main() {}\n").unwrap();
    let files = dockerfile::for_crate(&app).unwrap();
    assert_eq!(files[0].path, Path::new("apps/hello/Dockerfile"));
    assert!(files[1].seed, "an existing .dockerignore is kept");
    assert_golden("hello.Dockerfile", &files[0].contents);
    // Without [[bin]], the package name.
    std::fs::write(app.join("Cargo.toml"), "[package]\nname = \"hello-svc\"\n").unwrap();
    let files = dockerfile::for_crate(&app).unwrap();
    assert!(files[0].contents.contains("--bin hello-svc"));
    std::fs::remove_file(app.join("src/main.rs")).unwrap();
    let err = dockerfile::for_crate(&app).unwrap_err().to_string();
    assert!(err.contains("no binary"), "{err}");
}

#[test]
fn compose_templates() {
    let files = compose::files(&fixture());
    assert_golden(
        "compose.yaml",
        &find(&files, "deploy/compose.yaml").contents,
    );
    assert_golden(
        "postgres-init.sql",
        &find(&files, "deploy/compose/postgres-init.sql").contents,
    );
    assert_golden(
        "orders.secrets.toml",
        &find(&files, "deploy/compose/secrets/orders.toml").contents,
    );
}

#[test]
fn k8s_templates() {
    let files = k8s::files(&fixture());
    for (path, golden) in [
        ("deploy/k8s/base/orders.yaml", "k8s-orders.yaml"),
        ("deploy/k8s/base/stock.yaml", "k8s-stock.yaml"),
        ("deploy/k8s/base/common.yaml", "k8s-common.yaml"),
        ("deploy/k8s/overlays/dev/kustomization.yaml", "k8s-dev.yaml"),
        (
            "deploy/k8s/components/cert-manager/certificates.yaml",
            "k8s-certificates.yaml",
        ),
    ] {
        assert_golden(golden, &find(&files, path).contents);
    }
    assert!(find(&files, "deploy/k8s/overlays/prod/images/kustomization.yaml").seed);
}

#[test]
fn ci_template() {
    let ws = Workspace::read(&root()).unwrap();
    let orders = manifest::load(&root().join("services/orders/service.toml")).unwrap();
    let file = ci::workflow(&ws, &orders).unwrap();
    assert_golden("orders.workflow.yml", &file.contents);
    for dep in ["crates/kit/**", "crates/proto/**", "crates/kit-saga/**"] {
        assert!(
            file.contents.contains(dep),
            "orders' workflow watches {dep}"
        );
    }
}

#[test]
fn committed_files_are_what_gen_writes() {
    let root = root();
    let files = generate_all(&root).unwrap();
    // Regenerated into a fresh directory, every file matches the committed one.
    let scratch = tempfile::tempdir().unwrap();
    for f in &files {
        let path = scratch.path().join(&f.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &f.contents).unwrap();
        if f.seed {
            continue;
        }
        let committed = std::fs::read_to_string(root.join(&f.path)).unwrap_or_default();
        let generated = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == generated,
            "{} differs from what `flotilla gen all` writes; run it and commit the result",
            f.path.display()
        );
    }
    // And nothing generated-looking is left over from a removed service.
    let generated: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    for dir in [
        "deploy/k8s/base",
        ".github/workflows",
        "deploy/compose/secrets",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(&root).unwrap();
            assert!(
                generated.contains(&rel),
                "{} is not generated any more",
                rel.display()
            );
        }
    }
}

#[test]
fn manifests_agree_with_the_code() {
    let manifests = manifest::load_all(&root()).unwrap();
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        {
            let mut n = crate::services::NAMES.to_vec();
            n.sort();
            n
        },
        names,
        "one manifest per service"
    );
    // The calls are exactly the default call policy's (registry and bus, which every
    // service may call, are not deployed in a cluster).
    let policy = kit::security::mtls::CallPolicy::default();
    for caller in &manifests {
        for callee in manifests.iter().filter(|m| m.cluster) {
            assert_eq!(
                caller.calls.contains(&callee.name),
                policy.allows(&caller.name, &callee.name),
                "{} → {}: services/{}/service.toml and the call policy disagree",
                caller.name,
                callee.name,
                caller.name
            );
        }
    }
    // gRPC port where the service serves gRPC; bus where it uses the event bus.
    for m in &manifests {
        let lib = std::fs::read_to_string(root().join(format!("services/{}/src/lib.rs", m.name)))
            .unwrap();
        assert_eq!(
            m.ports.grpc.is_some(),
            lib.contains(".grpc("),
            "{}: grpc",
            m.name
        );
        if m.cluster {
            assert_eq!(m.bus, lib.contains("kit_events::"), "{}: bus", m.name);
        }
        let cargo = std::fs::read_to_string(root().join(format!("services/{}/Cargo.toml", m.name)))
            .unwrap();
        assert!(
            cargo.contains(&format!("name = \"{}\"", m.bin())),
            "{}: binary",
            m.name
        );
    }
}
