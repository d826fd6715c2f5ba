# shellcheck shell=bash
# Creates (or reuses) the project's virtualenv in .venv and installs the project into it.
# Sourced by bin/demo and bin/test; sets VENV_PY.
ensure_venv() {
    local extras=${1:-}
    local top
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    if [[ ! -x "$top/.venv/bin/python" ]]; then
        echo "setting up $top/.venv (first run only) ..." >&2
        python3 -m venv "$top/.venv"
        "$top/.venv/bin/python" -m pip install -q --upgrade pip >&2
    fi
    "$top/.venv/bin/python" -m pip install -q -e "$top${extras:+[$extras]}" >&2
    VENV_PY="$top/.venv/bin/python"
    export VENV_PY
}
