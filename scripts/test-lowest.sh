#!/usr/bin/env bash
# Run the test suite against the LOWEST versions pyproject.toml allows: requirements/lowest.txt, so the
# stated lower bounds are known to work. Builds a fresh virtual environment (default .venv-lowest;
# VENV=path to change, PYTHON=python3.x for the interpreter), installs torch==${TORCH_SPEC:-2.13.0} first
# (the local CPU build on our machines; nothing later may replace it), then the package with its dev
# extras constrained to requirements/lowest.txt, prints the versions it got, and runs pytest.
# Arguments go to pytest; the exit status is pytest's.
#
#   bash scripts/test-lowest.sh                # the whole suite
#   bash scripts/test-lowest.sh -x tests/methods
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-lowest}
LOWEST=requirements/lowest.txt
[ -f "$LOWEST" ] || { echo "test-lowest.sh: $LOWEST not found" >&2; exit 2; }

echo "test-lowest.sh: fresh virtual environment in $VENV"
"${PYTHON:-python3}" -m venv --clear "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q "torch==${TORCH_SPEC:-2.13.0}"
# the installed version without importing torch (importing it before numpy is installed prints a warning)
TORCH_VERSION=$("$PY" -c "from importlib.metadata import version; print(version('torch').split('+')[0])")
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
{ echo "torch==${TORCH_VERSION}"; grep -v -i -E '^torch[=<>~! ]' "$LOWEST"; } > "$CONSTRAINTS"
"$PY" -m pip install -q -c "$CONSTRAINTS" -e ".[dev]" || {
  echo "test-lowest.sh: the install failed; pip again without -q, for its explanation:" >&2
  "$PY" -m pip install -c "$CONSTRAINTS" -e ".[dev]" 2>&1 | tail -n 25 >&2 || true
  exit 2
}

echo "test-lowest.sh: installed (constraints: torch==${TORCH_VERSION} + $LOWEST):"
"$PY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
import platform

names = ["torch", "transformers", "tokenizers", "huggingface-hub", "accelerate", "peft", "datasets", "safetensors",
         "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "rouge-score", "pyyaml", "pydantic", "typer",
         "click", "rich", "tqdm", "matplotlib", "pytest", "pytest-xdist", "hypothesis", "lm-eval",
         "tensorboard", "protobuf"]
print(f"  python {platform.python_version()}")
for name in names:
    try:
        print(f"  {name} {version(name)}")
    except PackageNotFoundError:
        print(f"  {name} (not installed)")
EOF
"$PY" -m pip check || echo "test-lowest.sh: warning: pip check reports the conflicts above"

status=0
"$PY" -m pytest "$@" || status=$?
echo "test-lowest.sh: pytest exited with status $status (lowest versions, torch ${TORCH_VERSION})"
exit "$status"
