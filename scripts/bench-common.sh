# Shared by scripts/bench, scripts/bench-scale and scripts/bench-cluster: waiting for a quiet
# machine, measuring what other processes used during a run, and repeating disturbed runs.
# Source it after setting OUT (results directory) and SERVER_PID (empty while no server runs,
# or the pids of several servers separated by spaces).

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

# Prints the pids of helper processes that the script started for its runs, such as a database
# server, one a line. Their CPU time is part of the system under test, not a disturbance. A
# script that starts helpers redefines this function after sourcing this file.
service_pids() { :; }

# other_ticks BEFORE AFTER [PID...]: prints the ticks used between two process_ticks snapshots
# by processes other than the servers, the given pids, the load generators and this script.
other_ticks() {
    local before=$1 after=$2
    shift 2
    awk -v excluded="$SERVER_PID $*" -v script="$$" '
        BEGIN { count = split(excluded, pids, " "); for (i = 1; i <= count; i++) skip[pids[i]] = 1 }
        NR == FNR { before[$1] = $3; next }
        ($1 in skip) || $1 == script { next }
        $2 ~ /^(keyhold-bench|wrk|taskset|sh|bash|sleep|pgrep|python3|awk|sed)$/ { next }
        { used += $3 - before[$1] }
        END { print used + 0 }' "$before" "$after"
}

# run_watched NAME COMMAND...: runs the command and measures the CPU time that other
# processes, kernel threads included, used meanwhile. Nothing polls during the run, because a
# poller that started processes twice a second added milliseconds to the open-loop p99.
# Returns 1 when the others used more than OTHER_CPU_LIMIT percent of one CPU or a compiler
# runs at the end. Exits the script when the command fails.
run_watched() {
    local name=$1
    shift
    local helpers
    helpers=$(service_pids)
    process_ticks >"$OUT/.ticks-before"
    local started=$SECONDS status=0
    "$@" || status=$?
    process_ticks >"$OUT/.ticks-after"
    helpers+=" $(service_pids)"
    local elapsed=$((SECONDS - started))
    if ((status != 0)); then
        log "FAILED with exit status $status: $*"
        exit 1
    fi
    local other_percent disturbed=0
    # $helpers is split into one argument per pid on purpose.
    # shellcheck disable=SC2086
    other_percent=$(($(other_ticks "$OUT/.ticks-before" "$OUT/.ticks-after" $helpers) * 100 / TICKS_PER_SECOND / (elapsed > 0 ? elapsed : 1)))
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

# Stops the servers started by the script, if any.
stop_server() {
    local pids
    read -ra pids <<<"$SERVER_PID"
    if ((${#pids[@]})); then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}

# remove_audit_logs DATA_DIR...: deletes the audit logs of the servers' data directories. Each
# request writes about 450 bytes of audit log, which adds up to gigabytes per script run.
remove_audit_logs() {
    local data
    for data in "$@"; do
        [[ -d "$data/audit" ]] || continue
        log "removing $(du -sh "$data/audit" | cut -f1) of audit logs in $data/audit"
        rm -rf "$data/audit"
    done
}
