#!/usr/bin/env bash
# The saga's throughput curve: offered order rate against achieved rate and p99 time
# from order accepted to CONFIRMED, on the embedded profile and on the infra profile.
#
#   bench/saga.sh
#
# For each profile: starts `flotilla up` on free ports with a fresh data directory (the
# infra profile on fresh databases, with an etcd prefix and a NATS stream of its own),
# runs `flotilla load --sweep` with orders only (each accepted order read every 250 ms
# until it ends, timed by its own timestamps; CPU of the machine, the system's processes
# and the servers sampled per step), stops `up`, and copies the sweep's chart to
# docs/img/saga-<profile>.svg. Writes the section `bench:saga` of docs/benchmarks.md.
#
# Environment: SAGA_RATES=5,10,20,40,80,160,320, SAGA_DURATION=30s, SAGA_MIX=order=1,
# SAGA_USERS=20, SAGA_STOCK=1000000, SAGA_PAUSE=5s, SAGA_PROFILES="embedded infra",
# SAGA_INFRA_DISCOVERY (default etcd://127.0.0.1:2379?prefix=/flotilla-<run>;
# `registry` runs the embedded registry instead), SAGA_FRESH=1 (0: do not drop the
# infra databases first; only for databases that are new, since `up` writes the
# administrator's credentials, which the load needs, only when it seeds them), SAGA_KEEP=DIR (keep the sweeps' reports there), FLOTILLA_BIN
# (default target/release/flotilla, built unless BENCH_NO_BUILD=1 or FLOTILLA_BIN is
# set), BENCH_DOC=docs/benchmarks.md, BENCH_IMG=docs/img.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${FLOTILLA_BIN:-$ROOT/target/release/flotilla}
[[ $BIN == /* ]] || BIN="$ROOT/$BIN"
DOC=${BENCH_DOC:-docs/benchmarks.md}
IMG=${BENCH_IMG:-docs/img}
RATES=${SAGA_RATES:-5,10,20,40,80,160,320}
DURATION=${SAGA_DURATION:-30s}
MIX=${SAGA_MIX:-order=1}
USERS=${SAGA_USERS:-20}
STOCK=${SAGA_STOCK:-1000000}
PAUSE=${SAGA_PAUSE:-5s}
PROFILES=${SAGA_PROFILES:-embedded infra}
COMMAND="bench/saga.sh"
for v in SAGA_RATES SAGA_DURATION SAGA_MIX SAGA_USERS SAGA_STOCK SAGA_PROFILES SAGA_INFRA_DISCOVERY SAGA_FRESH FLOTILLA_BIN; do
    [[ -n ${!v:-} ]] && COMMAND="$v=\"${!v}\" $COMMAND"
done

log() { printf '\033[1m[saga]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-saga.XXXXXX")
UP_PID=""
stop_up() {
    [[ -n $UP_PID ]] || return 0
    kill -INT "$UP_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=""
}
cleanup() {
    local rc=$?
    set +e
    stop_up
    if [[ -n ${SAGA_KEEP:-} ]]; then
        mkdir -p "$SAGA_KEEP" && cp -a "$TMP"/. "$SAGA_KEEP"/
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -z ${FLOTILLA_BIN:-} && ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building: cargo build --release -p flotilla"
    timeout 3600 cargo build --release -p flotilla
fi
[[ -x $BIN ]] || die "$BIN is missing"
command -v jq >/dev/null || die "jq is needed to read the sweep's report"
build=$([[ $BIN == */release/* ]] && echo "release build" || echo "**not a release build** ($BIN)")

# sweep PROFILE: one `up` on PROFILE, one sweep against it; the report in $TMP/PROFILE.
sweep() {
    local profile=$1 data="$TMP/$1/data" gw reg bus run
    mkdir -p "$data"
    gw=$(free_port)
    reg=$(free_port)
    bus=$(free_port)
    (
        if [[ $profile == infra ]]; then
            [[ -x deploy/infra/create-databases.sh ]] || die "deploy/infra/create-databases.sh is missing"
            if [[ ${SAGA_FRESH:-1} == 1 ]]; then
                deploy/infra/create-databases.sh --fresh >/dev/null
            else
                deploy/infra/create-databases.sh >/dev/null
            fi
            run=saga$$$RANDOM
            case ${SAGA_INFRA_DISCOVERY:-} in
                "") export FLOTILLA_DISCOVERY="etcd://127.0.0.1:2379?prefix=/flotilla-$run" ;;
                registry) export FLOTILLA_DISCOVERY="registry://127.0.0.1:$reg" ;;
                *) export FLOTILLA_DISCOVERY=$SAGA_INFRA_DISCOVERY ;;
            esac
            export FLOTILLA_BUS="nats://127.0.0.1:4222?stream=FLOTILLA_${run^^}&prefix=$run"
        else
            export FLOTILLA_DISCOVERY="registry://127.0.0.1:$reg"
            unset FLOTILLA_BUS
        fi
        export FLOTILLA_PROFILE=$profile
        # Rate limits off: the load is one client address and 20 users, and what is
        # measured is the saga, not the gateway's quotas.
        FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED=false FLOTILLA_LOG=warn \
            FLOTILLA_GATEWAY__LISTEN="127.0.0.1:$gw" FLOTILLA_REGISTRY__LISTEN="127.0.0.1:$reg" \
            FLOTILLA_BUS__LISTEN="127.0.0.1:$bus" \
            exec "$BIN" up --data-dir "$data" </dev/null >"$TMP/$profile/up.log" 2>&1
    ) &
    UP_PID=$!
    for _ in $(seq 600); do
        grep -q "Flotilla is up" "$TMP/$profile/up.log" 2>/dev/null && break
        kill -0 "$UP_PID" 2>/dev/null || { tail -n 40 "$TMP/$profile/up.log" >&2; die "up ($profile) exited during start-up"; }
        sleep 0.1
    done
    grep -q "Flotilla is up" "$TMP/$profile/up.log" || die "up ($profile) was not ready in 60 s"
    log "$profile: up (pid $UP_PID, gateway 127.0.0.1:$gw); sweeping $RATES arrivals/s, $DURATION each"
    "$BIN" load --gateway "http://127.0.0.1:$gw" --data-dir "$data" \
        --scenario "$MIX" --users "$USERS" --stock "$STOCK" --duration "$DURATION" \
        --sweep "$RATES" --sweep-pause "$PAUSE" --up-pid "$UP_PID" \
        --report "$TMP/$profile/report" 2>"$TMP/$profile/load.log" | tee "$TMP/$profile/table.txt" >&2 \
        || { tail -n 20 "$TMP/$profile/load.log" >&2; die "the sweep on $profile failed"; }
    stop_up
    mkdir -p "$IMG"
    cp "$TMP/$profile/report/sweep.svg" "$IMG/saga-$profile.svg"
}

# Number formats for the tables: two decimals, whole milliseconds, a percentage.
JQ_DEFS='
    def r2: if . == null then "-" else (. * 100 | round) / 100 end;
    def ms: if . == null then "-" else "\(round) ms" end;
    def pct: if . == null then "-" else "\(. * 100 | round) %" end;
'

# A step keeps up when nearly every arrival is accepted, its sagas end as fast as its
# orders are accepted, none is left unsettled and errors stay under 1 %; where one falls
# behind, the machine's busy share says whether the cores were the limit.
JQ_VERDICT='
    def ok: .accepted_rate >= 0.95 * .offered and .settled_rate >= 0.95 * .accepted_rate
            and .unsettled == 0 and .errors <= 0.01 * (.requests + 1);
    def cpu: "the machine \(.cpu.machine_busy | pct) busy (system \(.cpu.system_cores | r2), servers \(.cpu.servers_cores | r2), load generator \(.cpu.generator_cores | r2) of \(.cpu.cores) cores)";
    (.steps | map(select(ok)) | last) as $kept
    | (.steps | map(select(ok | not)) | first) as $fell
    | (.steps | max_by(.settled_rate)) as $best
    | (if $kept then "Kept up to **\($kept.offered) orders/s** offered (p99 to CONFIRMED \($kept.to_confirmed_ms.p99 | ms); \($kept | cpu))."
       else "Did not keep up even at the lowest rate offered." end)
      + " Most sagas ended per second in one step: **\($best.settled_rate | r2)/s** (\($best.confirmed_rate | r2) CONFIRMED/s, at \($best.offered)/s offered)."
      + (if $fell == null then " Every step kept up: the limit lies above \(.steps | last | .offered)/s offered (raise SAGA_RATES)."
         else ($fell.cpu | .system_cores + .servers_cores + (.generator_cores // 0)) as $own
           | " At \($fell.offered)/s it fell behind: \($fell.settled_rate | r2) sagas ended/s against \($fell.accepted_rate | r2) accepted/s, p99 to CONFIRMED \($fell.to_confirmed_ms.p99 | ms), \($fell.unsettled) not ended in time, \($fell.errors) errors; \($fell | cpu)."
           + (if ($fell.cpu.machine_busy // 0) >= 0.9 and $own >= 0.7 * $fell.cpu.machine_busy * $fell.cpu.cores then
                " **Limiting resource: CPU**: the cores were busy"
                + (if $fell.cpu.servers_cores > $fell.cpu.system_cores then ", most of it in the database and message servers."
                   else ", most of it in the system’s own processes." end)
              elif ($fell.cpu.machine_busy // 0) >= 0.9 then
                " **Not conclusive:** the cores were busy, but mostly with other work on the machine (this run used \($own | r2) of \($fell.cpu.machine_busy * $fell.cpu.cores | r2) busy cores); run it again on an otherwise idle machine."
              else
                " **The CPU was not the limit** (the cores were not saturated): the sagas waited on something else, such as \($waits)."
              end)
         end)
'

# verdict PROFILE: the markdown of one profile's sweep.
verdict() {
    local profile=$1 json="$TMP/$1/report/sweep.json" rel
    rel=$(realpath --relative-to="$(dirname "$DOC")" "$IMG/saga-$profile.svg")
    echo "### $profile profile"
    echo
    if [[ $profile == infra ]]; then
        echo "PostgreSQL (auth, users, orders, notifications, analytics), MariaDB (payments), Redis (inventory), NATS JetStream (events), discovery through $DISCOVERY_SHOWN; $([[ ${SAGA_FRESH:-1} == 1 ]] && echo "fresh databases" || echo "databases kept from before")."
    else
        echo "SQLite for every service, the embedded bus and registry."
    fi
    echo
    echo "| offered/s | arrivals sent/s | accepted/s | sagas ended/s | CONFIRMED/s | p50 → CONFIRMED | p99 → CONFIRMED | not ended in ${FOLLOW_S}s | errors | system CPU, cores | servers CPU, cores | machine busy |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    jq -r "$JQ_DEFS"'
        .steps[] | "| \(.offered) | \(.achieved | r2) | \(.accepted_rate | r2) | \(.settled_rate | r2) | \(.confirmed_rate | r2) | \(.to_confirmed_ms.p50 | ms) | \(.to_confirmed_ms.p99 | ms) | \(.unsettled) | \(if .errors == 0 then "none" else ([.errors_by_status | to_entries[] | "\(.value) × \(.key)"] | join(", ")) end) | \(.cpu.system_cores | r2) | \(.cpu.servers_cores | r2) | \(.cpu.machine_busy | pct) |"' "$json"
    echo
    echo "![saga throughput, $profile profile]($rel)"
    echo
    local waits="the stores’ commits (one writer at a time per SQLite database) or the embedded bus"
    [[ $profile == infra ]] && waits="the round trips to and commits of PostgreSQL, MariaDB and Redis, or NATS"
    jq -r --arg waits "$waits" "$JQ_DEFS$JQ_VERDICT" "$json"
    echo
}

for profile in $PROFILES; do
    case $profile in embedded | infra) ;; *) die "unknown profile $profile (embedded or infra)" ;; esac
    sweep "$profile"
done

FOLLOW_S=$(jq -r .follow_deadline_s "$TMP/${PROFILES%% *}/report/sweep.json")
case ${SAGA_INFRA_DISCOVERY:-} in
    "") DISCOVERY_SHOWN=etcd ;;
    registry) DISCOVERY_SHOWN="the embedded registry" ;;
    *) DISCOVERY_SHOWN="\`$SAGA_INFRA_DISCOVERY\`" ;;
esac
REPORT="$TMP/report.md"
{
    echo "## Saga throughput"
    echo
    echo "- machine: $(nproc) cores, $(uname -sr); date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $build; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- command: \`$COMMAND\`"
    echo "- load: \`flotilla load --sweep $RATES --duration $DURATION --scenario $MIX --users $USERS --stock $STOCK\` on the same machine, gateway rate limits off (\`FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED=false\`), \`FLOTILLA_LOG=warn\`; one step per offered rate, ${PAUSE} apart, each on the same running system"
    echo "- each order: \`POST /api/orders\` (85 % approving card, 15 % declined, so about 0.85 of the sagas end CONFIRMED), read back, then read every 250 ms (every second after 5 s) until CONFIRMED or CANCELLED (those reads add load: 4 requests/s per order in its first 5 s, then 1); time to CONFIRMED = the order's \`confirm_order\` step \`at\` − \`created_at\`, the server's own clock"
    echo "- CPU from \`/proc\` over each step until its last order ended: the system's processes (\`up\` and its children), the servers (PostgreSQL, MariaDB, Redis, NATS, etcd by process name, whoever uses them) and the machine's busy share"
    echo
    for profile in $PROFILES; do verdict "$profile"; done
} >"$REPORT"
cat "$REPORT" >&2
update_section saga "$REPORT"
log "written to $DOC and $IMG/saga-*.svg"
