#!/usr/bin/env bash
# Install unlearnkit into a virtual environment (default .venv; VENV=path to change).
#
# torch: if the environment already has torch (your CUDA/ROCm/CPU build), it is kept.
# Otherwise torch==${TORCH_SPEC:-2.13.0} is installed *first*, on its own, so that nothing
# else drags in a different build (on our CPU machines that name resolves to the local CPU wheel).
#
# Every other package is pinned to the versions the test suite last passed with:
# requirements/lock.txt, used as pip constraints together with the torch now present.
# UNLEARNKIT_LOCK=none installs the newest releases that pyproject.toml's ranges allow instead
# (scripts/test-latest.sh runs the tests that way).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LOCK=${UNLEARNKIT_LOCK:-requirements/lock.txt}
if [ -z "${VIRTUAL_ENV:-}" ] || [ "${VIRTUAL_ENV}" != "$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: no torch in $VENV; installing torch==${TORCH_SPEC:-2.13.0} first"
  "$PY" -m pip install -q "torch==${TORCH_SPEC:-2.13.0}"
fi
# the installed version without importing torch (importing it before numpy is installed prints a warning)
TORCH_VERSION=$("$PY" -c "from importlib.metadata import version; print(version('torch').split('+')[0])")
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
if [ "$LOCK" != "none" ]; then
  [ -f "$LOCK" ] || { echo "install.sh: lock file $LOCK not found (UNLEARNKIT_LOCK=none to install without one)"; exit 2; }
  grep -v -i -E '^torch[=<>~! ]' "$LOCK" >> "$CONSTRAINTS"
fi
"$PY" -m pip install -q -c "$CONSTRAINTS" -e ".[dev]"
echo "install.sh: unlearnkit installed in $VENV (torch ${TORCH_VERSION}; other packages: ${LOCK})"
