#!/usr/bin/env bash
# Start-up time and idle memory of `flotilla up`.
#
#   bench/footprint.sh        # (bench/gateway.sh runs it too)
#
# Each run launches `target/release/flotilla up --data-dir <fresh dir>` on free loopback
# ports, polls `GET /api/products` on the gateway every 10 ms until it answers 200, waits
# FOOTPRINT_IDLE seconds, sums VmRSS of the supervisor and of every process the registry
# lists (metadata.pid of GET /v1/services), then stops `up` with SIGINT and checks that no
# process is left. Goals: up < 3 s, idle < 150 MB.
#
# Environment: FOOTPRINT_RUNS=5, FOOTPRINT_IDLE=5, BENCH_DOC=docs/benchmarks.md,
# BENCH_NO_BUILD=1 (skip the release build; bench/gateway.sh has already built).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN="$ROOT/target/release/flotilla"
DOC=${BENCH_DOC:-docs/benchmarks.md}
RUNS=${FOOTPRINT_RUNS:-5}
IDLE=${FOOTPRINT_IDLE:-5}
COMMAND="bench/footprint.sh"
for v in FOOTPRINT_RUNS FOOTPRINT_IDLE; do [[ -n ${!v:-} ]] && COMMAND="$v=${!v} $COMMAND"; done

log() { printf '\033[1m[footprint]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-footprint.XXXXXX")
UP_PID=""
CHILDREN=()
stop_up() { # SIGINT, then wait (bounded); returns 1 if anything had to be killed
    local left=0 pid
    [[ -n $UP_PID ]] || return 0
    kill -INT "$UP_PID" 2>/dev/null || true
    for _ in $(seq 150); do # 15 s: the services' shutdown grace is 5 s
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.1
    done
    for _ in $(seq 50); do
        left=0
        for pid in "$UP_PID" "${CHILDREN[@]}"; do
            [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] && left=1
        done
        ((left)) || break
        sleep 0.1
    done
    if ((left)); then
        for pid in "$UP_PID" "${CHILDREN[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=""
    CHILDREN=()
    return "$left"
}
cleanup() {
    local rc=$?
    set +e
    stop_up
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Status code of GET $2 on 127.0.0.1:$1 without forking (bash /dev/tcp); 000 if refused.
status_of() {
    local code=000 line
    if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3 2>/dev/null &&
            IFS=' ' read -r -t 2 _ code _ <&3 || code=000
        exec 3<&- 3>&-
    fi
    echo "${code:-000}"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Proportional set size: pages shared by several processes (the one flotilla binary's
# code, shared libraries) count once in the sum, split between them.
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }


if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building: cargo build --release -p flotilla"
    timeout 3600 cargo build --release -p flotilla
fi
[[ -x $BIN ]] || die "$BIN is missing"

TIMES=()
TOTALS=()
PSS_TOTALS=()
LEFTOVER=0
BREAKDOWN=""
for ((run = 1; run <= RUNS; run++)); do
    GW=$(free_port)
    REG=$(free_port)
    DATA="$TMP/run$run"
    t0=$EPOCHREALTIME
    FLOTILLA_GATEWAY__LISTEN=127.0.0.1:$GW FLOTILLA_REGISTRY__LISTEN=127.0.0.1:$REG FLOTILLA_LOG=warn \
        "$BIN" up --data-dir "$DATA" >"$TMP/up$run.log" 2>&1 &
    UP_PID=$!
    ok=0
    for ((i = 0; i < 3000; i++)); do # 30 s at most
        if [[ $(status_of "$GW" /api/products) == 200 ]]; then ok=1; break; fi
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.01
    done
    t1=$EPOCHREALTIME
    ((ok)) || { cat "$TMP/up$run.log" >&2; die "run $run: the gateway never answered 200"; }
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')
    TIMES+=("$ms")

    sleep "$IDLE"
    # The registry takes only callers with a certificate from the system's CA (mTLS is
    # on, as `up` runs by default): ask as the operator, unless mTLS was switched off.
    # Its certificate names a SPIFFE identity, not a host, which curl cannot check by
    # name (-k); this only reads the instances' pids.
    if [[ ${FLOTILLA_INSECURE_INTERNAL:-} == 1 ]]; then
        services=$(curl -s --max-time 2 "http://127.0.0.1:$REG/v1/services")
    else
        services=$(curl -sk --max-time 2 \
            --cert "$DATA/tls/operator.crt" --key "$DATA/tls/operator.key" \
            "https://127.0.0.1:$REG/v1/services")
    fi
    mapfile -t rows < <(jq -r '.[] | .name as $n | .instances[] | "\($n) \(.metadata.pid)"' <<<"$services")
    CHILDREN=($(pgrep -P "$UP_PID" || true))
    total=$(rss_kb "$UP_PID")
    pss=$(pss_kb "$UP_PID")
    BREAKDOWN="supervisor (\`flotilla up\`) $((total / 1024)) MB"
    for r in "${rows[@]}"; do
        name=${r% *}; pid=${r#* }
        kb=$(rss_kb "$pid")
        total=$((total + kb))
        pss=$((pss + $(pss_kb "$pid")))
        BREAKDOWN+=", $name $((kb / 1024)) MB"
    done
    TOTALS+=("$total")
    PSS_TOTALS+=("$pss")
    if ! stop_up; then LEFTOVER=$((LEFTOVER + 1)); log "run $run: processes survived SIGINT and were killed"; fi
    log "run $run: up in ${ms} ms; idle RSS $((total / 1024)) MB, PSS $((pss / 1024)) MB (${#rows[@]} registered processes + supervisor)"
done

min_ms=$(printf '%s\n' "${TIMES[@]}" | sort -n | head -1)
med_ms=$(printf '%s\n' "${TIMES[@]}" | median)
med_kb=$(printf '%s\n' "${TOTALS[@]}" | median)
max_kb=$(printf '%s\n' "${TOTALS[@]}" | sort -n | tail -1)
pss_med_kb=$(printf '%s\n' "${PSS_TOTALS[@]}" | median)
verdict() { awk -v v="$1" -v g="$2" 'BEGIN {print (v < g) ? "met" : "**missed**"}'; }

SECTION="$TMP/section.md"
{
    echo "## Start-up time and idle memory of \`flotilla up\`"
    echo
    echo "- machine: $(nproc) cores, Linux $(uname -r); date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- command: \`$COMMAND\`${FOOTPRINT_VIA:+ (run by \`$FOOTPRINT_VIA\`)} ($RUNS runs, each with a fresh data directory, so every run creates and seeds its SQLite database)"
    echo "- start-up = launching \`flotilla up --data-dir <fresh dir>\` until the gateway answers \`GET /api/products\` with 200 (polled every 10 ms)"
    echo "- idle memory = VmRSS of the supervisor plus every process listed by the registry (\`metadata.pid\`), $IDLE s after start-up"
    echo
    echo "| measure | result | goal | |"
    echo "|---|---:|---:|---|"
    echo "| start-up, min | $min_ms ms | < 3000 ms | $(verdict "$min_ms" 3000) |"
    echo "| start-up, median | $med_ms ms | < 3000 ms | $(verdict "$med_ms" 3000) |"
    printf '| idle RSS, median | %.1f MB | < 150 MB | %s |\n' "$(awk -v k="$med_kb" 'BEGIN {print k / 1024}')" "$(verdict "$med_kb" $((150 * 1024)))"
    printf '| idle RSS, max | %.1f MB | < 150 MB | %s |\n' "$(awk -v k="$max_kb" 'BEGIN {print k / 1024}')" "$(verdict "$max_kb" $((150 * 1024)))"
    printf '| idle PSS, median (shared pages counted once) | %.1f MB | — | |\n' "$(awk -v k="$pss_med_kb" 'BEGIN {print k / 1024}')"
    echo
    echo "All start-up times (ms): ${TIMES[*]}. Last run's breakdown: $BREAKDOWN."
    if ((LEFTOVER)); then
        echo "**$LEFTOVER run(s) left processes behind after SIGINT** (the script killed them)."
    else
        echo "After SIGINT every run stopped the supervisor and all its services; no process was left."
    fi
} >"$SECTION"

echo
cat "$SECTION"
update_section footprint "$SECTION"
log "updated $DOC (section bench:footprint)"
((LEFTOVER == 0)) || exit 1
