#!/usr/bin/env bash
# Tracing overhead on the gateway: the same wrk load as bench/gateway.sh through three
# gateways in one run, interleaved: tracing off (FLOTILLA_TRACE_SAMPLING=always_off, no
# endpoint), the local default (always_on, no endpoint: spans built, nothing exported)
# and tracing on (sampling 1.0, every span and log record exported over OTLP/HTTP to a
# real listener, bench/otlp_sink.py). Inventory, behind all three, records no trace, so
# the difference is the gateway's.
#
#   bench/tracing.sh                     # build, install wrk if needed, run, write docs/benchmarks.md
#
# Environment: BENCH_DURATION (15s), BENCH_WARMUP (3s), BENCH_CONNECTIONS (64),
# BENCH_THREADS (2), BENCH_ROUNDS (3), BENCH_PATH (/api/products/FLT-BOAT-001),
# BENCH_NO_BUILD=1, BENCH_DOC (docs/benchmarks.md), BENCH_BIN (another `flotilla` binary,
# e.g. a debug build for a smoke run with BENCH_DOC elsewhere; its numbers mean nothing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${BENCH_BIN:-$ROOT/target/release/flotilla}
DOC=${BENCH_DOC:-docs/benchmarks.md}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
PROBE=${BENCH_PATH:-/api/products/FLT-BOAT-001}
COMMAND="bench/tracing.sh"
for v in BENCH_DURATION BENCH_WARMUP BENCH_CONNECTIONS BENCH_THREADS BENCH_ROUNDS BENCH_PATH; do
    [[ -n ${!v:-} ]] && COMMAND="$v='${!v}' $COMMAND"
done
export FLOTILLA_INSECURE_INTERNAL=1

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-bench.XXXXXX")
PIDS=()
SINK_PID=""
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}" $SINK_PID; do kill -TERM "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building: cargo build --release -p flotilla"
    timeout 3600 cargo build --release -p flotilla
fi
[[ -x $BIN ]] || die "$BIN is missing"
if ! command -v wrk >/dev/null; then
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y wrk
fi
command -v python3 >/dev/null || die "python3 is needed for the OTLP listener"

cat >"$TMP/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d rps=%.1f p50=%d p99=%d status=%d errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
LUA

DATA="$TMP/data"
mkdir -p "$DATA" "$TMP/logs"
INV_PORT=$(free_port)
SINK_PORT=$(free_port)
python3 bench/otlp_sink.py "$SINK_PORT" "$TMP/otlp-counts" &
SINK_PID=$!

log "starting inventory on 127.0.0.1:$INV_PORT (no traces recorded)"
FLOTILLA_DATA_DIR="$DATA" FLOTILLA_DISCOVERY=static:// FLOTILLA_INVENTORY__SEED=true \
    FLOTILLA_INVENTORY__LISTEN=127.0.0.1:$INV_PORT FLOTILLA_LOG=warn FLOTILLA_TRACE_SAMPLING=always_off \
    "$BIN" run inventory >"$TMP/logs/inventory.log" 2>&1 &
INV_PID=$!
PIDS+=("$INV_PID")
wait_200 "$INV_PORT" "$PROBE" 30 || { cat "$TMP/logs/inventory.log" >&2; die "inventory did not answer"; }

declare -A PORT PID
start_gateway() { # name env…
    local name=$1
    shift
    PORT[$name]=$(free_port)
    env FLOTILLA_DATA_DIR="$DATA" FLOTILLA_DISCOVERY="static://inventory=127.0.0.1:$INV_PORT" \
        FLOTILLA_GATEWAY__LISTEN=127.0.0.1:${PORT[$name]} FLOTILLA_LOG=warn \
        FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED=false "$@" \
        "$BIN" run gateway >"$TMP/logs/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("${PID[$name]}")
    wait_200 "${PORT[$name]}" "$PROBE" 30 || { cat "$TMP/logs/$name.log" >&2; die "$name did not answer"; }
}
TARGETS=(off default on)
start_gateway off FLOTILLA_TRACE_SAMPLING=always_off
start_gateway default FLOTILLA_TRACE_SAMPLING=always_on
start_gateway on FLOTILLA_TRACE_SAMPLING=1.0 FLOTILLA_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT"

RESULTS="$TMP/results"
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do
        url="http://127.0.0.1:${PORT[$t]}$PROBE"
        timeout 120 wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" --timeout 2s "$url" >/dev/null
        c0=$(cpu_ticks "${PID[$t]}")
        out=$(timeout 300 wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 2s --latency -s "$TMP/report.lua" "$url")
        c1=$(cpu_ticks "${PID[$t]}")
        line=$(grep '^BENCH ' <<<"$out") || { echo "$out" >&2; die "no wrk summary"; }
        declare -A m=()
        for kv in ${line#BENCH }; do m[${kv%%=*}]=${kv#*=}; done
        cpu=$(awk -v d=$((c1 - c0)) -v n="${m[requests]}" 'BEGIN {printf "%.1f", n ? d * 1e6 / 100 / n : 0}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${m[rps]}" "${m[p50]}" "${m[p99]}" "${m[status]}" "${m[errors]}" "$cpu" >>"$RESULTS"
        log "$(printf 'round %d %-8s %9.0f req/s  p50 %5d µs  p99 %6d µs  gateway CPU %s µs/req' "$round" "$t" "${m[rps]}" "${m[p50]}" "${m[p99]}" "$cpu")"
        unset m
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
kill -TERM "${PID[on]}" 2>/dev/null || true
wait "${PID[on]}" 2>/dev/null || true # flushes its last batch to the sink
kill -TERM "$SINK_PID"
wait "$SINK_PID" 2>/dev/null || true
SINK_PID=""
received=$(awk '$1 == "/v1/traces" {printf "%d requests, %.1f MB", $2, $3 / 1048576}' "$TMP/otlp-counts" 2>/dev/null)
logs_received=$(awk '$1 == "/v1/logs" {printf "%d requests", $2}' "$TMP/otlp-counts" 2>/dev/null)

col() { awk -F'\t' -v t="$1" -v c="$2" '$1 == t {print $c}' "$RESULTS" | median; }
ms() { awk -v us="$1" 'BEGIN {printf "%.2f", us / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b ? a / b : 0}'; }
label() {
    case $1 in
        off) echo "tracing off (\`always_off\`, no endpoint)" ;;
        default) echo "local default (\`always_on\`, no endpoint)" ;;
        on) echo "tracing on (sampling 1.0, OTLP export)" ;;
    esac
}
SECTION="$TMP/section.md"
{
    echo "## Tracing overhead on the gateway"
    echo
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r)"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates services cli 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- command: \`$COMMAND\`"
    echo "- load: \`wrk -t$THREADS -c$CONNS -d$DURATION --latency\` on \`GET $PROBE\` after a $WARMUP warm-up, $ROUNDS interleaved round(s), medians shown. Three gateways (FLOTILLA_LOG=warn, rate limiting off) in front of one inventory that records no trace; the exporting one posts to bench/otlp_sink.py, which answered 200 to ${received:-no} trace exports${logs_received:+ and $logs_received of logs}. Load average: $LOAD_START at start, $LOAD_END at the end."
    echo
    echo "| gateway | req/s | p50 ms | p99 ms | non-2xx | socket errors | gateway CPU µs/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGETS[@]}"; do
        printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$(label "$t")" "$(col "$t" 2)" \
            "$(ms "$(col "$t" 3)")" "$(ms "$(col "$t" 4)")" "$(col "$t" 5)" "$(col "$t" 6)" "$(col "$t" 7)"
    done
    echo
    echo "Tracing on against off: **$(ratio "$(col on 2)" "$(col off 2)")×** the throughput and $(ratio "$(col on 7)" "$(col off 7)")× the gateway's CPU per request; the local default (spans built, not exported) against off: $(ratio "$(col default 2)" "$(col off 2)")× the throughput, $(ratio "$(col default 7)" "$(col off 7)")× the CPU."
    echo
} >"$SECTION"
cat "$SECTION"
update_section tracing "$SECTION"
log "updated $DOC (section bench:tracing)"
