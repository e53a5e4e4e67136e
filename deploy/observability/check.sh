#!/usr/bin/env bash
# Static checks of deploy/observability: both Prometheus configs, the rules and their
# unit tests (promtool), the Grafana dashboard (its JSON, its shape, and every PromQL
# expression in it), and that every metric the rules and the dashboard name is one the
# code exports. One line per check that passed; non-zero on the first failure.
#
#   deploy/observability/check.sh        (PROMTOOL=/path/to/promtool to choose one)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=/opt/flotilla-deploy
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "check.sh: $*" >&2; exit 1; }

# promtool: $PROMTOOL, one on PATH, one unpacked under $tools/prometheus, or Debian's
# package `prometheus`. Installing that package must not leave its daemon running or
# enabled: policy-rc.d keeps it from starting, then it is disabled.
find_promtool() {
  local p
  for p in "${PROMTOOL:-}" "$(command -v promtool 2>/dev/null || true)" "$tools/prometheus/promtool"; do
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
  done
  [ "$(id -u)" = 0 ] || fail "promtool not found and not root to install it (set PROMTOOL)"
  echo "installing promtool (Debian package prometheus)" >&2
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$policy"
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    systemctl disable prometheus >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
    if [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
      /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
  fi
  command -v promtool || fail "the package prometheus did not install promtool"
}

# A Python with PyYAML: the system's, or a virtual environment under $tools.
find_python() {
  if python3 -c 'import yaml' 2>/dev/null; then echo python3; return 0; fi
  local venv=$tools/observability
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    echo "installing PyYAML into $venv" >&2
    python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q --disable-pip-version-check pyyaml >&2 ||
      fail "cannot set up a Python with PyYAML"
  fi
  echo "$venv/bin/python"
}

promtool=$(find_promtool)
python=$(find_python)
prom=$here/prometheus
rules=$prom/rules/flotilla.rules.yml
dashboard=$here/grafana/flotilla.json

"$promtool" check config "$prom/prometheus.yml" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "prometheus.yml"; }
echo "promtool check config: prometheus/prometheus.yml valid"

# Some builds of promtool (Debian's among them) leave out Kubernetes discovery. With
# one of those, the kubernetes_sd_configs blocks are checked against their schema
# here and promtool checks the rest of the file (each block replaced by an empty
# static list).
printf 'scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n      - role: pod\n' >"$tmp/probe.yml"
if "$promtool" check config --syntax-only "$tmp/probe.yml" >/dev/null 2>&1; then
  "$promtool" check config "$prom/prometheus-k8s.yml" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "prometheus-k8s.yml"; }
  echo "promtool check config: prometheus/prometheus-k8s.yml valid"
else
  mkdir -p "$tmp/k8s"
  ln -s "$prom/rules" "$tmp/k8s/rules"
  "$python" - "$prom/prometheus-k8s.yml" "$tmp/k8s/prometheus.yml" <<'EOF' || fail "prometheus-k8s.yml: kubernetes_sd_configs"
import re, sys, yaml
src, dst = sys.argv[1:]
cfg = yaml.safe_load(open(src))
allowed = {"api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
           "basic_auth", "authorization", "oauth2", "follow_redirects", "enable_http2",
           "tls_config", "proxy_url", "no_proxy", "proxy_from_environment", "proxy_connect_header",
           "bearer_token", "bearer_token_file"}
roles = {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}
meta = {"pod": "__meta_kubernetes_pod_", "node": "__meta_kubernetes_node_",
        "service": "__meta_kubernetes_service_", "ingress": "__meta_kubernetes_ingress_"}
found = 0
for job in cfg["scrape_configs"]:
    sds = job.pop("kubernetes_sd_configs", None)
    if sds is None:
        continue
    for sd in sds:
        found += 1
        where = f"job {job['job_name']}"
        extra = set(sd) - allowed
        if extra:
            sys.exit(f"{where}: unknown kubernetes_sd_configs fields {sorted(extra)}")
        role = sd.get("role")
        if role not in roles:
            sys.exit(f"{where}: role {role!r} is not one of {sorted(roles)}")
        ns = sd.get("namespaces", {})
        if set(ns) - {"names", "own_namespace"} or not all(isinstance(n, str) for n in ns.get("names", [])):
            sys.exit(f"{where}: namespaces must be {{names: [..], own_namespace: bool}}")
        # Meta labels a relabelling reads must be ones this role produces.
        prefix = meta.get(role)
        for rc in job.get("relabel_configs", []):
            for label in rc.get("source_labels", []):
                if prefix and label.startswith("__meta_kubernetes_") and not (
                        label.startswith(prefix) or label.startswith("__meta_kubernetes_namespace")):
                    sys.exit(f"{where}: role {role} has no meta label {label}")
    job["static_configs"] = [{"targets": []}]
if not found:
    sys.exit("no kubernetes_sd_configs in the Kubernetes config")
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
EOF
  "$promtool" check config "$tmp/k8s/prometheus.yml" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "prometheus-k8s.yml"; }
  echo "promtool check config: prometheus/prometheus-k8s.yml valid (kubernetes_sd_configs checked by schema: this promtool has no Kubernetes discovery)"
fi

"$promtool" check rules "$rules" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "rules"; }
echo "promtool check rules: prometheus/rules/flotilla.rules.yml valid ($(grep -o '[0-9]* rules found' "$tmp/out"))"

(cd "$prom/rules" && "$promtool" test rules flotilla.rules.test.yml) >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "rule tests"; }
echo "promtool test rules: prometheus/rules/flotilla.rules.test.yml passed"

"$python" -m json.tool "$dashboard" >/dev/null || fail "grafana/flotilla.json is not JSON"
echo "json: grafana/flotilla.json parses"

# The dashboard's shape, and its expressions as a rules file for promtool (Grafana's
# variables replaced by values of the same kind).
"$python" - "$dashboard" "$tmp/dashboard.rules.yml" <<'EOF' || fail "grafana/flotilla.json"
import json, re, sys, yaml
src, dst = sys.argv[1:]
d = json.load(open(src))
if d.get("schemaVersion", 0) < 39:
    sys.exit(f"schemaVersion {d.get('schemaVersion')} < 39")
variables = {v["name"]: v for v in d["templating"]["list"]}
if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
    sys.exit("no datasource variable DS_PROMETHEUS")
if variables.get("service", {}).get("type") != "query":
    sys.exit("no query variable service")
ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
ids, exprs = set(), []
for p in panels(d["panels"]):
    if p["id"] in ids:
        sys.exit(f"panel id {p['id']} used twice")
    ids.add(p["id"])
    if p["type"] == "row":
        continue
    if p.get("datasource") != ds:
        sys.exit(f"panel {p['title']!r}: datasource is not ${{DS_PROMETHEUS}}")
    if not p.get("targets"):
        sys.exit(f"panel {p['title']!r} has no query")
    for t in p["targets"]:
        if t.get("datasource") != ds:
            sys.exit(f"panel {p['title']!r} query {t['refId']}: datasource is not ${{DS_PROMETHEUS}}")
        exprs.append((p["title"], t["expr"]))
lv = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variables["service"]["query"]["query"])
if not lv:
    sys.exit("variable service: not a label_values(selector, label) query")
exprs.append(("variable service", f"group by ({lv[2]}) ({lv[1]})"))
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "${service}": ".*", "$service": ".*"}
rules = []
for i, (title, e) in enumerate(exprs):
    for k, v in subst.items():
        e = e.replace(k, v)
    if "$" in e:
        sys.exit(f"{title}: unknown variable in {e}")
    rules.append({"record": f"dashboard:expr_{i}", "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(dst, "w"), sort_keys=False)
EOF
"$promtool" check rules "$tmp/dashboard.rules.yml" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "a PromQL expression of grafana/flotilla.json"; }
echo "promtool: every PromQL expression of grafana/flotilla.json parses ($(grep -o '[0-9]* rules found' "$tmp/out" | cut -d' ' -f1) expressions)"

# Every metric the rules and the dashboard select must be exported: by a
# counter!/gauge!/histogram! in crates/ or services/ (histograms as _bucket, _sum,
# _count), by Prometheus (up), or by prometheus-nats-exporter (jetstream_*).
"$python" - "$repo" "$rules" "$dashboard" <<'EOF' || fail "a metric the rules or the dashboard use is not exported"
import json, pathlib, re, sys, yaml
repo, rules, dashboard = sys.argv[1:]
exported = {"up"}
for f in list(pathlib.Path(repo, "crates").rglob("*.rs")) + list(pathlib.Path(repo, "services").rglob("*.rs")):
    for kind, name in re.findall(r'\b(counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', f.read_text()):
        exported.add(name)
        if kind == "histogram":
            exported |= {name + "_bucket", name + "_sum", name + "_count"}
exprs = []
for g in yaml.safe_load(open(rules))["groups"]:
    for r in g["rules"]:
        exprs.append(r["expr"])
        if "record" in r:
            exported.add(r["record"])
def walk(ps):
    for p in ps:
        yield from (t["expr"] for t in p.get("targets", []))
        yield from walk(p.get("panels", []))
exprs += list(walk(json.load(open(dashboard))["panels"]))
missing = set()
for e in exprs:
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)
    for name in re.findall(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{', e):
        if name not in exported and not name.startswith("jetstream_"):
            missing.add(name)
if missing:
    sys.exit(f"not exported by any service: {sorted(missing)}")
EOF
echo "metrics: every metric the rules and the dashboard select is exported by the code (or by Prometheus / prometheus-nats-exporter)"

if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f "$here/compose.yaml" config -q || fail "compose.yaml"
  echo "docker-compose: compose.yaml valid"
else
  echo "check.sh: docker-compose not installed; compose.yaml not checked" >&2
fi
