# Shared by the bench scripts; expects $TMP, $DOC and a `die` function.

# A free loopback port outside the ephemeral range (so wrk's client ports never take it).
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] && ! grep -qx "$p" "$TMP/ports" 2>/dev/null; then
            echo "$p" >>"$TMP/ports"
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# HTTP status of GET http://127.0.0.1:$1$2 (000 when nothing answers), with header $3 if given.
status_of() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 ${3:+-H "$3"} "http://127.0.0.1:$1$2" || true
}

# Waits (at most $3 seconds) until GET $2 on port $1 (with header $4, if any) answers 200.
wait_200() {
    local port=$1 path=$2 limit=${3:-30} header=${4:-} i
    for ((i = 0; i < limit * 20; i++)); do
        [[ $(status_of "$port" "$path" "$header") == 200 ]] && return 0
        sleep 0.05
    done
    return 1
}

# CPU time (utime+stime, clock ticks) of the given pids, summed.
cpu_ticks() {
    local total=0 pid f
    for pid in "$@"; do
        if f=$(cat "/proc/$pid/stat" 2>/dev/null); then
            f=${f##*) }          # fields after "(comm) "
            read -r -a a <<<"$f"
            total=$((total + a[11] + a[12]))   # fields 14 and 15 of stat
        fi
    done
    echo "$total"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# Milliseconds between two $EPOCHREALTIME stamps.
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }

# Replaces the section between <!-- bench:$1:start --> and <!-- bench:$1:end --> in $DOC
# with the contents of file $2 (appends it when the markers are missing).
update_section() {
    local name=$1 body=$2 start="<!-- bench:$1:start -->" end="<!-- bench:$1:end -->"
    mkdir -p "$(dirname "$DOC")"
    if [[ ! -f $DOC ]]; then
        cat >"$DOC" <<'EOF'
# Benchmarks

Numbers measured by the scripts in `bench/` on one machine, written here by the scripts
themselves (each section is replaced on every run; the machine, kernel, date and exact
command are recorded in the section). Everything runs on loopback on the same host: the
load generator, the backends and the proxies share the same cores, so absolute numbers
are contended and only the ratios measured in the same run compare like with like.
EOF
    fi
    if grep -qF "$start" "$DOC" && grep -qF "$end" "$DOC"; then
        awk -v s="$start" -v e="$end" -v f="$body" '
            $0 == s { print; while ((getline line < f) > 0) print line; skip = 1; next }
            $0 == e { skip = 0 }
            !skip { print }' "$DOC" >"$DOC.tmp"
        mv "$DOC.tmp" "$DOC"
    else
        { printf '\n%s\n' "$start"; cat "$body"; printf '%s\n' "$end"; } >>"$DOC"
    fi
}
