//! `gen compose`: `deploy/compose.yaml` — PostgreSQL, MariaDB, Redis and NATS
//! JetStream with health checks, every service built from its Dockerfile and started
//! once what it needs is healthy, its secrets as files, one database and user per service
//! created by init scripts, and an `observability` profile with Jaeger.
//!
//! Services find each other through Docker's DNS with the kit's `dns://` resolver (the
//! same path as in Kubernetes); internal traffic is plain text here (see docs/deploy.md).

use std::fmt::Write as _;

use super::File;
use super::header;
use super::manifest::{self, Manifest, StoreKind};

/// The discovery URL in compose: Docker's DNS, the ports every container uses.
fn discovery() -> String {
    format!("dns://?{}&refresh=2s", manifest::dns_ports())
}

/// The development password of `service` in its datastore.
fn password(service: &str) -> String {
    format!("{service}-dev-password")
}

/// The store URL of a service in compose.
fn store_url(m: &Manifest) -> Option<String> {
    let store = m.store.as_ref()?;
    let (name, host, port) = (&m.name, store.kind.host(), store.kind.port());
    Some(match store.kind {
        StoreKind::Postgres => format!("postgres://{name}:{}@{host}:{port}/{name}", password(name)),
        StoreKind::Mysql => format!("mysql://{name}:{}@{host}:{port}/{name}", password(name)),
        StoreKind::Redis => format!("redis://{host}:{port}/{}", store.database.unwrap_or(0)),
    })
}

/// NATS's configuration: JetStream on the volume, fsync on every write (without
/// `sync_interval` JetStream fsyncs every 2 minutes; see `docs/infra.md`).
const NATS_CONF: &str = "# NATS for docker compose: JetStream on the volume, fsync on every write.
# Without sync_interval JetStream fsyncs every 2 minutes, so an acknowledged event can
# be lost if the machine (not just the process) goes down: see docs/infra.md.
http_port: 8222
jetstream {
  store_dir: /data
  sync_interval: always
}
";

/// Every file `gen compose` writes.
pub fn files(manifests: &[Manifest]) -> Vec<File> {
    let services: Vec<&Manifest> = manifests.iter().filter(|m| m.cluster).collect();
    let mut files = vec![File::new("deploy/compose.yaml", compose(&services))];
    files.push(File::new(
        "deploy/compose/postgres-init.sql",
        postgres_init(&services),
    ));
    files.push(File::new(
        "deploy/compose/mariadb-init.sql",
        mariadb_init(&services),
    ));
    files.push(File::new("deploy/compose/nats.conf", NATS_CONF.to_owned()));
    for m in &services {
        files.push(File::new(
            format!("deploy/compose/secrets/{}.toml", m.name),
            secret_file(m),
        ));
    }
    for (name, value) in [
        ("postgres-password", "postgres"),
        ("mariadb-password", "mariadb"),
    ] {
        files.push(File::new(
            format!("deploy/compose/secrets/{name}"),
            format!("{value}-dev-password\n"),
        ));
    }
    files
}

fn uses(services: &[&Manifest], kind: StoreKind) -> Vec<String> {
    services
        .iter()
        .filter(|m| m.store.as_ref().is_some_and(|s| s.kind == kind))
        .map(|m| m.name.clone())
        .collect()
}

fn postgres_init(services: &[&Manifest]) -> String {
    let mut out = header("--", "compose");
    out.push_str(
        "-- One database and one user per service that keeps its data in PostgreSQL; the\n\
         -- user owns its database and nothing else. Development passwords only.\n",
    );
    for name in uses(services, StoreKind::Postgres) {
        let _ = write!(
            out,
            "\nCREATE USER {name} WITH PASSWORD '{}';\n\
             CREATE DATABASE {name} OWNER {name};\n\
             REVOKE ALL ON DATABASE {name} FROM PUBLIC;\n",
            password(&name)
        );
    }
    out
}

fn mariadb_init(services: &[&Manifest]) -> String {
    let mut out = header("--", "compose");
    out.push_str(
        "-- One database and one user per service that keeps its data in MariaDB, with\n\
         -- rights on that database only. Development passwords only.\n",
    );
    for name in uses(services, StoreKind::Mysql) {
        let _ = write!(
            out,
            "\nCREATE DATABASE {name};\n\
             CREATE USER '{name}'@'%' IDENTIFIED BY '{}';\n\
             GRANT ALL PRIVILEGES ON {name}.* TO '{name}'@'%';\n",
            password(&name)
        );
    }
    out
}

/// The service's secret settings as a config file (`FLOTILLA_CONFIG`).
fn secret_file(m: &Manifest) -> String {
    let mut out = header("#", "compose");
    let _ = writeln!(
        out,
        "# {}'s secret settings under compose (development values), mounted as\n\
         # /run/secrets/{}.toml and read through FLOTILLA_CONFIG.\n[{}]",
        m.name, m.name, m.name
    );
    if let (Some(store), Some(url)) = (&m.store, store_url(m)) {
        let _ = writeln!(out, "{} = \"{url}\"", store.setting);
    }
    out
}

fn compose(services: &[&Manifest]) -> String {
    let mut out = header("#", "compose");
    out.push_str(
        "#\n\
         # The whole system on one machine with real infrastructure:\n\
         #   docker compose -p flotilla -f deploy/compose.yaml up --build\n\
         #   docker compose -p flotilla -f deploy/compose.yaml --profile observability up --build\n\
         # The gateway answers on http://127.0.0.1:8080. See docs/deploy.md.\n\
         services:\n",
    );
    out.push_str(INFRASTRUCTURE);
    for m in services {
        service(&mut out, m);
    }
    out.push_str("\nsecrets:\n");
    for name in ["postgres-password", "mariadb-password"] {
        let _ = writeln!(out, "  {name}:\n    file: ./compose/secrets/{name}");
    }
    for m in services {
        let _ = writeln!(
            out,
            "  {}:\n    file: ./compose/secrets/{}.toml",
            m.name, m.name
        );
    }
    out.push_str("\nvolumes:\n  postgres:\n  mariadb:\n  redis:\n  nats:\n");
    for m in services {
        let _ = writeln!(out, "  {}-data:", m.name);
    }
    out
}

/// The datastores, NATS and the optional trace viewer.
const INFRASTRUCTURE: &str = r#"  postgres:
    image: postgres:17.6-alpine
    environment:
      POSTGRES_PASSWORD_FILE: /run/secrets/postgres-password
    secrets:
      - postgres-password
    volumes:
      - postgres:/var/lib/postgresql/data
      - ./compose/postgres-init.sql:/docker-entrypoint-initdb.d/10-flotilla.sql:ro
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 5s
      timeout: 3s
      retries: 30

  mariadb:
    image: mariadb:11.4
    environment:
      MARIADB_ROOT_PASSWORD_FILE: /run/secrets/mariadb-password
    secrets:
      - mariadb-password
    volumes:
      - mariadb:/var/lib/mysql
      - ./compose/mariadb-init.sql:/docker-entrypoint-initdb.d/10-flotilla.sql:ro
    healthcheck:
      test: ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]
      interval: 5s
      timeout: 3s
      retries: 30

  redis:
    image: redis:7.4-alpine
    command: ["redis-server", "--appendonly", "yes"]
    volumes:
      - redis:/data
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 5s
      timeout: 3s
      retries: 30

  nats:
    image: nats:2.11-alpine
    command: ["-c", "/etc/nats/nats.conf"]
    volumes:
      - nats:/data
      - ./compose/nats.conf:/etc/nats/nats.conf:ro
    healthcheck:
      test: ["CMD", "wget", "-q", "--spider", "http://127.0.0.1:8222/healthz?js-enabled-only=true"]
      interval: 5s
      timeout: 3s
      retries: 30

  # Traces: FLOTILLA_OTLP_ENDPOINT=http://jaeger:4318 (see docs/deploy.md), UI on :16686.
  jaeger:
    image: jaegertracing/all-in-one:1.74.0
    profiles: ["observability"]
    ports:
      - "127.0.0.1:16686:16686"
"#;

fn service(out: &mut String, m: &Manifest) {
    let name = &m.name;
    let _ = write!(
        out,
        "\n  {name}:\n    \
         build:\n      context: ..\n      dockerfile: services/{name}/Dockerfile\n    \
         image: flotilla/{name}:dev\n    \
         environment:\n      \
         FLOTILLA_CONFIG: /run/secrets/{name}.toml\n      \
         FLOTILLA_DISCOVERY: \"{}\"\n",
        discovery()
    );
    if m.bus {
        out.push_str("      FLOTILLA_BUS: nats://nats:4222\n");
    }
    out.push_str("      FLOTILLA_INSECURE_INTERNAL: \"1\"\n");
    for (k, v) in &m.env {
        let _ = writeln!(out, "      {k}: \"{v}\"");
    }
    let _ = write!(
        out,
        "    secrets:\n      - source: {name}\n        target: {name}.toml\n    \
         volumes:\n      - {name}-data:/var/lib/flotilla\n    \
         read_only: true\n    \
         cap_drop:\n      - ALL\n    \
         security_opt:\n      - no-new-privileges:true\n"
    );
    if m.edge {
        let _ = write!(out, "    ports:\n      - \"8080:{}\"\n", m.ports.http);
    }
    let mut needs: Vec<&str> = Vec::new();
    if let Some(store) = &m.store {
        needs.push(store.kind.host());
    }
    if m.bus {
        needs.push("nats");
    }
    needs.extend(m.calls.iter().map(String::as_str));
    if !needs.is_empty() {
        out.push_str("    depends_on:\n");
        for need in needs {
            let _ = write!(out, "      {need}:\n        condition: service_healthy\n");
        }
    }
    let _ = write!(
        out,
        "    healthcheck:\n      \
         test: [\"CMD\", \"/usr/local/bin/{}\", \"healthcheck\"]\n      \
         interval: 5s\n      timeout: 3s\n      retries: 30\n",
        m.bin()
    );
}
