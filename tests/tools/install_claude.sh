#!/usr/bin/env bash
# Install the real Claude Code CLI from the npm registry into <repo>/.tools/claude.
#
# Idempotent: does nothing when the pinned version is already installed and runs.
# The npm package `@anthropic-ai/claude-code` is a thin wrapper: its real binary is a
# native executable shipped in a per-platform optional dependency
# (`@anthropic-ai/claude-code-linux-x64`, `-linux-x64-musl`, ...). A postinstall script
# (install.cjs) links that binary over the wrapper's `bin/claude.exe` placeholder. If
# scripts were skipped (npm --ignore-scripts), we fall back to the platform binary.
#
# Only the npm registry is contacted. The last line printed is the binary path.
#
# Env: CLAUDE_CODE_VERSION (exact version, default below), CLAUDE_TOOLS_DIR (install dir).
set -euo pipefail

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.329}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PREFIX="${CLAUDE_TOOLS_DIR:-$REPO_ROOT/.tools/claude}"
PKG_DIR="$PREFIX/node_modules/@anthropic-ai/claude-code"

log() { echo "install_claude: $*" >&2; }

is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = "177ELF" ]; }

find_binary() {
    # The wrapper's bin once postinstall replaced the stub, else the platform package.
    if is_elf "$PKG_DIR/bin/claude.exe"; then
        echo "$PKG_DIR/bin/claude.exe"; return 0
    fi
    local cand
    for cand in "$PREFIX"/node_modules/@anthropic-ai/claude-code-*/claude; do
        if is_elf "$cand"; then echo "$cand"; return 0; fi
    done
    return 1
}

installed_version() {
    # `claude --version` prints e.g. "2.1.329 (Claude Code)".
    local bin="$1"
    HOME="${TMPDIR:-/tmp}" DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        "$bin" --version </dev/null 2>/dev/null | awk '{print $1}'
}

if bin="$(find_binary)" && [ "$(installed_version "$bin")" = "$CLAUDE_CODE_VERSION" ]; then
    log "claude-code $CLAUDE_CODE_VERSION already installed"
    echo "$bin"
    exit 0
fi

command -v npm >/dev/null || { log "npm not found on PATH"; exit 1; }
mkdir -p "$PREFIX"
# A package.json of our own keeps npm from walking up to the repository's.
[ -f "$PREFIX/package.json" ] || echo '{"name":"runner-test-tools-claude","private":true}' >"$PREFIX/package.json"
log "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2

bin="$(find_binary)" || { log "no native claude binary found under $PREFIX (platform package missing?)"; exit 1; }
got="$(installed_version "$bin")"
if [ "$got" != "$CLAUDE_CODE_VERSION" ]; then
    log "installed binary reports version '$got', expected $CLAUDE_CODE_VERSION"
    exit 1
fi
log "installed claude-code $got"
echo "$bin"
