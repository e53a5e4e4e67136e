# Shared by the bench scripts; expects $TMP and a `die` function.

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
