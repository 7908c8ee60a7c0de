# Shared by scripts/bench and scripts/bench-scale: waiting for a quiet machine, measuring
# what other processes used during a run, and repeating disturbed runs. Source it after
# setting OUT (results directory) and SERVER_PID (empty while no server runs).

LOG="$OUT/log.txt"
OTHER_CPU_LIMIT=${OTHER_CPU_LIMIT:-25}
TICKS_PER_SECOND=$(getconf CLK_TCK)

log() { printf '== %s\n' "$*" | tee -a "$LOG" >&2; }

# Succeeds when a compiler or linker is running.
compiler_running() {
    local name
    for name in rustc cargo cc cc1 ld ld.lld clang; do
        pgrep -x "$name" >/dev/null && return 0
    done
    return 1
}

# Waits until no compiler process has been seen for three seconds in a row (at most 15 min).
wait_quiet() {
    local quiet=0 waited=0
    while ((quiet < 3 && waited < 900)); do
        if compiler_running; then quiet=0; else quiet=$((quiet + 1)); fi
        sleep 1
        waited=$((waited + 1))
    done
    { uptime; top -bn1 | head -12 | tail -6; } >>"$LOG"
}

# Prints the clock ticks (utime + stime) each process has used, one "PID NAME TICKS" a line.
process_ticks() {
    local stat
    for stat in /proc/[0-9]*/stat; do
        sed -E 's/^([0-9]+) \((.*)\) [A-Za-z] (([^ ]+ ){10})([0-9]+) ([0-9]+) .*/\1 \2 \5 \6/' "$stat" 2>/dev/null
    done | awk 'NF >= 4 { print $1, $2, $(NF - 1) + $NF }'
}

# other_ticks BEFORE AFTER: prints the ticks used between two process_ticks snapshots by
# processes other than the server, the load generators and this script.
other_ticks() {
    awk -v server="$SERVER_PID" -v script="$$" '
        NR == FNR { before[$1] = $3; next }
        $1 == server || $1 == script { next }
        $2 ~ /^(keyhold-bench|wrk|taskset|sh|bash|sleep|pgrep|python3|awk|sed)$/ { next }
        { used += $3 - before[$1] }
        END { print used + 0 }' "$1" "$2"
}

# run_watched NAME COMMAND...: runs the command and measures the CPU time that other
# processes, kernel threads included, used meanwhile. Nothing polls during the run, because a
# poller that started processes twice a second added milliseconds to the open-loop p99.
# Returns 1 when the others used more than OTHER_CPU_LIMIT percent of one CPU (the machine has
# two) or a compiler runs at the end; exits the script when the command fails.
run_watched() {
    local name=$1
    shift
    process_ticks >"$OUT/.ticks-before"
    local started=$SECONDS status=0
    "$@" || status=$?
    process_ticks >"$OUT/.ticks-after"
    local elapsed=$((SECONDS - started))
    if ((status != 0)); then
        log "FAILED with exit status $status: $*"
        exit 1
    fi
    local other_percent disturbed=0
    other_percent=$(($(other_ticks "$OUT/.ticks-before" "$OUT/.ticks-after") * 100 / TICKS_PER_SECOND / (elapsed > 0 ? elapsed : 1)))
    log "$name: other processes used $other_percent % of one CPU"
    echo "$name $other_percent" >>"$OUT/other-cpu.txt"
    if ((other_percent > OTHER_CPU_LIMIT)); then
        disturbed=1
    fi
    if compiler_running; then
        log "$name: a compiler was running at the end"
        disturbed=1
    fi
    ((disturbed == 0))
}

# measure NAME COMMAND...: runs a measurement up to three times until it was undisturbed.
measure() {
    local name=$1
    shift
    if [[ -n "${ONLY:-}" && ! $name =~ $ONLY ]]; then
        return 0
    fi
    local attempt
    for attempt in 1 2 3; do
        wait_quiet
        log "$name (attempt $attempt): $*"
        if run_watched "$name" "$@"; then
            return 0
        fi
        log "$name: disturbed by a compiler or by other processes"
    done
    echo "$name" >>"$OUT/disturbed.txt"
}

# Stops the server started by the script, if any.
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
            fi
}
