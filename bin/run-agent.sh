#!/usr/bin/env bash
# run-agent.sh - the runner's supervisor loop.
#
# Runs one iteration (by default `python -m runner.one_job`) after another and acts on
# its exit code: 0 go on at once, 3 credentials rejected (TOKEN_EXPIRED marker, wait for
# a new credential), 4 usage limit (sleep until the reset), 143 stopped, anything else a
# failure (exponential backoff, UNHEALTHY marker after N in a row). Keeps
# $RUNNER_STATE_DIR/state.json up to date, writes one log file per iteration under
# $RUNNER_LOG_DIR/runs/ and rotates old ones. The operator's view of all this is
# docs/supervisor.md; keep the two in step.
#
# Pure bash (>= 5.1) plus coreutils, findutils, gzip. No eval, no jq.

set -u

readonly PROG=run-agent

# --------------------------------------------------------------------------------------
# Small helpers. Functions that compute a value put it in REPLY to spare a subshell.

log() {
    local TZ=UTC now
    printf -v now '%(%Y-%m-%dT%H:%M:%SZ)T' -1
    printf '%s %s: %s\n' "$now" "$PROG" "$*" >&2
}

# bad_setting NAME VALUE EXPECTED
bad_setting() {
    log "bad setting $1='$2': expected $3; exiting"
    exit 1
}

# now_ms -> REPLY: milliseconds since the epoch (bash's own clock, no fork).
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    REPLY=$((10#$t / 1000))
}

# iso EPOCH_SECONDS -> REPLY: 2026-11-20T22:57:33Z
iso() {
    local TZ=UTC
    printf -v REPLY '%(%Y-%m-%dT%H:%M:%SZ)T' "$1"
}

# fmt_s MS -> REPLY: human seconds for log lines: 5s, 0.05s, 1.5s
fmt_s() {
    local frac
    printf -v frac '%03d' $(($1 % 1000))
    while [[ $frac == *0 ]]; do frac=${frac%0}; done
    REPLY="$(($1 / 1000))${frac:+.$frac}s"
}

# sleep_arg MS -> REPLY: argument for sleep(1): 5.000
sleep_arg() {
    printf -v REPLY '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

# parse_thousandths NAME DEFAULT MIN_EXCLUSIVE_ZERO(0|1) WHAT -> REPLY
# A non-negative decimal number (at most 3 decimals count) as an integer of thousandths.
parse_thousandths() {
    local name=$1 def=$2 positive=$3 what=$4 val int frac
    val=${!name:-$def}
    if [[ ! $val =~ ^([0-9]{1,12})(\.([0-9]+))?$ ]]; then
        bad_setting "$name" "$val" "$what"
    fi
    int=${BASH_REMATCH[1]}
    frac="${BASH_REMATCH[3]}000"
    REPLY=$((10#$int * 1000 + 10#${frac:0:3}))
    if ((positive && REPLY <= 0)); then
        bad_setting "$name" "$val" "$what"
    fi
}

# parse_count NAME DEFAULT -> REPLY: a whole number >= 1
parse_count() {
    local name=$1 val
    val=${!name:-$2}
    if [[ ! $val =~ ^[0-9]{1,9}$ ]] || ((10#$val < 1)); then
        bad_setting "$name" "$val" "a whole number of at least 1"
    fi
    REPLY=$((10#$val))
}

# Control characters (0x01-0x1f) and their JSON escapes, built once.
JSON_CTRL=()
JSON_CTRL_ESC=()
init_json() {
    local i oct ch
    for ((i = 1; i < 32; i++)); do
        printf -v oct '%03o' "$i"
        printf -v ch '%b' "\\0$oct"
        JSON_CTRL+=("$ch")
        printf -v ch '\\u%04x' "$i"
        JSON_CTRL_ESC+=("$ch")
    done
}

# jstr VALUE -> REPLY: a JSON string literal, or null for an empty value.
jstr() {
    local s=$1 i
    if [[ -z $s ]]; then
        REPLY=null
        return
    fi
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    for i in "${!JSON_CTRL[@]}"; do
        s=${s//"${JSON_CTRL[i]}"/"${JSON_CTRL_ESC[i]}"}
    done
    REPLY="\"$s\""
}

# jnum VALUE -> REPLY: the number, or null when empty.
jnum() {
    REPLY=${1:-null}
}

# write_atomic PATH TEXT: temp file in the same directory, then rename over PATH.
write_atomic() {
    local tmp
    tmp="${1%/*}/.${1##*/}.tmp.$$"
    if ! { printf '%s' "$2" >"$tmp" && mv -f -- "$tmp" "$1"; } 2>/dev/null; then
        rm -f -- "$tmp" 2>/dev/null
        log "could not write $1"
        return 1
    fi
}

# --------------------------------------------------------------------------------------
# Settings. Empty counts as unset (docker-compose `VAR=` means "the default").

load_settings() {
    if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
        log "needs bash 5.1 or newer (this is $BASH_VERSION); exiting"
        exit 1
    fi
    local tool
    for tool in find gzip sha256sum mv rm ln sleep; do
        if ! type -P -- "$tool" >/dev/null; then
            log "needs '$tool' on PATH; exiting"
            exit 1
        fi
    done

    ITERATION_COMMAND=${RUNNER_ITERATION_COMMAND:-python -m runner.one_job}
    # Split into words on blanks; no quoting, no globbing, no eval.
    read -r -a CMD <<<"$ITERATION_COMMAND"
    if ((${#CMD[@]} == 0)); then
        bad_setting RUNNER_ITERATION_COMMAND "$ITERATION_COMMAND" "a command"
    fi
    if ! type -P -- "${CMD[0]}" >/dev/null; then
        bad_setting RUNNER_ITERATION_COMMAND "$ITERATION_COMMAND" \
            "a command whose first word is an executable ('${CMD[0]}' was not found)"
    fi

    local secs="a number of seconds greater than 0, like 5 or 0.5"
    parse_thousandths RUNNER_BACKOFF_START 5 1 "$secs"
    BACKOFF_START_MS=$REPLY
    parse_thousandths RUNNER_BACKOFF_MAX 300 1 "$secs"
    BACKOFF_MAX_MS=$REPLY
    if ((BACKOFF_START_MS > BACKOFF_MAX_MS)); then
        bad_setting RUNNER_BACKOFF_START "${RUNNER_BACKOFF_START:-5}" \
            "at most RUNNER_BACKOFF_MAX (${RUNNER_BACKOFF_MAX:-300})"
    fi
    parse_count RUNNER_MAX_CONSECUTIVE_FAILURES 5
    MAX_FAILURES=$REPLY
    parse_thousandths RUNNER_TOKEN_CHECK_SECONDS 60 1 "$secs"
    TOKEN_CHECK_MS=$REPLY
    parse_thousandths RUNNER_USAGE_LIMIT_MAX_SLEEP 21600 1 "$secs"
    USAGE_MAX_SLEEP_MS=$REPLY
    parse_thousandths RUNNER_STATE_HEARTBEAT_SECONDS 30 1 "$secs"
    HEARTBEAT_MS=$REPLY
    parse_thousandths RUNNER_LOG_GZIP_AFTER_HOURS 24 0 "a number of hours, 0 or more, like 24 or 0.5"
    GZIP_AFTER_MS=$((REPLY * 3600))
    parse_thousandths RUNNER_LOG_DELETE_AFTER_DAYS 14 0 "a number of days, 0 or more, like 14 or 0.5"
    DELETE_AFTER_MS=$((REPLY * 86400))

    CREDENTIAL_FILES=${RUNNER_CREDENTIAL_FILES:-${HOME:+$HOME/.claude/.credentials.json}}

    LOG_DIR=${RUNNER_LOG_DIR:-$PWD/logs}
    STATE_DIR=${RUNNER_STATE_DIR:-$PWD/state}
    [[ $LOG_DIR == /* ]] || LOG_DIR=$PWD/$LOG_DIR
    [[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
    RUNS_DIR=$LOG_DIR/runs
    JOBS_DIR=$LOG_DIR/jobs
    local dir
    for dir in "$RUNS_DIR" "$JOBS_DIR" "$STATE_DIR"; do
        if ! mkdir -p -- "$dir"; then
            log "cannot create directory $dir; exiting"
            exit 1
        fi
    done

    WORKER_ID=${RUNNER_WORKER_ID:-${HOSTNAME:-$(hostname 2>/dev/null || echo host)}-$$}

    export RUNNER_LOG_DIR=$LOG_DIR RUNNER_STATE_DIR=$STATE_DIR RUNNER_WORKER_ID=$WORKER_ID
}

# --------------------------------------------------------------------------------------
# state.json

STATUS=starting
declare -i ITERATION=0 FAILURES=0
ITERATION_STARTED_AT=
LAST_EXIT_CODE=
LAST_FINISHED_AT=
RUN_LOG=
BACKOFF_UNTIL=
USAGE_RESET_AT=

# current_job -> REPLY: the job id the iteration holds (first line, printable ASCII only).
current_job() {
    local LC_ALL=C line=''
    REPLY=
    [[ -f $STATE_DIR/current_job ]] || return 0
    { IFS= read -r -n 200 line || :; } 2>/dev/null <"$STATE_DIR/current_job"
    line=${line%$'\r'}
    line=${line//[^ -~]/?}
    line=${line%"${line##*[! ]}"}
    REPLY=$line
}

write_state() {
    local now job wid started exitc finished rlog bo usage
    now_ms
    iso $((REPLY / 1000))
    now=$REPLY
    current_job
    jstr "$REPLY"
    job=$REPLY
    jstr "$WORKER_ID"
    wid=$REPLY
    jstr "$ITERATION_STARTED_AT"
    started=$REPLY
    jnum "$LAST_EXIT_CODE"
    exitc=$REPLY
    jstr "$LAST_FINISHED_AT"
    finished=$REPLY
    jstr "$RUN_LOG"
    rlog=$REPLY
    jstr "$BACKOFF_UNTIL"
    bo=$REPLY
    jstr "$USAGE_RESET_AT"
    usage=$REPLY
    local json
    printf -v json '{\n  "status": "%s",\n  "supervisor_pid": %d,\n  "worker_id": %s,\n  "iteration": %d,\n  "iteration_started_at": %s,\n  "last_exit_code": %s,\n  "last_iteration_finished_at": %s,\n  "consecutive_failures": %d,\n  "current_job": %s,\n  "run_log": %s,\n  "backoff_until": %s,\n  "usage_limit_reset_at": %s,\n  "updated_at": "%s"\n}\n' \
        "$STATUS" "$$" "$wid" "$ITERATION" "$started" "$exitc" "$finished" \
        "$FAILURES" "$job" "$rlog" "$bo" "$usage" "$now"
    write_atomic "$STATE_DIR/state.json" "$json"
}

# --------------------------------------------------------------------------------------
# Signals. Handlers only note the request and pass it on; the main flow does the rest.

STOP_SIGNAL=
CHILD=
SLEEPER=
TIMER=

# shellcheck disable=SC2329  # invoked by the traps below
on_signal() {
    [[ -n $STOP_SIGNAL ]] || STOP_SIGNAL=$1
    if [[ -n $CHILD ]]; then kill -TERM "$CHILD" 2>/dev/null; fi
    if [[ -n $SLEEPER ]]; then kill "$SLEEPER" 2>/dev/null; fi
}

# shellcheck disable=SC2329  # invoked by the EXIT trap
on_exit() {
    # Normal paths leave nothing behind; this covers an unexpected exit.
    if [[ -n $TIMER ]]; then kill "$TIMER" 2>/dev/null; fi
    if [[ -n $SLEEPER ]]; then kill "$SLEEPER" 2>/dev/null; fi
    if [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null; then
        wait "$CHILD" 2>/dev/null
    fi
}

trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP
trap on_exit EXIT

stopping() { [[ -n $STOP_SIGNAL ]]; }

# nap_until DEADLINE_MS: sleep until then, refreshing state.json at least every
# heartbeat. Returns 1 at once when a stop is requested.
nap_until() {
    local deadline=$1 rem chunk
    while ! stopping; do
        now_ms
        rem=$((deadline - REPLY))
        ((rem > 0)) || return 0
        chunk=$((rem < HEARTBEAT_MS ? rem : HEARTBEAT_MS))
        sleep_arg "$chunk"
        sleep "$REPLY" &
        SLEEPER=$!
        # A signal from now on finds SLEEPER set and the handler kills it, which ends
        # the wait at once; one that came just before is caught by this check.
        if stopping; then kill "$SLEEPER" 2>/dev/null; fi
        wait "$SLEEPER" 2>/dev/null
        kill "$SLEEPER" 2>/dev/null
        wait "$SLEEPER" 2>/dev/null
        SLEEPER=
        stopping || write_state
    done
    return 1
}

# --------------------------------------------------------------------------------------
# Log rotation: gzip old run logs, point job links at the .gz, delete very old run logs,
# drop job links whose run log is gone.

rotate_logs() {
    local now f name target cand gz_cutoff del_cutoff tmp
    local -i gzipped=0 relinked=0 deleted=0 pruned=0
    now_ms
    now=$REPLY
    # Cutoffs as @seconds.millis for find -newermt (a log written a moment ago must
    # count as older than "0 hours").
    printf -v gz_cutoff '@%d.%03d' $(((now - GZIP_AFTER_MS) / 1000)) $(((now - GZIP_AFTER_MS) % 1000))
    printf -v del_cutoff '@%d.%03d' $(((now - DELETE_AFTER_MS) / 1000)) $(((now - DELETE_AFTER_MS) % 1000))

    # Very old run logs go first, so that none is compressed only to be deleted.
    while IFS= read -r -d '' f; do
        rm -f -- "$f" && deleted+=1
    done < <(find "$RUNS_DIR" -maxdepth 1 -type f \( -name '*.log' -o -name '*.log.gz' \) \
        ! -newermt "$del_cutoff" -print0 2>/dev/null)

    # Rotation runs between iterations, so no run log is being written to now.
    while IFS= read -r -d '' f; do
        if gzip -f -- "$f" 2>/dev/null; then
            gzipped+=1
        else
            log "rotation: could not gzip $f"
        fi
    done < <(find "$RUNS_DIR" -maxdepth 1 -type f -name '*.log' ! -newermt "$gz_cutoff" -print0 2>/dev/null)

    # jobs/<id>.log -> ../runs/X.log whose X.log became X.log.gz:
    # replace it with jobs/<id>.log.gz -> ../runs/X.log.gz (still relative).
    while IFS= read -r -d '' name && IFS= read -r -d '' target; do
        [[ -e $JOBS_DIR/$name ]] && continue
        cand=$target.gz
        if [[ $cand == /* ]]; then f=$cand; else f=$JOBS_DIR/$cand; fi
        [[ -f $f ]] || continue
        tmp=$JOBS_DIR/.$name.gz.tmp.$$
        if ln -sfn -- "$cand" "$tmp" 2>/dev/null && mv -fT -- "$tmp" "$JOBS_DIR/$name.gz" 2>/dev/null; then
            rm -f -- "$JOBS_DIR/$name"
            relinked+=1
        else
            rm -f -- "$tmp"
            log "rotation: could not re-point $JOBS_DIR/$name"
        fi
    done < <(find "$JOBS_DIR" -maxdepth 1 -type l -name '*.log' -printf '%f\0%l\0' 2>/dev/null)

    while IFS= read -r -d '' f; do
        rm -f -- "$f" && pruned+=1
    done < <(find "$JOBS_DIR" -maxdepth 1 -xtype l -print0 2>/dev/null)

    if ((gzipped + relinked + deleted + pruned)); then
        log "rotation: gzipped $gzipped run log(s), re-pointed $relinked job link(s), deleted $deleted run log(s), removed $pruned stale job link(s)"
    fi
}

# --------------------------------------------------------------------------------------
# One iteration.

LAST_TS=
declare -i TS_SEQ=0

# new_run_log -> RUN_LOG: runs/<UTC timestamp>-<n>.log, created here so it is unique.
new_run_log() {
    local TZ=UTC ts f tries
    printf -v ts '%(%Y%m%dT%H%M%SZ)T' -1
    if [[ $ts == "$LAST_TS" ]]; then
        TS_SEQ+=1
    else
        LAST_TS=$ts
        TS_SEQ=1
    fi
    for ((tries = 0; tries < 1000; tries++)); do
        f=$RUNS_DIR/$ts-$TS_SEQ.log
        if [[ ! -e $f.gz ]] && (set -C && : >"$f") 2>/dev/null; then
            RUN_LOG=$f
            return 0
        fi
        TS_SEQ+=1
    done
    return 1
}

# note_stop: once per stop request while an iteration runs, say so.
note_stop() {
    if stopping && [[ $STATUS != stopping ]]; then
        STATUS=stopping
        write_state
        log "received SIG$STOP_SIGNAL; sent SIGTERM to iteration $ITERATION (pid $CHILD), waiting for it"
    fi
}

# run_iteration -> RC: the iteration's exit code.
run_iteration() {
    local who r stale
    ITERATION+=1
    now_ms
    iso $((REPLY / 1000))
    ITERATION_STARTED_AT=$REPLY
    BACKOFF_UNTIL=
    USAGE_RESET_AT=
    if ! new_run_log; then
        log "iteration $ITERATION: cannot create a run log in $RUNS_DIR; counting it as failed"
        RC=1
        LAST_EXIT_CODE=1
        LAST_FINISHED_AT=$ITERATION_STARTED_AT
        return
    fi
    export RUNNER_RUN_LOG=$RUN_LOG
    STATUS=running
    write_state
    log "iteration $ITERATION starting; output in $RUN_LOG"

    command -- "${CMD[@]}" </dev/null >>"$RUN_LOG" 2>&1 &
    CHILD=$!
    # A signal that came between the last check and $! being known is passed on here.
    if stopping; then kill -TERM "$CHILD" 2>/dev/null; fi

    # Wait for the iteration, waking up every heartbeat to refresh state.json. `wait -n`
    # reports the iteration's status in the normal case; when a trapped signal
    # interrupts it just as the iteration dies, bash may not report that pid again, so
    # a dead iteration is also noticed with kill -0 and its status taken by plain wait.
    while :; do
        note_stop
        if ! kill -0 "$CHILD" 2>/dev/null; then
            wait "$CHILD" 2>/dev/null
            RC=$?
            break
        fi
        sleep_arg "$HEARTBEAT_MS"
        sleep "$REPLY" &
        TIMER=$!
        who=
        wait -n -p who "$CHILD" "$TIMER"
        r=$?
        if [[ ${who-} != "$TIMER" ]]; then
            kill "$TIMER" 2>/dev/null
            wait "$TIMER" 2>/dev/null
        fi
        TIMER=
        if [[ ${who-} == "$CHILD" ]]; then
            RC=$r
            break
        fi
        # The heartbeat timer ran out, or a trapped signal interrupted the wait.
        write_state
    done
    note_stop # (the iteration may have ended before the loop saw the signal)
    # bash reports a status it lost track of as -1; keep the state file a valid number.
    if ((RC < 0 || RC > 255)); then RC=255; fi
    CHILD=
    LAST_EXIT_CODE=$RC
    now_ms
    iso $((REPLY / 1000))
    LAST_FINISHED_AT=$REPLY

    # The iteration removes current_job when it lets go of its job; when it died
    # without doing so, the file is stale now.
    if [[ -f $STATE_DIR/current_job ]]; then
        current_job
        stale=$REPLY
        rm -f -- "$STATE_DIR/current_job"
        log "iteration $ITERATION left current_job ($stale) behind; removed it"
    fi
}

# --------------------------------------------------------------------------------------
# What to do after each exit code.

declare -i BACKOFF_MS=0

on_success() {
    FAILURES=0
    BACKOFF_MS=0
    STATUS=running
    write_state
    if [[ -f $STATE_DIR/UNHEALTHY ]]; then
        rm -f -- "$STATE_DIR/UNHEALTHY"
        log "iteration $ITERATION succeeded; removed UNHEALTHY"
    fi
}

on_failure() {
    local rc=$1 note='' wait_ms when pretty plural=s
    FAILURES+=1
    if ((BACKOFF_MS == 0)); then
        BACKOFF_MS=$BACKOFF_START_MS
    else
        BACKOFF_MS=$((BACKOFF_MS * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : BACKOFF_MS * 2))
    fi
    if ((rc == 143)); then note=" (SIGTERM, but not from this supervisor)"; fi
    if ((FAILURES >= MAX_FAILURES)); then
        # Unhealthy: stay up, retrying at the longest backoff.
        BACKOFF_MS=$BACKOFF_MAX_MS
        fmt_s "$BACKOFF_MS"
        pretty=$REPLY
        write_atomic "$STATE_DIR/UNHEALTHY" \
            "$FAILURES iterations in a row failed; the last one (iteration $ITERATION) exited $rc at $LAST_FINISHED_AT; its output is in $RUN_LOG. The supervisor keeps retrying every $pretty and removes this file after the next successful iteration.
"
        note+="; wrote UNHEALTHY"
    fi
    now_ms
    wait_ms=$((REPLY + BACKOFF_MS))
    iso $((wait_ms / 1000))
    BACKOFF_UNTIL=$REPLY
    STATUS=backoff
    write_state
    fmt_s "$BACKOFF_MS"
    when=$REPLY
    ((FAILURES > 1)) || plural=
    log "iteration $ITERATION exited $rc$note; backing off $when ($FAILURES failure$plural in a row)"
    nap_until "$wait_ms"
    BACKOFF_UNTIL=
}

# fingerprint -> REPLY: sha256 over the credential sources (their paths and contents;
# a missing file counts too). The credential itself is never printed.
fingerprint() {
    local -a files=()
    local f
    IFS=: read -r -a files <<<"$CREDENTIAL_FILES"
    files+=("$STATE_DIR/credential.env")
    REPLY=$(
        for f in "${files[@]}"; do
            [[ -n $f ]] || continue
            if [[ -f $f && -r $f ]]; then
                printf '%s %s\n' "$f" "$(sha256sum <"$f" 2>/dev/null)"
            else
                printf '%s missing\n' "$f"
            fi
        done | sha256sum
    )
}

on_token_expired() {
    local fp deadline every sources
    fingerprint
    fp=$REPLY
    fmt_s "$TOKEN_CHECK_MS"
    every=$REPLY
    sources=${CREDENTIAL_FILES//:/, }
    sources="${sources:+$sources, or }$STATE_DIR/credential.env"
    write_atomic "$STATE_DIR/TOKEN_EXPIRED" \
        "The agent's credentials were rejected: iteration $ITERATION exited 3 at $LAST_FINISHED_AT; its output is in $RUN_LOG.
No jobs are claimed until the credential changes.
What to do: replace the credential ($sources). The supervisor checks every $every, removes this file and resumes by itself; restarting the container also removes it and tries again.
"
    STATUS=token_expired
    write_state
    log "iteration $ITERATION exited 3: the agent's credentials were rejected; wrote TOKEN_EXPIRED; claiming nothing until the credential changes (checking every $every)"
    while :; do
        now_ms
        deadline=$((REPLY + TOKEN_CHECK_MS))
        nap_until "$deadline" || return
        fingerprint
        [[ $REPLY == "$fp" ]] || break
    done
    rm -f -- "$STATE_DIR/TOKEN_EXPIRED"
    STATUS=running
    write_state
    log "the credential changed; removed TOKEN_EXPIRED; resuming"
}

on_usage_limit() {
    local file=$STATE_DIR/usage_limit_reset_at raw='' reset now deadline pretty
    { IFS= read -r -n 64 raw || :; } 2>/dev/null <"$file"
    raw=${raw//[^0-9A-Za-z:.+ -]/?}
    raw=${raw#"${raw%%[! ]*}"}
    raw=${raw%"${raw##*[! ]}"}
    now_ms
    now=$REPLY
    if [[ $raw =~ ^[0-9]{1,12}$ ]]; then
        reset=$((10#$raw))
        iso "$reset"
        USAGE_RESET_AT=$REPLY
        deadline=$((reset * 1000))
        if ((deadline <= now)); then
            deadline=$((now + BACKOFF_START_MS))
            fmt_s "$BACKOFF_START_MS"
            pretty="the reset time $USAGE_RESET_AT has passed already; going on in $REPLY"
        elif ((deadline - now > USAGE_MAX_SLEEP_MS)); then
            deadline=$((now + USAGE_MAX_SLEEP_MS))
            fmt_s "$USAGE_MAX_SLEEP_MS"
            pretty="sleeping until $USAGE_RESET_AT capped at RUNNER_USAGE_LIMIT_MAX_SLEEP ($REPLY)"
        else
            fmt_s $((deadline - now))
            pretty="sleeping until $USAGE_RESET_AT ($REPLY)"
        fi
    else
        USAGE_RESET_AT=
        deadline=$((now + BACKOFF_MAX_MS))
        fmt_s "$BACKOFF_MAX_MS"
        if [[ -f $file ]]; then
            pretty="$file does not hold a Unix time ('$raw'); sleeping RUNNER_BACKOFF_MAX ($REPLY)"
        else
            pretty="$file is missing; sleeping RUNNER_BACKOFF_MAX ($REPLY)"
        fi
    fi
    STATUS=usage_limited
    write_state
    log "iteration $ITERATION exited 4: usage limit reached; $pretty"
    nap_until "$deadline" || return
    USAGE_RESET_AT=
    STATUS=running
    write_state
    log "usage-limit wait over; going on"
}

# --------------------------------------------------------------------------------------

main() {
    init_json
    load_settings

    if [[ -f $STATE_DIR/TOKEN_EXPIRED ]]; then
        rm -f -- "$STATE_DIR/TOKEN_EXPIRED"
        log "removed a TOKEN_EXPIRED marker left from before the restart; trying again"
    fi
    STATUS=starting
    write_state
    log "starting (pid $$, worker $WORKER_ID): command '$ITERATION_COMMAND', logs in $LOG_DIR, state in $STATE_DIR"

    while ! stopping; do
        rotate_logs
        stopping && break
        run_iteration
        stopping && break
        case $RC in
        0) on_success ;;
        3) on_token_expired ;;
        4) on_usage_limit ;;
        *) on_failure "$RC" ;;
        esac
    done

    local code
    case $STOP_SIGNAL in
    INT) code=130 ;;
    HUP) code=129 ;;
    *) code=143 ;;
    esac
    BACKOFF_UNTIL=
    STATUS=stopped
    write_state
    log "stopped on SIG$STOP_SIGNAL; exiting $code"
    exit "$code"
}

main "$@"
