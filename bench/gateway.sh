#!/usr/bin/env bash
# Gateway throughput benchmark: inventory directly vs. through the Flotilla gateway vs.
# through nginx (reverse proxy with upstream keep-alive), all with the same wrk settings,
# plus the gateway with JWT verification and rate limiting on (the same route, every
# request carrying a bearer token and charged to a bucket) against the plain gateway
# (both off), then the start-up time and idle memory of `flotilla up` (bench/footprint.sh).
#
#   bench/gateway.sh                     # build, install wrk+nginx if needed, run, write docs/benchmarks.md
#
# Environment:
#   BENCH_DURATION=15s     wrk duration of each measured run
#   BENCH_WARMUP=3s        wrk warm-up before each measured run
#   BENCH_CONNECTIONS=64   wrk connections
#   BENCH_THREADS=2        wrk threads
#   BENCH_ROUNDS=3         interleaved rounds (direct, gateway, nginx, …) per path; medians reported
#   BENCH_PATHS="/api/products/FLT-BOAT-001 /api/products?limit=20"
#   BENCH_GATEWAY_INFO=1   also measure the gateway with FLOTILLA_LOG=info (the default filter)
#   BENCH_GATEWAY_AUTH=1   also measure the gateway with JWT verification + rate limiting on
#                          (needs openssl and python3: a JWKS is served from a temp dir)
#   BENCH_FOOTPRINT=1      run bench/footprint.sh afterwards (0 to skip)
#   BENCH_NO_BUILD=1       skip `cargo build --release -p flotilla`
#   BENCH_DOC=docs/benchmarks.md
#
# Only loopback is used. Everything started here is stopped on exit (trap EXIT).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN="$ROOT/target/release/flotilla"
DOC=${BENCH_DOC:-docs/benchmarks.md}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
read -r -a PATHS <<<"${BENCH_PATHS:-/api/products/FLT-BOAT-001 /api/products?limit=20}"
GATEWAY_INFO=${BENCH_GATEWAY_INFO:-1}
GATEWAY_AUTH=${BENCH_GATEWAY_AUTH:-1}
COMMAND="bench/gateway.sh${*:+ $*}"
for v in BENCH_DURATION BENCH_WARMUP BENCH_CONNECTIONS BENCH_THREADS BENCH_ROUNDS BENCH_PATHS BENCH_GATEWAY_INFO BENCH_GATEWAY_AUTH; do
    [[ -n ${!v:-} ]] && COMMAND="$v='${!v}' $COMMAND"
done

# nginx proxies plain HTTP to inventory, so the gateway does too: internal mTLS (the
# default under `flotilla up`) is switched off for this comparison of proxies.
export FLOTILLA_INSECURE_INTERNAL=1

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-bench.XXXXXX")
PIDS=()
NGINX_PREFIX=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n $NGINX_PREFIX && -f $NGINX_PREFIX/nginx.pid ]]; then
        nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -s stop 2>/dev/null
    fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- 1. build and tools
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building: cargo build --release -p flotilla"
    timeout 3600 cargo build --release -p flotilla
fi
[[ -x $BIN ]] || die "$BIN is missing"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y wrk nginx
fi
export PATH="$PATH:/usr/sbin"
command -v wrk >/dev/null || die "wrk is not installed"
command -v nginx >/dev/null || die "nginx is not installed"

cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50=%d p90=%d p99=%d max=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

# ---------------------------------------------------------------- 2-4. start the targets
DATA="$TMP/data"
mkdir -p "$DATA" "$TMP/logs"
INV_PORT=$(free_port)
GW_PORT=$(free_port)
GWI_PORT=$(free_port)
GWA_PORT=$(free_port)
NGX_PORT=$(free_port)
PROBE=/api/products/FLT-BOAT-001

log "starting inventory on 127.0.0.1:$INV_PORT"
FLOTILLA_DATA_DIR="$DATA" FLOTILLA_DISCOVERY=static:// FLOTILLA_INVENTORY__SEED=true \
    FLOTILLA_INVENTORY__LISTEN=127.0.0.1:$INV_PORT FLOTILLA_LOG=warn \
    "$BIN" run inventory >"$TMP/logs/inventory.log" 2>&1 &
INV_PID=$!
PIDS+=("$INV_PID")
wait_200 "$INV_PORT" "$PROBE" 30 || { cat "$TMP/logs/inventory.log" >&2; die "inventory did not answer 200 on $PROBE"; }

start_gateway() { # name port log-filter [probe-header [env…]]; sets STARTED_PID
    local name=$1 port=$2 filter=$3 header=${4:-}
    shift $(($# < 4 ? $# : 4))
    env FLOTILLA_DATA_DIR="$DATA" FLOTILLA_DISCOVERY="static://inventory=127.0.0.1:$INV_PORT" \
        FLOTILLA_GATEWAY__LISTEN=127.0.0.1:$port FLOTILLA_LOG=$filter "$@" \
        "$BIN" run gateway >"$TMP/logs/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_200 "$port" "$PROBE" 30 "$header" || { cat "$TMP/logs/$name.log" >&2; die "$name did not answer 200 on $PROBE"; }
}
# The plain gateway: no token needed on this route, rate limiting off.
log "starting gateway on 127.0.0.1:$GW_PORT"
start_gateway gateway "$GW_PORT" warn "" FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED=false
GW_PID=$STARTED_PID
if [[ $GATEWAY_INFO == 1 ]]; then
    log "starting gateway (FLOTILLA_LOG=info) on 127.0.0.1:$GWI_PORT"
    start_gateway gateway-info "$GWI_PORT" info "" FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED=false
    GWI_PID=$STARTED_PID
fi

# The same route closed to anonymous callers: every request carries a bearer token that
# the gateway verifies (EdDSA, against a JWKS served from $TMP/jwks) and is charged to
# the user's bucket (a quota high enough never to refuse, so only the cost is measured).
AUTH_HEADER=""
if [[ $GATEWAY_AUTH == 1 ]]; then
    command -v openssl >/dev/null || die "openssl is needed for BENCH_GATEWAY_AUTH=1"
    command -v python3 >/dev/null || die "python3 is needed for BENCH_GATEWAY_AUTH=1"
    b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
    JWKS_DIR="$TMP/jwks"
    mkdir -p "$JWKS_DIR/.well-known"
    openssl genpkey -algorithm ed25519 -out "$TMP/bench-key.pem" 2>/dev/null
    x=$(openssl pkey -in "$TMP/bench-key.pem" -pubout -outform DER | tail -c 32 | b64url)
    printf '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"bench","alg":"EdDSA","use":"sig","x":"%s"}]}' "$x" \
        >"$JWKS_DIR/.well-known/jwks.json"
    JWKS_PORT=$(free_port)
    python3 -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$JWKS_DIR" >"$TMP/logs/jwks.log" 2>&1 &
    PIDS+=("$!")
    now=$(date +%s)
    h=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"bench"}' | b64url)
    p=$(printf '{"iss":"flotilla-auth","aud":"flotilla","sub":"bench","exp":%d,"iat":%d,"nbf":%d,"jti":"bench-%d","scope":"orders:read","roles":["customer"]}' \
        $((now + 86400)) "$now" "$now" "$now" | b64url)
    printf '%s.%s' "$h" "$p" >"$TMP/signing-input"
    sig=$(openssl pkeyutl -sign -rawin -inkey "$TMP/bench-key.pem" -in "$TMP/signing-input" | b64url)
    AUTH_HEADER="authorization: Bearer $h.$p.$sig"
    cat >"$TMP/gateway-auth.toml" <<EOF
[gateway.jwt]
jwks = "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json"
max_lifetime = "25h"
[gateway.rate_limit]
enabled = true
per_second = 1000000000
burst = 1000000000
[[gateway.routes]]
prefix = "/api/products"
service = "inventory"
scope = "orders:read"
EOF
    log "starting gateway with JWT + rate limiting on 127.0.0.1:$GWA_PORT"
    start_gateway gateway-auth "$GWA_PORT" warn "$AUTH_HEADER" FLOTILLA_CONFIG="$TMP/gateway-auth.toml"
    GWA_PID=$STARTED_PID
    [[ $(status_of "$GWA_PORT" "$PROBE") == 401 ]] || die "gateway-auth answers without a token"
fi

NGINX_PREFIX="$TMP/nginx"
mkdir -p "$NGINX_PREFIX/tmp" "$NGINX_PREFIX/logs"
USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user root root;"
sed -e "s|@PREFIX@|$NGINX_PREFIX|g" -e "s|@LISTEN@|127.0.0.1:$NGX_PORT|g" \
    -e "s|@UPSTREAM@|127.0.0.1:$INV_PORT|g" -e "s|@USER_LINE@|$USER_LINE|g" \
    bench/nginx.conf.tmpl >"$NGINX_PREFIX/nginx.conf"
log "starting nginx on 127.0.0.1:$NGX_PORT"
nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -g 'daemon off;' >"$TMP/logs/nginx.log" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_200 "$NGX_PORT" "$PROBE" 15 || { cat "$TMP/logs/nginx.log" "$NGINX_PREFIX/error.log" >&2; die "nginx did not answer 200"; }
NGX_ALL=("$NGX_PID" $(pgrep -P "$NGX_PID" || true))

# The three answer the same thing.
ref=$(curl -s "http://127.0.0.1:$INV_PORT$PROBE")
for p in "$GW_PORT" "$NGX_PORT"; do
    [[ $(curl -s "http://127.0.0.1:$p$PROBE") == "$ref" ]] || die "port $p does not return the same body as inventory"
done

# ---------------------------------------------------------------- 5. run wrk
TARGETS=(direct gateway nginx)
[[ $GATEWAY_INFO == 1 ]] && TARGETS+=(gateway-info)
[[ $GATEWAY_AUTH == 1 ]] && TARGETS+=(gateway-auth)
declare -A PORT=([direct]=$INV_PORT [gateway]=$GW_PORT [nginx]=$NGX_PORT [gateway-info]=$GWI_PORT [gateway-auth]=$GWA_PORT)
declare -A PROXY_PIDS=([direct]="" [gateway]="$GW_PID" [nginx]="${NGX_ALL[*]}" [gateway-info]="${GWI_PID:-}" [gateway-auth]="${GWA_PID:-}")
declare -A HEADER=([direct]="" [gateway]="" [nginx]="" [gateway-info]="" [gateway-auth]="$AUTH_HEADER")
RESULTS="$TMP/results"
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

for ((round = 1; round <= ROUNDS; round++)); do
    for path in "${PATHS[@]}"; do
        for t in "${TARGETS[@]}"; do
            url="http://127.0.0.1:${PORT[$t]}$path"
            hdr=()
            [[ -n ${HEADER[$t]} ]] && hdr=(-H "${HEADER[$t]}")
            timeout 120 wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" --timeout 2s "${hdr[@]}" "$url" >/dev/null
            read -r -a ppids <<<"${PROXY_PIDS[$t]}"
            c0_inv=$(cpu_ticks "$INV_PID"); c0_px=$(cpu_ticks "${ppids[@]}")
            out=$(timeout 300 wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 2s --latency \
                -s "$TMP/report.lua" "${hdr[@]}" "$url")
            c1_inv=$(cpu_ticks "$INV_PID"); c1_px=$(cpu_ticks "${ppids[@]}")
            line=$(grep '^BENCH ' <<<"$out") || { echo "$out" >&2; die "no wrk summary"; }
            declare -A m=()
            for kv in ${line#BENCH }; do m[${kv%%=*}]=${kv#*=}; done
            n=${m[requests]}
            # CPU microseconds per request (clock ticks of 10 ms).
            inv_us=$(awk -v d=$((c1_inv - c0_inv)) -v n="$n" 'BEGIN {printf "%.1f", n ? d * 1e6 / 100 / n : 0}')
            px_us=$(awk -v d=$((c1_px - c0_px)) -v n="$n" 'BEGIN {printf "%.1f", n ? d * 1e6 / 100 / n : 0}')
            errors=$((m[connect] + m[read] + m[write] + m[timeout]))
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$path" "$round" \
                "${m[rps]}" "${m[p50]}" "${m[p90]}" "${m[p99]}" "${m[status]}" "$errors" \
                "$px_us" "$inv_us" "$n" >>"$RESULTS"
            log "$(printf 'round %d %-13s %-28s %9.0f req/s  p50 %5d µs  p99 %6d µs  non-2xx %s  socket errors %s' \
                "$round" "$t" "$path" "${m[rps]}" "${m[p50]}" "${m[p99]}" "${m[status]}" "$errors")"
            unset m
        done
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 6. report
col() { # target path column -> median over rounds
    awk -F'\t' -v t="$1" -v p="$2" -v c="$3" '$1 == t && $2 == p {print $c}' "$RESULTS" | median
}
ms() { awk -v us="$1" 'BEGIN {printf "%.2f", us / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b ? a / b : 0}'; }
label() {
    case $1 in
        direct) echo "inventory, direct" ;;
        gateway) echo "gateway → inventory" ;;
        nginx) echo "nginx → inventory" ;;
        gateway-info) echo "gateway, FLOTILLA_LOG=info" ;;
        gateway-auth) echo "gateway + JWT verification + rate limiting" ;;
    esac
}

SECTION="$TMP/section.md"
{
    echo "## Gateway throughput: direct vs. gateway vs. nginx"
    echo
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo) RAM"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates services cli 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- command: \`$COMMAND\`"
    echo "- load: \`wrk -t$THREADS -c$CONNS -d$DURATION --latency\` after a $WARMUP warm-up, $ROUNDS interleaved round(s) per target and path, medians shown; $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}'), nginx $(nginx -v 2>&1 | sed 's|.*nginx/||')"
    echo "- setup: one inventory instance (SQLite, seeded) with FLOTILLA_LOG=warn; the gateway with FLOTILLA_LOG=warn, static discovery and rate limiting off (the \`gateway + JWT…\` row: the same route closed, a bearer token verified per request and a bucket charged per request); nginx with \`worker_processes auto\`, \`access_log off\`, an upstream with \`keepalive 64\` (bench/nginx.conf.tmpl). Load average over 1/5/15 min: $LOAD_START at start, $LOAD_END at the end."
    echo
    for path in "${PATHS[@]}"; do
        echo "### \`GET $path\`"
        echo
        echo "| target | req/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors | proxy CPU µs/req | inventory CPU µs/req |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        for t in "${TARGETS[@]}"; do
            pxc=$(col "$t" "$path" 10)
            [[ $t == direct ]] && pxc="—"
            printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$t")" \
                "$(col "$t" "$path" 4)" "$(ms "$(col "$t" "$path" 5)")" "$(ms "$(col "$t" "$path" 6)")" \
                "$(ms "$(col "$t" "$path" 7)")" "$(col "$t" "$path" 8)" "$(col "$t" "$path" 9)" \
                "$pxc" "$(col "$t" "$path" 11)"
        done
        g=$(col gateway "$path" 4); n=$(col nginx "$path" 4); d=$(col direct "$path" 4)
        echo
        echo "Throughput ratios: gateway/nginx **$(ratio "$g" "$n")**, gateway/direct **$(ratio "$g" "$d")**, nginx/direct $(ratio "$n" "$d"). Proxy CPU per request: gateway/nginx $(ratio "$(col gateway "$path" 10)" "$(col nginx "$path" 10)")."
        echo
    done
    cat <<'EOF'
"proxy CPU µs/req" is the CPU time (user + system, from `/proc/<pid>/stat`) the proxy
process(es) used during the measured run divided by the requests served; unlike req/s it
does not depend much on who else was using the cores.

EOF
    p0=${PATHS[0]}
    g=$(col gateway "$p0" 4); n=$(col nginx "$p0" 4); d=$(col direct "$p0" 4)
    gc=$(col gateway "$p0" 10); nc=$(col nginx "$p0" 10); ic=$(col direct "$p0" 11)
    gi=""; [[ $GATEWAY_INFO == 1 ]] && gi=$(col gateway-info "$p0" 10)
    busy=""
    if awk -v l="${LOAD_START%% *}" -v c="$(nproc)" 'BEGIN {exit !(l > c / 2)}'; then
        busy=" (and the load average shows that other work was running on the machine too)"
    fi
    info=""
    [[ -n $gi ]] && info=" With \`FLOTILLA_LOG=info\` (the default filter) the gateway also builds OpenTelemetry spans and costs ${gi} µs of CPU per request."
    if [[ $GATEWAY_AUTH == 1 ]]; then
        ga=$(col gateway-auth "$p0" 10)
        info="$info With JWT verification (every request carries the same bearer token, as a client sends its token for its lifetime: the Ed25519 check runs on its first use and at most once a minute after, the verified-token cache answers the rest; docs/security.md) and rate limiting on, it costs ${ga} µs of CPU per request against ${gc} µs with both off ($(ratio "$ga" "$gc")×), at $(ratio "$(col gateway-auth "$p0" 4)" "$g")× the throughput."
    fi
    cmp=$(awk -v r="$(ratio "$g" "$n")" 'BEGIN {print (r < 0.95) ? "below" : (r > 1.05) ? "above" : "level with"}')
    cat <<EOF
**Where the gateway stands.** On \`GET $p0\` the gateway served $(ratio "$g" "$n")× nginx's
throughput ($cmp it) and $(ratio "$g" "$d")× the throughput of calling inventory directly, while it
spent $(ratio "$gc" "$nc")× nginx's CPU per request (${gc} µs against ${nc} µs). The throughput figures
are contended and noisy: wrk, inventory and the proxy share the same $(nproc) cores$busy, so whoever is cheaper per
request leaves more CPU to the others, and the direct figure is a ceiling no proxy here can
reach. Inventory itself is the largest consumer (${ic} µs of CPU per request when called
directly), which is why the proxies' req/s stay close to it. The per-request CPU is the
fairer measure, and there the gateway pays for what it does on every request: five
\`from_fn\` middleware layers (request id with a fresh UUIDv7, a server span, RED metrics
with per-request label \`String\`s, deadline propagation, fault injection), a second request
built with cloned headers and a formatted URI, retry/breaker/bulkhead bookkeeping, and a
hand-off between the request task and hyper's pooled-connection task for every upstream
call; nginx does the same forwarding in one event loop with almost no allocation.$info
EOF
} >"$SECTION"

echo
cat "$SECTION"
update_section gateway "$SECTION"
log "updated $DOC (section bench:gateway)"

# ---------------------------------------------------------------- 7. footprint
if [[ ${BENCH_FOOTPRINT:-1} == 1 ]]; then
    # Stop our targets first so they do not share the machine with `flotilla up`.
    if [[ -n $NGINX_PREFIX && -f $NGINX_PREFIX/nginx.pid ]]; then
        nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -s stop 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
    NGINX_PREFIX=""
    # The footprint is of `flotilla up` as users run it: with internal mTLS.
    env -u FLOTILLA_INSECURE_INTERNAL BENCH_DOC="$DOC" FOOTPRINT_VIA="$COMMAND" BENCH_NO_BUILD=1 bench/footprint.sh
fi
