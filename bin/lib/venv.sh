# shellcheck shell=bash
# Creates (or reuses) the project's virtualenv in .venv and installs the project into it.
# Sourced by bin/demo and bin/test; sets VENV_PY.
#
# pip runs only when the project's dependencies changed: a stamp in .venv holds a hash of
# pyproject.toml and the extras installed, so a complete .venv works offline. When pip does run
# and the build backend (hatchling) is already in the venv, it builds without isolation, so it
# does not fetch the backend from the index again.
ensure_venv() {
    local extras=${1:-}
    local top py stamp want
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    py="$top/.venv/bin/python"
    if [[ ! -x "$py" ]]; then
        echo "setting up $top/.venv (first run only) ..." >&2
        python3 -m venv "$top/.venv"
        "$py" -m pip install -q --upgrade pip >&2
    fi
    stamp="$top/.venv/.runner-install-${extras:-base}"
    want=$( { cat "$top/pyproject.toml"; echo "extras=$extras"; } | sha256sum | cut -d' ' -f1)
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        local isolation=()
        if "$py" -c 'import hatchling, editables' 2>/dev/null; then
            isolation=(--no-build-isolation)
        fi
        "$py" -m pip install -q "${isolation[@]}" -e "$top${extras:+[$extras]}" >&2 || return 1
        # The backend (and what it needs for an editable install) stays in the venv, so the
        # next install needs no index for it.
        "$py" -c 'import hatchling, editables' 2>/dev/null ||
            "$py" -m pip install -q 'hatchling>=1.21' editables >&2 || return 1
        echo "$want" >"$stamp"
    fi
    VENV_PY="$py"
    export VENV_PY
}
