#!/usr/bin/env bash
# Container entrypoint for runner (PID 1 is tini; see docker/Dockerfile).
#   1. as root: create the data dirs, give them to RUNNER_RUN_AS, re-exec as that user
#      (with CAP_SETUID/SETGID/KILL/CHOWN only when RUNNER_AGENT_USER gives the agent a uid)
#   2. a worker id and state dir of this container's own (a link into RUNNER_STATE_SHARE)
#   3. wait for the database (python -m runner.dbwait), then `runner migrate`
#   4. pre-clone RUNNER_PRECLONE_REPOS (python -m runner.preclone; failures are not fatal)
#   5. `runner health --serve` in the background (unless RUNNER_HEALTH_PORT=0)
#   6. exec the supervisor bin/run-agent.sh
# With arguments (`docker compose run --rm runner runner jobs`) steps 1-2 run, then the
# arguments are exec'd. Works on a plain host too. Never prints DATABASE_URL or tokens.
set -euo pipefail
log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
SELF=$(readlink -f "${BASH_SOURCE[0]}")
BIN_DIR=$(dirname "$SELF")
PYTHON=${RUNNER_PYTHON:-python3}          # the runner's venv python (runner.dbwait, runner.preclone)
RUNNER_CLI=${RUNNER_CLI:-runner}          # the runner console script
SUPERVISOR=${RUNNER_SUPERVISOR:-$BIN_DIR/run-agent.sh}
: "${RUNNER_DATA_DIR:=/data}" "${RUNNER_LOG_DIR:=$RUNNER_DATA_DIR/logs}" "${RUNNER_CACHE_DIR:=$RUNNER_DATA_DIR/cache}"
: "${RUNNER_JOB_ROOT:=$RUNNER_DATA_DIR/jobs}" "${RUNNER_STATE_DIR:=$RUNNER_DATA_DIR/state}"
export RUNNER_LOG_DIR RUNNER_CACHE_DIR RUNNER_JOB_ROOT RUNNER_STATE_DIR
data_dirs=("$RUNNER_LOG_DIR" "$RUNNER_CACHE_DIR" "$RUNNER_JOB_ROOT" "${RUNNER_STATE_SHARE:-$RUNNER_STATE_DIR}")

# ---------------------------------------------------------------- 1. privileges
drop_privileges() {
    local spec=$1 user=${1%%:*} group="" uid gid home groups d caps=""
    shift
    [[ "$spec" == *:* ]] && group=${spec#*:}
    [[ "$user" =~ ^[0-9]+$ ]] && uid=$user || uid=$(id -u "$user" 2> /dev/null) || die "RUNNER_RUN_AS=$spec: no such user"
    if [[ "$group" =~ ^[0-9]+$ ]]; then gid=$group
    elif [[ -n "$group" ]]; then gid=$(getent group "$group" | cut -d: -f3) || die "RUNNER_RUN_AS=$spec: no such group"
    else gid=$(id -g "$uid" 2> /dev/null) || gid=$uid; fi
    ((uid != 0)) || { log "RUNNER_RUN_AS=$spec is root: staying root"; return 0; }
    for d in "${data_dirs[@]}"; do
        mkdir -p "$d"
        if [[ "${RUNNER_FIX_OWNERSHIP:-1}" != "0" && "$(stat -c %u "$d")" != "$uid" ]]; then
            log "data dir $d belongs to uid $(stat -c %u "$d"): chown -R $uid:$gid (RUNNER_FIX_OWNERSHIP=0 skips this)"
            chown -R "$uid:$gid" "$d"
        fi
    done
    # The state link is made after the drop, so its parent must be ours.
    d=$(dirname "$RUNNER_STATE_DIR")
    [[ -d "$d" ]] || { mkdir -p "$d" && chown "$uid:$gid" "$d"; }
    if home=$(getent passwd "$uid" | cut -d: -f6); then
        groups=--init-groups USER=$(getent passwd "$uid" | cut -d: -f1) && export USER LOGNAME=$USER
    else # a uid without a passwd entry: no groups, a private HOME
        groups=--clear-groups home=${TMPDIR:-/tmp}/runner-home-$uid
        mkdir -p "$home" && chown "$uid:$gid" "$home" && chmod 0700 "$home"
    fi
    export HOME=$home RUNNER_ENTRYPOINT_DROPPED=1
    # The runner starts the agent as its own user (runner/agent_user.py): that takes these
    # four, as ambient capabilities of the non-root runner; the agent gets none of them.
    if [[ -n "${RUNNER_AGENT_USER:-}" ]]; then caps=+setuid,+setgid,+kill,+chown; fi
    log "dropping root: continuing as uid=$uid gid=$gid (HOME=$HOME, capabilities: ${caps:-none})"
    exec setpriv --reuid="$uid" --regid="$gid" "$groups" --inh-caps="-all${caps:+,$caps}" --ambient-caps="-all${caps:+,$caps}" \
        -- "$BASH" "$SELF" "$@"
}
if [[ "$(id -u)" == "0" ]]; then
    [[ -z "${RUNNER_ENTRYPOINT_DROPPED:-}" ]] || die "still root after dropping privileges"
    [[ -z "${RUNNER_RUN_AS:-}" ]] || drop_privileges "$RUNNER_RUN_AS" "$@"
    log "running as root (RUNNER_RUN_AS empty or root); note: Claude Code refuses bypassPermissions as root"
fi
# ---------------------------------------------------------------- 2. worker id and state
for d in "${data_dirs[@]}"; do
    mkdir -p "$d" 2> /dev/null || true
    [[ -d "$d" && -w "$d" ]] ||
        die "$d is not writable by uid $(id -u): on the NAS, give that folder to uid $(id -u) (chown -R $(id -u):$(id -g)), or start the container as root with RUNNER_RUN_AS set"
done
# With host networking every replica has the host's hostname: the container's own id (which
# its /etc/hostname mount names, under Docker and Podman) tells them apart.
container_id() {
    local id
    id=$(grep -o -m1 -E 'containers/[0-9a-f]{64}/' /proc/self/mountinfo 2> /dev/null) && echo "${id:11:12}"
}
host=${HOSTNAME:-$(uname -n)} cid=$(container_id || true)
if [[ -z "${RUNNER_WORKER_ID:-}" && -n "$cid" && "$host" != "$cid"* ]]; then
    export RUNNER_WORKER_ID=$host-$cid # else the supervisor names itself <hostname>-<pid>
fi
if [[ -n "${RUNNER_STATE_SHARE:-}" && $# -eq 0 ]]; then
    # One folder per container on the shared mount; RUNNER_STATE_DIR (a fixed path, which the
    # HEALTHCHECK and `docker compose exec` also see) links to it.
    name=${RUNNER_WORKER_ID:-$host}
    target=$RUNNER_STATE_SHARE/${name//[^A-Za-z0-9._-]/_}
    mkdir -p "$target"
    [[ ! -d "$RUNNER_STATE_DIR" || -L "$RUNNER_STATE_DIR" ]] || rmdir "$RUNNER_STATE_DIR" 2> /dev/null ||
        die "RUNNER_STATE_DIR=$RUNNER_STATE_DIR is a non-empty directory; with RUNNER_STATE_SHARE set it must be a free path"
    mkdir -p "$(dirname "$RUNNER_STATE_DIR")" 2> /dev/null || die "cannot create $(dirname "$RUNNER_STATE_DIR") as uid $(id -u)"
    ln -sfn "$target" "$RUNNER_STATE_DIR"
    log "state dir $RUNNER_STATE_DIR -> $target"
else
    mkdir -p "$RUNNER_STATE_DIR"
    log "state dir $RUNNER_STATE_DIR"
fi
log "logs $RUNNER_LOG_DIR, cache $RUNNER_CACHE_DIR, jobs $RUNNER_JOB_ROOT"
# Markers from a previous run (a recreated container may have a new token) are set aside.
if [[ "${RUNNER_CLEAR_MARKERS:-1}" != "0" && $# -eq 0 ]]; then
    for m in TOKEN_EXPIRED UNHEALTHY; do
        if [[ -e "$RUNNER_STATE_DIR/$m" ]]; then mv -f "$RUNNER_STATE_DIR/$m" "$RUNNER_STATE_DIR/$m.previous"
            log "marker $m from the previous run moved to $m.previous; the next job re-checks"; fi
    done
fi
(($# == 0)) || { log "running: $1 (database wait, migrations and supervisor skipped)"; exec "$@"; }
# ---------------------------------------------------------------- 3. database
"$PYTHON" -m runner.dbwait "${RUNNER_DB_WAIT_SECONDS:-60}" || exit 1
if [[ "${RUNNER_MIGRATE:-1}" == "0" ]]; then log "migrations skipped (RUNNER_MIGRATE=0)"; else
    for attempt in 1 2 3; do # replicas starting together may race on the first migration
        "$RUNNER_CLI" migrate && { log "database schema up to date (runner migrate)"; break; }
        ((attempt < 3)) || die "runner migrate failed 3 times; see the messages above"
        log "runner migrate failed (attempt $attempt of 3); retrying in 5s"
        sleep 5
    done
fi
# ---------------------------------------------------------------- 4. pre-clone
"$PYTHON" -m runner.preclone "${RUNNER_PRECLONE_REPOS:-}" || log "pre-clone: skipped (see above)"
# ---------------------------------------------------------------- 5. health server
# Started before the exec below, so the supervisor (same pid) becomes its parent; with
# setpriv's parent-death signal it ends when the supervisor does, also on a plain host.
if [[ "${RUNNER_HEALTH_PORT:-8080}" == "0" ]]; then log "health server: off (RUNNER_HEALTH_PORT=0)"; else
    setpriv --pdeathsig TERM -- "$RUNNER_CLI" health --serve &
    sleep 1 # one that exits at once (a port in use) would otherwise go unnoticed
    if kill -0 $! 2> /dev/null; then log "health server: pid $! on port ${RUNNER_HEALTH_PORT:-8080} (GET /health, /metrics)"
    else log "health server: FAILED, exited at once (see the lines above); continuing without GET /health"; fi
fi
# ---------------------------------------------------------------- 6. supervisor
[[ -f "$SUPERVISOR" ]] || die "supervisor $SUPERVISOR not found"
log "starting supervisor $SUPERVISOR as uid $(id -u) (queues: ${RUNNER_QUEUES:-default})"
exec bash "$SUPERVISOR"
