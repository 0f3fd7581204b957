#!/usr/bin/env bash
# Run the test suite against the NEWEST releases of every dependency, so drift (a new transformers, peft,
# datasets, ...) is seen here before users see it. Builds a fresh virtual environment (default .venv-latest;
# VENV=path to change, PYTHON=python3.x for the interpreter), installs torch, then the package with its dev
# extras upgraded eagerly (every dependency at its newest release that pyproject.toml allows), prints the
# packages whose versions differ from requirements/lock.txt, and runs pytest.
# Arguments go to pytest; the exit status is pytest's. After a passing run, scripts/update-lock.sh turns
# this environment into the new requirements/lock.txt.
#
# torch is the exception: the newest torch on PyPI is a CUDA build that pulls gigabytes of CUDA wheels (and
# cannot be installed on our CPU machines), so torch==${TORCH_SPEC:-2.13.0} is installed first (the local
# CPU build here) and pinned for the rest of the install. TORCH_SPEC=2.x.y tests another torch.
#
#   bash scripts/test-latest.sh                # the whole suite
#   bash scripts/test-latest.sh -x tests/methods
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-latest}
LOCK=requirements/lock.txt

echo "test-latest.sh: fresh virtual environment in $VENV"
"${PYTHON:-python3}" -m venv --clear "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q "torch==${TORCH_SPEC:-2.13.0}"
# the installed version without importing torch (importing it before numpy is installed prints a warning)
TORCH_VERSION=$("$PY" -c "from importlib.metadata import version; print(version('torch').split('+')[0])")
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
"$PY" -m pip install -q -U --upgrade-strategy eager -c "$CONSTRAINTS" -e ".[dev]" || {
  echo "test-latest.sh: the install failed; pip again without -q, for its explanation:" >&2
  "$PY" -m pip install -U --upgrade-strategy eager -c "$CONSTRAINTS" -e ".[dev]" 2>&1 | tail -n 25 >&2 || true
  exit 2
}
"$PY" -m pip check || echo "test-latest.sh: warning: pip check reports the conflicts above"

if [ -f "$LOCK" ]; then
  echo "test-latest.sh: newest releases (torch ${TORCH_VERSION}) against $LOCK:"
  "$PY" - "$LOCK" <<'EOF'
import re
import sys
from importlib.metadata import distributions


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


locked = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, ver = line.split("==", 1)
        locked[norm(name.split("[")[0])] = ver.split(";")[0].strip()
skip = {"torch", "unlearnkit", "pip", "setuptools", "wheel"}
installed = {norm(d.metadata["Name"]): d.version for d in distributions()}
installed = {k: v for k, v in installed.items() if k not in skip}
rows = [(n, locked.get(n, "-"), installed.get(n, "-")) for n in sorted(set(locked) | set(installed))
        if locked.get(n) != installed.get(n) and n not in skip]
for name, old, new in rows:
    print(f"  {name}: {old} -> {new}")
print(f"  {len(rows)} of {len(set(locked) | set(installed))} packages differ ('-': not in the lock / not installed)"
      if rows else "  none: every package is at its locked version")
EOF
else
  echo "test-latest.sh: no $LOCK; skipping the comparison with the lock"
fi

status=0
"$PY" -m pytest "$@" || status=$?
echo "test-latest.sh: pytest exited with status $status (newest releases, torch ${TORCH_VERSION})"
exit "$status"
