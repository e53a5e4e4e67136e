#!/usr/bin/env bash
# How long a new instance takes from spawn to serving traffic, and what a rollout costs.
#
#   bench/scale.sh
#
# Starts `target/release/flotilla up` on a fresh data directory, then for each service
# in SCALE_SERVICES scales it from 1 to 1+SCALE_ROUNDS instances one at a time
# (`flotilla scale <svc> <n>`), reading from `up`'s own report how long each new
# instance took from spawn until it was registered and its /readyz answered 200 (what
# the gateway needs before it sends it traffic); then scales back to 1 (each stop
# drains the instance) and rolls orders out to a new version and back. Writes the
# section `bench:scale` of docs/benchmarks.md.
#
# Environment: SCALE_ROUNDS=5, SCALE_SERVICES="inventory orders payments users",
# BENCH_DOC=docs/benchmarks.md, BENCH_NO_BUILD=1 (skip the release build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN="$ROOT/target/release/flotilla"
DOC=${BENCH_DOC:-docs/benchmarks.md}
ROUNDS=${SCALE_ROUNDS:-5}
SERVICES=${SCALE_SERVICES:-inventory orders payments users}
COMMAND="bench/scale.sh"
for v in SCALE_ROUNDS SCALE_SERVICES; do [[ -n ${!v:-} ]] && COMMAND="$v=\"${!v}\" $COMMAND"; done

log() { printf '\033[1m[scale]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-scale.XXXXXX")
UP_PID=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n $UP_PID ]]; then
        kill -INT "$UP_PID" 2>/dev/null
        for _ in $(seq 150); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$UP_PID" 2>/dev/null
    fi
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

GW=$(free_port)
REG=$(free_port)
BUS=$(free_port)
DATA="$TMP/data"
export FLOTILLA_DATA_DIR="$DATA" FLOTILLA_DISCOVERY="registry://127.0.0.1:$REG"
env -u FLOTILLA_DISCOVERY FLOTILLA_GATEWAY__LISTEN=127.0.0.1:$GW \
    FLOTILLA_REGISTRY__LISTEN=127.0.0.1:$REG FLOTILLA_BUS__LISTEN=127.0.0.1:$BUS FLOTILLA_LOG=warn \
    "$BIN" up --data-dir "$DATA" >"$TMP/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 3000); do
    curl -sf -o /dev/null "http://127.0.0.1:$GW/api/products" && break
    kill -0 "$UP_PID" 2>/dev/null || { cat "$TMP/up.log" >&2; die "up exited"; }
    sleep 0.01
done
log "up; scaling ${SERVICES// /, } to $((ROUNDS + 1)) instances each"

ROWS=""
for svc in $SERVICES; do
    READY=()
    WALL=()
    for ((n = 2; n <= ROUNDS + 1; n++)); do
        t0=$EPOCHREALTIME
        out=$("$BIN" scale "$svc" "$n")
        t1=$EPOCHREALTIME
        WALL+=("$(ms_between "$t0" "$t1")")
        s=$(grep -o 'is ready after [0-9.]*s' <<<"$out" | grep -o '[0-9.]*' | tail -1)
        [[ -n $s ]] || die "no readiness time in: $out"
        READY+=("$(awk -v s="$s" 'BEGIN {printf "%.0f", s * 1000}')")
    done
    t0=$EPOCHREALTIME
    "$BIN" scale "$svc" 1 >/dev/null
    t1=$EPOCHREALTIME
    down=$(ms_between "$t0" "$t1")
    r_med=$(printf '%s\n' "${READY[@]}" | median)
    r_min=$(printf '%s\n' "${READY[@]}" | sort -g | head -1)
    r_max=$(printf '%s\n' "${READY[@]}" | sort -g | tail -1)
    w_med=$(printf '%s\n' "${WALL[@]}" | median)
    ROWS+="| $svc | $r_med ms | $r_min–$r_max ms | $w_med ms | $down ms |"$'\n'
    log "$svc: spawn→ready median $r_med ms (${READY[*]}), back to 1 in $down ms"
done

t0=$EPOCHREALTIME
"$BIN" rollout orders --version bench-next >/dev/null
t1=$EPOCHREALTIME
roll=$(ms_between "$t0" "$t1")
t0=$EPOCHREALTIME
"$BIN" rollout orders --undo >/dev/null
t1=$EPOCHREALTIME
undo=$(ms_between "$t0" "$t1")
log "rollout of orders (1 instance): $roll ms; undo: $undo ms"

REPORT="$TMP/report.md"
{
    echo "## New instances: spawn to serving, scale and rollout"
    echo
    echo "- machine: $(nproc) cores, $(uname -sr); date: $(date -u '+%Y-%m-%d %H:%M UTC'); release build"
    echo "- command: \`$COMMAND\`"
    echo "- spawn → ready: from \`up\` spawning the process until it is registered and its \`/readyz\` answers 200 (as \`up\` reports it); the gateway sends it traffic from then on"
    echo "- scale command: the whole \`flotilla scale <svc> <n>\` (one new instance) as the user waits for it; back to 1: draining and stopping $ROUNDS instances one after another (each keeps serving for the 300 ms drain delay)"
    echo
    echo "| service | spawn → ready, median | range | \`scale\` command, median | back to 1 |"
    echo "|---|---:|---:|---:|---:|"
    printf '%s' "$ROWS"
    echo
    echo "Rolling out orders (one instance: start the new one, wait until ready, drain the old one): $roll ms; \`--undo\`: $undo ms."
} >"$REPORT"
update_section scale "$REPORT"
log "written to $DOC"
