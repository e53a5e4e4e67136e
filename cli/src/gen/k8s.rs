//! `gen k8s`: a Kustomize base and `dev`/`prod` overlays under `deploy/k8s/`.
//!
//! Per service: a ServiceAccount without API access, a ConfigMap, a Service (headless
//! where clients balance themselves, which is every internal one), a Deployment (probes
//! on the admin port, requests and limits, non-root with a read-only root file system
//! and no capabilities, spread over zones and nodes, the store URL from a Secret by
//! `secretKeyRef`, its mTLS certificate mounted from a cert-manager style Secret), a
//! HorizontalPodAutoscaler, a PodDisruptionBudget and a NetworkPolicy that lets in
//! exactly the callers the manifests name and lets out exactly the callees, the
//! datastore the service owns and the bus. Everything else is denied. Datastores and
//! NATS are not deployed here: they live in the namespace [`DATA_NAMESPACE`], run by
//! operators or replaced by managed services (docs/deploy.md).

use std::fmt::Write as _;

use super::File;
use super::header;
use super::manifest::{self, Manifest};

/// Where the datastores and NATS are expected (operators or external names).
pub const DATA_NAMESPACE: &str = "flotilla-data";
/// The image registry the overlays pull from (CI pushes there).
pub const IMAGE_REGISTRY: &str = "ghcr.io/flotilla-rs";
/// Where the mTLS material is mounted.
const TLS_DIR: &str = "/etc/flotilla/tls";

const LABEL: &str = "app.kubernetes.io/name";

/// Every file `gen k8s` writes.
pub fn files(manifests: &[Manifest]) -> Vec<File> {
    let services: Vec<&Manifest> = manifests.iter().filter(|m| m.cluster).collect();
    let mut files = vec![
        File::new("deploy/k8s/base/kustomization.yaml", base(&services)),
        File::new("deploy/k8s/base/common.yaml", common()),
    ];
    for m in &services {
        files.push(File::new(
            format!("deploy/k8s/base/{}.yaml", m.name),
            service(m, &services),
        ));
    }
    files.push(File::new(
        "deploy/k8s/components/cert-manager/kustomization.yaml",
        cert_manager_kustomization(),
    ));
    files.push(File::new(
        "deploy/k8s/components/cert-manager/certificates.yaml",
        certificates(&services),
    ));
    for overlay in ["dev", "prod"] {
        let dir = format!("deploy/k8s/overlays/{overlay}");
        files.push(File::new(
            format!("{dir}/kustomization.yaml"),
            overlay_kustomization(overlay),
        ));
        files.push(File::new(
            format!("{dir}/namespace.yaml"),
            namespace(overlay),
        ));
        files.push(File::seed(
            format!("{dir}/images/kustomization.yaml"),
            images(&services),
        ));
    }
    files
}

/// The namespace of an overlay.
pub fn namespace_of(overlay: &str) -> &'static str {
    if overlay == "prod" {
        "flotilla"
    } else {
        "flotilla-dev"
    }
}

fn base(services: &[&Manifest]) -> String {
    let mut out = header("#", "k8s");
    out.push_str(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         labels:\n  - pairs:\n      app.kubernetes.io/part-of: flotilla\n\
         resources:\n  - common.yaml\n",
    );
    for m in services {
        let _ = writeln!(out, "  - {}.yaml", m.name);
    }
    out
}

fn discovery(namespace: &str) -> String {
    format!(
        "dns://?domain={namespace}.svc.cluster.local&{}&refresh=5s",
        manifest::dns_ports()
    )
}

fn common() -> String {
    let mut out = header("#", "k8s");
    let _ = write!(
        out,
        r#"# Settings every service shares. Services find each other as the A records of their
# headless Services (the kit's DNS resolver); the bus is NATS JetStream.
apiVersion: v1
kind: ConfigMap
metadata:
  name: flotilla-common
data:
  FLOTILLA_DISCOVERY: "{discovery}"
  FLOTILLA_BUS: "nats://nats.{DATA_NAMESPACE}.svc.cluster.local:4222"
  FLOTILLA_LOG: "info"
  # A stopping pod keeps serving this long after it turned unready, so every caller's
  # DNS view (refreshed every 5 s) has dropped it before its listener closes.
  FLOTILLA_DRAIN_DELAY: "6s"
  FLOTILLA_TLS__CA: "{TLS_DIR}/ca.crt"
  FLOTILLA_TLS__CERT: "{TLS_DIR}/tls.crt"
  FLOTILLA_TLS__KEY: "{TLS_DIR}/tls.key"
  FLOTILLA_TLS__TRUST_DOMAIN: "flotilla.local"
---
# Nothing goes in or out unless a policy below allows it.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
spec:
  podSelector: {{}}
  policyTypes:
    - Ingress
    - Egress
---
# Every pod may ask the cluster's DNS (that is how services find each other).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-dns
spec:
  podSelector: {{}}
  policyTypes:
    - Egress
  egress:
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
          podSelector:
            matchLabels:
              k8s-app: kube-dns
      ports:
        - protocol: UDP
          port: 53
        - protocol: TCP
          port: 53
"#,
        discovery = discovery(namespace_of("prod")),
    );
    out
}

fn selector(name: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!("{pad}matchLabels:\n{pad}  {LABEL}: {name}\n")
}

fn service(m: &Manifest, services: &[&Manifest]) -> String {
    let mut out = header("#", "k8s");
    let _ = writeln!(out, "# {}: {}", m.name, m.description);
    service_account(&mut out, m);
    config_map(&mut out, m);
    k8s_service(&mut out, m);
    deployment(&mut out, m);
    autoscaler(&mut out, m);
    disruption_budget(&mut out, m);
    network_policy(&mut out, m, services);
    out
}

fn service_account(out: &mut String, m: &Manifest) {
    let _ = write!(
        out,
        "---\n# No Role is bound to it: the service never talks to the Kubernetes API.\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {}\n\
         automountServiceAccountToken: false\n",
        m.name
    );
}

fn config_map(out: &mut String, m: &Manifest) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}\ndata:\n",
        m.name
    );
    for (k, v) in m.listen_env() {
        let _ = writeln!(out, "  {k}: \"{v}\"");
    }
    for (k, v) in &m.env {
        let _ = writeln!(out, "  {k}: \"{v}\"");
    }
}

fn k8s_service(out: &mut String, m: &Manifest) {
    let why = if m.edge {
        "# The entry point: one virtual IP in front of the gateways (expose it with an\n\
         # Ingress or a LoadBalancer).\n"
    } else {
        "# Headless: DNS answers with every ready pod and callers balance themselves\n\
         # (power of two choices).\n"
    };
    let _ = write!(
        out,
        "---\n{why}apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\nspec:\n",
        m.name
    );
    if !m.edge {
        out.push_str("  clusterIP: None\n");
    }
    let _ = write!(out, "  selector:\n    {LABEL}: {}\n  ports:\n", m.name);
    for (name, port) in m.named_ports() {
        if name == "admin" {
            continue;
        }
        let _ = write!(
            out,
            "    - name: {name}\n      port: {port}\n      targetPort: {name}\n"
        );
    }
}

fn deployment(out: &mut String, m: &Manifest) {
    let name = &m.name;
    let r = &m.resources;
    let _ = write!(
        out,
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations:
    checkov.io/skip1: CKV_K8S_43=Images are pinned by tag per commit (the overlay's images component, which CI updates); pin digests there if your policy asks
    checkov.io/skip2: CKV_K8S_35=The kit reads secret settings from FLOTILLA_* variables (secretKeyRef); private keys are mounted files
spec:
  replicas: {replicas}
  revisionHistoryLimit: 5
  selector:
{selector}  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {LABEL}: {name}
      # Prometheus scrapes the admin listener (plain HTTP): deploy/observability.
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "{admin}"
        prometheus.io/path: /metrics
    spec:
      serviceAccountName: {name}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
{spread}        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
{spread}      containers:
        - name: {name}
          image: flotilla/{name}
          imagePullPolicy: Always
          ports:
"#,
        replicas = m.replicas,
        admin = m.ports.admin,
        selector = selector(name, 4),
        spread = selector(name, 12),
    );
    for (port_name, port) in m.named_ports() {
        let _ = write!(
            out,
            "            - name: {port_name}\n              containerPort: {port}\n              protocol: TCP\n"
        );
    }
    let _ = write!(
        out,
        "          envFrom:\n            - configMapRef:\n                name: flotilla-common\n\
         \x20           - configMapRef:\n                name: {name}\n"
    );
    let secrets = m.all_secrets();
    if !secrets.is_empty() {
        out.push_str("          env:\n");
    }
    for s in secrets {
        let _ = write!(
            out,
            "            - name: {}\n              valueFrom:\n                secretKeyRef:\n                  name: {name}\n                  key: {}\n",
            m.env_name(&s.setting),
            s.key
        );
        if s.optional {
            out.push_str("                  optional: true\n");
        }
    }
    let probe = |path: &str, period: u32, failures: u32| {
        format!(
            "            httpGet:\n              path: {path}\n              port: admin\n            periodSeconds: {period}\n            failureThreshold: {failures}\n"
        )
    };
    let _ = write!(
        out,
        "          startupProbe:\n{}          livenessProbe:\n{}          readinessProbe:\n{}",
        probe("/healthz", 2, 30),
        probe("/healthz", 10, 3),
        probe("/readyz", 5, 2),
    );
    let _ = write!(
        out,
        r#"          resources:
            requests:
              cpu: "{cpu}"
              memory: "{memory}"
            limits:
              cpu: "{cpu_limit}"
              memory: "{memory_limit}"
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities:
              drop:
                - ALL
          volumeMounts:
            - name: data
              mountPath: {data}
            - name: tls
              mountPath: {TLS_DIR}
              readOnly: true
      volumes:
        - name: data
          emptyDir:
            sizeLimit: 256Mi
        # The service's certificate (URI SAN spiffe://flotilla.local/{name}), its key and
        # the CA: a kubernetes.io/tls Secret with ca.crt, as cert-manager writes it.
        # Optional only so that a mesh setup (FLOTILLA_INSECURE_INTERNAL=1) can do
        # without it; with mTLS on, a missing file stops the service naming the setting.
        - name: tls
          secret:
            secretName: {name}-tls
            defaultMode: 0440
            optional: true
"#,
        cpu = r.cpu,
        memory = r.memory,
        cpu_limit = r.cpu_limit,
        memory_limit = r.memory_limit,
        data = super::dockerfile::DATA_DIR,
    );
}

fn autoscaler(out: &mut String, m: &Manifest) {
    let _ = write!(
        out,
        r#"---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {name}
  minReplicas: {min}
  maxReplicas: {max}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {cpu}
"#,
        name = m.name,
        min = m.replicas,
        max = m.autoscale.max,
        cpu = m.autoscale.cpu_percent,
    );
}

fn disruption_budget(out: &mut String, m: &Manifest) {
    let _ = write!(
        out,
        "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {}\n\
         spec:\n  maxUnavailable: 1\n  selector:\n{}",
        m.name,
        selector(&m.name, 4)
    );
}

/// The ports of `m` that callers use (not admin).
fn call_ports(m: &Manifest) -> Vec<(&'static str, u16)> {
    m.named_ports()
        .into_iter()
        .filter(|(n, _)| *n != "admin")
        .collect()
}

fn ports_block(out: &mut String, ports: &[u16]) {
    out.push_str("      ports:\n");
    for port in ports {
        let _ = write!(out, "        - protocol: TCP\n          port: {port}\n");
    }
}

fn network_policy(out: &mut String, m: &Manifest, services: &[&Manifest]) {
    let name = &m.name;
    let _ = write!(
        out,
        "---\n# In: the callers the call policy names, and metrics scrapers on the admin port.\n\
         # Out: the callees, the datastore {name} owns, the bus.\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n\
         spec:\n  podSelector:\n{}  policyTypes:\n    - Ingress\n    - Egress\n  ingress:\n",
        selector(name, 4)
    );
    let own_ports: Vec<u16> = call_ports(m).into_iter().map(|(_, p)| p).collect();
    if m.edge {
        out.push_str("    # Any client: the gateway is the edge.\n    - ports:\n");
        let _ = write!(
            out,
            "        - protocol: TCP\n          port: {}\n",
            m.ports.http
        );
    }
    let callers: Vec<&str> = services
        .iter()
        .filter(|c| c.calls.contains(name))
        .map(|c| c.name.as_str())
        .collect();
    if !callers.is_empty() {
        out.push_str("    - from:\n");
        for caller in &callers {
            let _ = write!(out, "        - podSelector:\n{}", selector(caller, 12));
        }
        ports_block(out, &own_ports);
    }
    let _ = write!(
        out,
        "    - from:\n        - namespaceSelector:\n            matchLabels:\n              \
         kubernetes.io/metadata.name: monitoring\n"
    );
    ports_block(out, &[m.ports.admin]);
    out.push_str("  egress:\n");
    for callee in &m.calls {
        let Some(c) = services.iter().find(|s| &s.name == callee) else {
            continue;
        };
        let _ = write!(
            out,
            "    - to:\n        - podSelector:\n{}",
            selector(callee, 12)
        );
        let ports: Vec<u16> = call_ports(c).into_iter().map(|(_, p)| p).collect();
        ports_block(out, &ports);
    }
    let mut data: Vec<(&str, u16)> = Vec::new();
    if let Some(store) = &m.store {
        data.push((store.kind.host(), store.kind.port()));
    }
    if m.bus {
        data.push(("nats", 4222));
    }
    for (host, port) in data {
        let _ = write!(
            out,
            "    - to:\n        - namespaceSelector:\n            matchLabels:\n              \
             kubernetes.io/metadata.name: {DATA_NAMESPACE}\n          podSelector:\n{}",
            selector(host, 12)
        );
        ports_block(out, &[port]);
    }
    for e in &m.egress {
        let _ = write!(
            out,
            "    # {}: outside the cluster.\n    - to:\n        - ipBlock:\n            cidr: 0.0.0.0/0\n",
            e.name
        );
        ports_block(out, &[e.port]);
    }
}

fn cert_manager_kustomization() -> String {
    let mut out = header("#", "k8s");
    out.push_str(
        "# Optional: certificates for the services' mTLS from cert-manager, signed by the CA\n\
         # in the Secret flotilla-ca. Add `components: [../../components/cert-manager]` to an\n\
         # overlay (after installing cert-manager), or create the <service>-tls Secrets\n\
         # yourself. See docs/deploy.md.\n\
         apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n  - certificates.yaml\n",
    );
    out
}

fn certificates(services: &[&Manifest]) -> String {
    let mut out = header("#", "k8s");
    out.push_str(
        "apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata:\n  name: flotilla-ca\n\
         spec:\n  ca:\n    secretName: flotilla-ca\n",
    );
    for m in services {
        let _ = write!(
            out,
            r#"---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {name}
spec:
  secretName: {name}-tls
  uris:
    - spiffe://flotilla.local/{name}
  usages:
    - digital signature
    - key encipherment
    - server auth
    - client auth
  duration: 2160h
  renewBefore: 360h
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  issuerRef:
    name: flotilla-ca
    kind: Issuer
"#,
            name = m.name
        );
    }
    out
}

fn overlay_kustomization(overlay: &str) -> String {
    let ns = namespace_of(overlay);
    let mut out = header("#", "k8s");
    let _ = write!(
        out,
        "# kubectl apply -k deploy/k8s/overlays/{overlay}\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         namespace: {ns}\nresources:\n  - namespace.yaml\n  - ../../base\n\
         # Image names and tags: each service's CI workflow updates its own line there.\n\
         components:\n  - images\n"
    );
    if overlay == "prod" {
        return out;
    }
    let _ = write!(
        out,
        r#"# One instance of each service is enough here.
patches:
  - target:
      kind: Deployment
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 1
  - target:
      kind: HorizontalPodAutoscaler
    patch: |-
      - op: replace
        path: /spec/minReplicas
        value: 1
  - target:
      kind: ConfigMap
      name: flotilla-common
    patch: |-
      - op: replace
        path: /data/FLOTILLA_DISCOVERY
        value: "{discovery}"
      - op: replace
        path: /data/FLOTILLA_LOG
        value: "debug"
"#,
        discovery = discovery(ns)
    );
    out
}

fn namespace(overlay: &str) -> String {
    let mut out = header("#", "k8s");
    let _ = write!(
        out,
        "# Pods here must meet the `restricted` Pod Security Standard.\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n    \
         pod-security.kubernetes.io/warn: restricted\n",
        namespace_of(overlay)
    );
    out
}

/// The overlay's image names and tags (seeded once; CI owns it afterwards).
fn images(services: &[&Manifest]) -> String {
    let mut out = String::from(
        "# Written once by `flotilla gen k8s`; since then each service's CI workflow sets its\n\
         # image tag here (`kustomize edit set image`). Not compared by `gen --check`.\n\
         apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nimages:\n",
    );
    let version = env!("CARGO_PKG_VERSION");
    for m in services {
        let _ = write!(
            out,
            "  - name: flotilla/{name}\n    newName: {IMAGE_REGISTRY}/flotilla-{name}\n    newTag: \"{version}\"\n",
            name = m.name
        );
    }
    out
}
