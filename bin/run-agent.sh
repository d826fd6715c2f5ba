#!/usr/bin/env bash
# run-agent.sh - the runner's supervisor loop.
#
# Runs one iteration (by default `python -m runner.one_job`) after another. This script
# does only what a shell loop must: start each iteration, pass signals on to it, wait,
# and sleep so that a signal ends the sleep at once. What each exit code means (backoff,
# UNHEALTHY, TOKEN_EXPIRED, the usage-limit sleep), the settings, state.json, run log
# names and their rotation are decided by a helper process, `python -m runner.supervise`
# (runner/supervise.py, with the line protocol it speaks), which this script starts once
# as a coprocess. The operator's view is docs/supervisor.md.
#
# Between iterations nothing is forked: waits use `wait` and `read -t`, not sleep(1).

set -u

log() {
    local TZ=UTC now
    printf -v now '%(%Y-%m-%dT%H:%M:%SZ)T' -1
    printf '%s run-agent: %s\n' "$now" "$*" >&2
}

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    log "needs bash 5.1 or newer (this is $BASH_VERSION); exiting"
    exit 1
fi

# --------------------------------------------------------------------------------------
# Signals. Handlers only note the request and pass it on; the main flow does the rest.

STOP_SIGNAL=
declare -i SIGNALS=0
CHILD=
TO_HELPER=
FROM_HELPER=
HELPER_PID=
NAPFD=

# shellcheck disable=SC2329  # invoked by the traps below
on_signal() {
    [[ -n $STOP_SIGNAL ]] || STOP_SIGNAL=$1
    SIGNALS+=1
    # A running iteration gets its SIGTERM from run_iteration, once state.json says
    # stopping (the trap cuts its `wait` short): exactly one, whatever it sees first.
    # Wakes a nap (a `read -t` on this pipe) at once.
    if [[ -n $NAPFD ]]; then printf x >&"$NAPFD"; fi
}

# shellcheck disable=SC2329  # invoked by the EXIT trap
on_exit() {
    # Normal paths leave nothing behind; this covers an unexpected exit too.
    if [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null; then
        wait "$CHILD" 2>/dev/null
    fi
    if [[ -n $TO_HELPER ]]; then exec {TO_HELPER}>&-; fi
    if [[ -n $HELPER_PID ]]; then wait "$HELPER_PID" 2>/dev/null; fi
}

trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP
trap on_exit EXIT
# With stderr a pipe whose reader has gone (`run-agent.sh | tee`, then Ctrl-C), a log line
# must fail quietly, not kill the supervisor before it has stopped cleanly.
trap '' PIPE

stopping() { [[ -n $STOP_SIGNAL ]]; }

# --------------------------------------------------------------------------------------
# The helper: one request line out, one answer line back (into REPLY).

start_helper() {
    local -a python iteration
    # By default the python that runs the iteration, when the iteration is a python.
    read -r -a iteration <<<"${RUNNER_ITERATION_COMMAND:-python -m runner.one_job}"
    python=(python3)
    if [[ ${iteration[0]:-} == *python* ]]; then python=("${iteration[0]}"); fi
    if [[ -n ${RUNNER_PYTHON:-} ]]; then read -r -a python <<<"$RUNNER_PYTHON"; fi
    if ! type -P -- "${python[0]:-}" >/dev/null; then
        log "bad setting RUNNER_PYTHON='${python[*]}': expected the python that has the runner installed (not found); exiting"
        exit 1
    fi
    coproc HELPER { exec "${python[@]}" -m runner.supervise "$$"; }
    # Plain variables: the coprocess's array is unset when the coprocess ends.
    TO_HELPER=${HELPER[1]}
    FROM_HELPER=${HELPER[0]}
}

# ask REQUEST -> REPLY
ask() {
    if ! { printf '%s\n' "$1" >&"$TO_HELPER"; } 2>/dev/null || ! IFS= read -r REPLY <&"$FROM_HELPER"; then
        log "the supervisor's helper (python -m runner.supervise) has gone; exiting"
        exit 1
    fi
}

# greet: the helper's answer to starting: the environment and command of every iteration.
greet() {
    CMD=()
    while :; do
        IFS= read -r REPLY <&"$FROM_HELPER" || REPLY=fatal
        case $REPLY in
        "env "*)
            local pair=${REPLY#env }
            export "${pair%% *}=${pair#* }"
            ;;
        "arg "*) CMD+=("${REPLY#arg }") ;;
        ready) return 0 ;;
        *) exit 1 ;; # fatal: the helper said why
        esac
    done
}

# --------------------------------------------------------------------------------------
# What the helper asks for.

# run_iteration RUN_LOG -> RC
run_iteration() {
    export RUNNER_RUN_LOG=$1
    # (The iteration gets SIGPIPE back at its default; the subshell execs, so no extra process.)
    (trap - PIPE && exec -- "${CMD[@]}") </dev/null >>"$RUNNER_RUN_LOG" 2>&1 {TO_HELPER}>&- {FROM_HELPER}<&- {NAPFD}<&- &
    CHILD=$!
    ask "child $CHILD"
    local noted='' r seen again
    while :; do
        if stopping && [[ -z $noted ]]; then
            noted=1
            ask "stopping $STOP_SIGNAL"
            # Only now, with state.json saying stopping: a SIGTERM that lands between the
            # fork and the exec reaches the forked shell and is lost, and the iteration
            # then reads `stopping` once its handlers are in place (runner/state.py).
            kill -TERM "$CHILD" 2>/dev/null
        fi
        seen=$SIGNALS
        wait "$CHILD"
        r=$?
        ((seen == SIGNALS)) && break # the iteration ended
        # A trapped signal cut the wait short. The iteration may still run (wait again),
        # or have ended in the same instant: then its status is what `wait` gives now,
        # or, if bash had handed it out already (127 now), the one it gave above.
        if ! kill -0 "$CHILD" 2>/dev/null; then
            wait "$CHILD" 2>/dev/null
            again=$?
            ((again == 127)) || r=$again
            break
        fi
    done
    RC=$r
    CHILD=
    if stopping && [[ -z $noted ]]; then ask "stopping $STOP_SIGNAL"; fi
}

# nap SECONDS: returns early when a stop is requested.
nap() {
    stopping && return
    read -r -t "$1" -n 1 -u "$NAPFD" _
}

# --------------------------------------------------------------------------------------

main() {
    # A pipe that nothing writes to but the signal handlers: `read -t` on it is a sleep
    # that forks nothing, and a signal ends it at once.
    exec {NAPFD}<> <(:)
    start_helper
    greet
    ask begin
    while :; do
        case $REPLY in
        "run "*)
            run_iteration "${REPLY#run }"
            ask "exited $RC"
            ;;
        "wait "*)
            nap "${REPLY#wait }"
            if stopping; then ask "stopped $STOP_SIGNAL"; else ask woke; fi
            ;;
        "exit "*) exit "${REPLY#exit }" ;;
        *)
            log "the supervisor's helper said '$REPLY'; exiting"
            exit 1
            ;;
        esac
        if stopping && [[ $REPLY != "exit "* ]]; then ask "stopped $STOP_SIGNAL"; fi
    done
}

main "$@"
