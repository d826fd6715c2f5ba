#!/usr/bin/env bash
# Container entrypoint for runner (PID 1 is tini; see docker/Dockerfile).
#
#   1. as root: create the data dirs, give them to RUNNER_RUN_AS, re-exec as that user
#   2. per-container state dir (a link into RUNNER_STATE_SHARE), stale markers set aside
#   3. wait for the database (RUNNER_DB_WAIT_SECONDS), then `runner migrate`
#   4. git credentials: a helper that reads RUNNER_GIT_TOKEN at use time
#   5. pre-clone RUNNER_PRECLONE_REPOS into the mirror cache (failures are not fatal)
#   6. `runner health --serve` in the background (unless RUNNER_HEALTH_PORT=0)
#   7. exec the supervisor bin/run-agent.sh
#
# With arguments (`docker compose run --rm runner runner jobs`), steps 1, 2 and 4 run,
# then the arguments are exec'd instead of 3 and 5-7.
#
# Works on a plain host too: every path comes from the environment, nothing needs /opt.
# Never prints DATABASE_URL, RUNNER_GIT_TOKEN or agent credentials.
set -euo pipefail

log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SELF=$(readlink -f "${BASH_SOURCE[0]}")
BIN_DIR=$(dirname "$SELF")
PYTHON=${RUNNER_PYTHON:-python3}          # needs psycopg (the runner's venv has it)
RUNNER_CLI=${RUNNER_CLI:-runner}          # the runner console script
SUPERVISOR=${RUNNER_SUPERVISOR:-$BIN_DIR/run-agent.sh}

: "${RUNNER_DATA_DIR:=/data}"
: "${RUNNER_LOG_DIR:=$RUNNER_DATA_DIR/logs}"
: "${RUNNER_CACHE_DIR:=$RUNNER_DATA_DIR/cache}"
: "${RUNNER_JOB_ROOT:=$RUNNER_DATA_DIR/jobs}"
: "${RUNNER_STATE_DIR:=$RUNNER_DATA_DIR/state}"
export RUNNER_LOG_DIR RUNNER_CACHE_DIR RUNNER_JOB_ROOT RUNNER_STATE_DIR

# Shown instead of a URL that may carry a password: scheme://host/path only.
redact_url() { sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://)[^@/]*@#\1***@#' <<< "$1"; }

# ---------------------------------------------------------------- 1. privileges
# The directories this process writes: the state share (or the state dir itself).
data_dirs=("$RUNNER_LOG_DIR" "$RUNNER_CACHE_DIR" "$RUNNER_JOB_ROOT" "${RUNNER_STATE_SHARE:-$RUNNER_STATE_DIR}")

drop_privileges() {
    local spec=$1 user group uid gid home groups_opt
    shift
    user=${spec%%:*}
    group=""
    [[ "$spec" == *:* ]] && group=${spec#*:}
    if [[ "$user" =~ ^[0-9]+$ ]]; then
        uid=$user
    else
        uid=$(id -u "$user" 2> /dev/null) || die "RUNNER_RUN_AS=$spec: no such user"
    fi
    if [[ -n "$group" ]]; then
        if [[ "$group" =~ ^[0-9]+$ ]]; then gid=$group; else
            gid=$(getent group "$group" | cut -d: -f3) || true
            [[ -n "$gid" ]] || die "RUNNER_RUN_AS=$spec: no such group"
        fi
    elif getent passwd "$uid" > /dev/null; then
        gid=$(id -g "$uid")
    else
        gid=$uid
    fi
    ((uid != 0)) || { log "RUNNER_RUN_AS=$spec is root: staying root"; return 0; }

    local d owner
    for d in "${data_dirs[@]}"; do
        mkdir -p "$d"
        owner=$(stat -c %u "$d")
        if [[ "${RUNNER_FIX_OWNERSHIP:-1}" != "0" && "$owner" != "$uid" ]]; then
            log "data dir $d belongs to uid $owner: chown -R $uid:$gid (RUNNER_FIX_OWNERSHIP=0 skips this)"
            chown -R "$uid:$gid" "$d"
        fi
    done
    if [[ -n "${RUNNER_STATE_SHARE:-}" ]]; then
        # The link RUNNER_STATE_DIR is made after the drop, so its parent must be ours.
        d=$(dirname "$RUNNER_STATE_DIR")
        if [[ ! -d "$d" ]]; then
            mkdir -p "$d"
            chown "$uid:$gid" "$d"
        fi
    fi

    home=$(getent passwd "$uid" | cut -d: -f6) || true
    if [[ -n "$home" ]]; then
        groups_opt=--init-groups
        export USER LOGNAME
        USER=$(getent passwd "$uid" | cut -d: -f1)
        LOGNAME=$USER
    else
        # A uid without a passwd entry: a private HOME for the agent's ~/.claude.
        groups_opt=--clear-groups
        home=${TMPDIR:-/tmp}/runner-home-$uid
        mkdir -p "$home"
        chown "$uid:$gid" "$home"
        chmod 0700 "$home"
    fi
    export HOME=$home
    export RUNNER_ENTRYPOINT_DROPPED=1
    log "dropping root: continuing as uid=$uid gid=$gid (HOME=$HOME)"
    if command -v setpriv > /dev/null; then
        exec setpriv --reuid="$uid" --regid="$gid" "$groups_opt" --inh-caps=-all -- "$BASH" "$SELF" "$@"
    elif command -v gosu > /dev/null; then
        exec gosu "$uid:$gid" "$BASH" "$SELF" "$@"
    fi
    die "neither setpriv (util-linux) nor gosu is installed: cannot drop root"
}

if [[ "$(id -u)" == "0" ]]; then
    [[ -z "${RUNNER_ENTRYPOINT_DROPPED:-}" ]] || die "still root after dropping privileges"
    if [[ -n "${RUNNER_RUN_AS:-}" ]]; then
        drop_privileges "$RUNNER_RUN_AS" "$@"
    else
        log "running as root (RUNNER_RUN_AS is empty); note: Claude Code refuses bypassPermissions as root"
    fi
fi

# ---------------------------------------------------------------- 2. directories
for d in "${data_dirs[@]}"; do
    mkdir -p "$d" 2> /dev/null || true
    [[ -d "$d" && -w "$d" ]] ||
        die "$d is not writable by uid $(id -u): on the NAS, give that folder to uid $(id -u) (chown -R $(id -u):$(id -g)), or start the container as root with RUNNER_RUN_AS set"
done

if [[ -n "${RUNNER_STATE_SHARE:-}" && $# -eq 0 ]]; then
    # One folder per container on the shared mount, so that `--scale runner=3` never
    # mixes markers; RUNNER_STATE_DIR (a fixed path inside the container, which the
    # HEALTHCHECK and `docker compose exec` also see) links to it.
    worker=${RUNNER_WORKER_ID:-${HOSTNAME:-$(uname -n)}}
    worker=${worker//[^A-Za-z0-9._-]/_}
    target=$RUNNER_STATE_SHARE/$worker
    mkdir -p "$target"
    if [[ -d "$RUNNER_STATE_DIR" && ! -L "$RUNNER_STATE_DIR" ]]; then
        rmdir "$RUNNER_STATE_DIR" 2> /dev/null ||
            die "RUNNER_STATE_DIR=$RUNNER_STATE_DIR is a non-empty directory; with RUNNER_STATE_SHARE set it must be a free path"
    fi
    mkdir -p "$(dirname "$RUNNER_STATE_DIR")" 2> /dev/null ||
        die "cannot create $(dirname "$RUNNER_STATE_DIR") for the state link as uid $(id -u)"
    ln -sfn "$target" "$RUNNER_STATE_DIR"
    log "state dir $RUNNER_STATE_DIR -> $target"
else
    mkdir -p "$RUNNER_STATE_DIR"
    log "state dir $RUNNER_STATE_DIR"
fi
log "logs $RUNNER_LOG_DIR, cache $RUNNER_CACHE_DIR, jobs $RUNNER_JOB_ROOT"

# A marker left by a previous run describes credentials or failures from before this
# start (a recreated container usually carries a new token): set it aside, the next
# job re-checks. RUNNER_CLEAR_MARKERS=0 keeps them. (Not for one-off commands.)
if [[ "${RUNNER_CLEAR_MARKERS:-1}" != "0" && $# -eq 0 ]]; then
    for m in TOKEN_EXPIRED UNHEALTHY; do
        if [[ -e "$RUNNER_STATE_DIR/$m" ]]; then
            mv -f "$RUNNER_STATE_DIR/$m" "$RUNNER_STATE_DIR/$m.previous"
            log "marker $m from the previous run moved to $m.previous; the next job re-checks"
        fi
    done
fi

# ---------------------------------------------------------------- 4. git credentials
# A global git config of our own (never the user's ~/.gitconfig, which it includes).
: "${GIT_CONFIG_GLOBAL:=$RUNNER_STATE_DIR/gitconfig}"
export GIT_CONFIG_GLOBAL
write_git_config() {
    local cfg=$GIT_CONFIG_GLOBAL tmp
    mkdir -p "$(dirname "$cfg")"
    tmp=$(mktemp "$cfg.XXXXXX")
    chmod 0600 "$tmp"
    if [[ -n "${HOME:-}" && -f "$HOME/.gitconfig" && "$(readlink -f "$HOME/.gitconfig")" != "$(readlink -f "$cfg")" ]]; then
        git config --file "$tmp" include.path "$HOME/.gitconfig"
    fi
    if [[ -n "${RUNNER_GIT_USER_NAME:-}" ]]; then git config --file "$tmp" user.name "$RUNNER_GIT_USER_NAME"; fi
    if [[ -n "${RUNNER_GIT_USER_EMAIL:-}" ]]; then git config --file "$tmp" user.email "$RUNNER_GIT_USER_EMAIL"; fi
    if [[ -n "${RUNNER_GIT_TOKEN:-}" ]]; then
        # An empty value first resets helpers from other config files.
        git config --file "$tmp" credential.helper ""
        git config --file "$tmp" --add credential.helper "!'$BIN_DIR/git-credential-runner'"
    fi
    mv -f "$tmp" "$cfg"
}
write_git_config
if [[ -n "${RUNNER_GIT_TOKEN:-}" ]]; then
    hosts=${RUNNER_GIT_TOKEN_HOSTS:-${RUNNER_ALLOWED_REPO_HOSTS:-}}
    if [[ -n "$hosts" ]]; then
        log "git credentials: token from RUNNER_GIT_TOKEN (read at use time) for https hosts: $hosts"
    else
        log "git credentials: token from RUNNER_GIT_TOKEN for ANY https host; set RUNNER_ALLOWED_REPO_HOSTS or RUNNER_GIT_TOKEN_HOSTS to limit it"
    fi
else
    log "git credentials: none (RUNNER_GIT_TOKEN not set; public repositories only)"
fi

# ---------------------------------------------------------------- one-off commands
if (($# > 0)); then
    log "running: $1 (database wait, migrations and supervisor skipped)"
    exec "$@"
fi

# ---------------------------------------------------------------- 3. database
[[ -n "${DATABASE_URL:-}" ]] || die "DATABASE_URL is not set (see docker/.env.example)"

# Prints "host:port/dbname" (no user, no password) or the connection error with the
# password blanked out; exit 0 reachable, 1 not yet, 2 cannot check at all.
db_probe() {
    "$PYTHON" - "$@" << 'PY'
import os, re, sys
from urllib.parse import urlsplit
dsn = os.environ["DATABASE_URL"]
secrets = set(re.findall(r"password\s*=\s*'?([^'\s]+)", dsn))
if "://" in dsn:
    dsn = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", dsn)
    try:
        parts = urlsplit(dsn)
        if parts.password:
            secrets.add(parts.password)
        host = f"{parts.hostname}:{parts.port or 5432}" if parts.hostname else "local socket "
        where = f"{host}{parts.path}"
    except ValueError:
        where = "(unparsable DATABASE_URL)"
else:
    where = "(key=value DATABASE_URL)"
def clean(text):
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
if sys.argv[1] == "where":
    print(clean(where))
    sys.exit(0)
try:
    import psycopg
except ImportError as exc:
    print(f"cannot check the database: {exc}")
    sys.exit(2)
try:
    psycopg.connect(dsn, connect_timeout=max(2, min(5, int(sys.argv[2])))).close()
except Exception as exc:
    msg = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    print(clean(msg or type(exc).__name__)[:300])
    sys.exit(1)
PY
}

wait_s=${RUNNER_DB_WAIT_SECONDS:-60}
[[ "$wait_s" =~ ^[0-9]+$ ]] || die "RUNNER_DB_WAIT_SECONDS must be a number of seconds, got '$wait_s'"
where=$(db_probe where) || die "cannot run $PYTHON to check the database (set RUNNER_PYTHON to a python with psycopg)"
log "waiting up to ${wait_s}s for the database at $where"
start=$SECONDS
last_said=-10
while true; do
    rc=0
    reason=$(db_probe connect $((wait_s - (SECONDS - start)))) || rc=$?
    ((rc != 0)) || break
    ((rc == 1)) || die "cannot check the database with $PYTHON (exit $rc): ${reason:-no message}"
    elapsed=$((SECONDS - start))
    if ((elapsed >= wait_s)); then
        die "database at $where not reachable after ${elapsed}s: $reason (check DATABASE_URL and that the server is up; RUNNER_DB_WAIT_SECONDS=$wait_s)"
    fi
    if ((elapsed - last_said >= 10)); then
        log "database not reachable yet (${elapsed}s/${wait_s}s): $reason"
        last_said=$elapsed
    fi
    sleep 2
done
log "database reachable after $((SECONDS - start))s"

if [[ "${RUNNER_MIGRATE:-1}" != "0" ]]; then
    # Retried: replicas starting together may race on the first migration.
    for attempt in 1 2 3; do
        if "$RUNNER_CLI" migrate; then
            log "database schema up to date (runner migrate)"
            break
        fi
        ((attempt < 3)) || die "runner migrate failed 3 times; see the messages above"
        log "runner migrate failed (attempt $attempt of 3); retrying in 5s"
        sleep 5
    done
else
    log "migrations skipped (RUNNER_MIGRATE=0)"
fi

# ---------------------------------------------------------------- 5. pre-clone
# The same mirror a job would use (runner.repo_cache, under its lock), after the same URL
# check a job's repo_url gets. Prints "cloned"/"fetched", or the reason it failed (the
# library's messages never show a URL's user info); its warnings (retries) go to stderr
# as entrypoint lines.
preclone() {
    "$PYTHON" - "$1" << 'PY'
import logging, sys, time
try:
    import structlog
    from runner.inputs import check_repo_url
    from runner.repo_cache import ensure_mirror, locked, mirror_dir
    from runner.settings import load_settings
except ImportError as exc:
    print(f"cannot import the runner package with {sys.executable}: {exc}")
    sys.exit(2)
def line(_logger, _method, ev):
    event = ev.pop("event", "")
    ev.pop("level", None)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return " ".join([f"{when} entrypoint: pre-clone: {event}", *(f"{k}={v}" for k, v in ev.items())])
structlog.configure(processors=[line], logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
url = sys.argv[1]
try:
    settings = load_settings()
    check_repo_url(url, settings)
    mirror = mirror_dir(settings.cache_dir, url)
    with locked(mirror, settings):
        print(ensure_mirror(url, mirror, settings))
except Exception as exc:
    print(" ".join(str(exc).split())[:400] or type(exc).__name__)
    sys.exit(1)
PY
}

repos=${RUNNER_PRECLONE_REPOS:-}
repos=${repos//,/ }
repos=${repos//$'\n'/ }
read -r -a repo_list <<< "$repos" || true
if ((${#repo_list[@]} > 0)); then
    for url in "${repo_list[@]}"; do
        shown=$(redact_url "$url")
        rc=0
        result=$(preclone "$url") || rc=$?
        result=${result##*$'\n'}
        if ((rc == 0)); then
            log "pre-clone $shown: ok (${result:-done})"
        else
            log "pre-clone $shown: FAILED (exit $rc): ${result:-no message}; continuing, jobs will clone it on demand"
        fi
    done
else
    log "pre-clone: nothing to do (RUNNER_PRECLONE_REPOS empty)"
fi

# ---------------------------------------------------------------- 6. health server
# Started before the exec below, so the supervisor (same pid) becomes its parent; with
# setpriv's parent-death signal it ends when the supervisor does, also on a plain host
# where no container teardown would end it.
port=${RUNNER_HEALTH_PORT:-8080}
if [[ "$port" == "0" ]]; then
    log "health server: off (RUNNER_HEALTH_PORT=0)"
else
    if command -v setpriv > /dev/null; then
        setpriv --pdeathsig TERM -- "$RUNNER_CLI" health --serve &
    else
        "$RUNNER_CLI" health --serve &
    fi
    health_pid=$!
    # Say whether it really listens: a server that exited at once (a port in use, a CLI
    # without `health --serve`) would otherwise go unnoticed until the first scrape.
    probe=${RUNNER_HEALTH_BIND:-0.0.0.0}
    case "$probe" in 0.0.0.0 | "") probe=127.0.0.1 ;; "::") probe=::1 ;; esac
    for ((i = 0; i < 50; i++)); do
        if ! kill -0 "$health_pid" 2> /dev/null; then
            rc=0
            wait "$health_pid" || rc=$?
            log "health server: FAILED, exited at once (exit $rc; see the lines above); continuing without GET /health"
            break
        fi
        if (: > "/dev/tcp/$probe/$port") 2> /dev/null; then
            log "health server: pid $health_pid on port $port (GET /health, /metrics)"
            break
        fi
        sleep 0.1
    done
    ((i < 50)) || log "health server: pid $health_pid, not answering on $probe:$port after 5s"
fi

# ---------------------------------------------------------------- 7. supervisor
[[ -f "$SUPERVISOR" ]] || die "supervisor $SUPERVISOR not found"
log "starting supervisor $SUPERVISOR as uid $(id -u) (queues: ${RUNNER_QUEUES:-default})"
if [[ -x "$SUPERVISOR" ]]; then
    exec "$SUPERVISOR"
fi
exec bash "$SUPERVISOR"
