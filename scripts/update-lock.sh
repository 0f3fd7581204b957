#!/usr/bin/env bash
# Rewrite requirements/lock.txt from a virtual environment whose test run passed (default .venv-latest,
# which scripts/test-latest.sh builds with the newest releases): every installed package except torch,
# pip/setuptools/wheel and unlearnkit itself, pinned exactly. Review the diff and commit it.
#
#   bash scripts/test-latest.sh && bash scripts/update-lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-latest}
[ -x "$VENV/bin/python" ] || { echo "update-lock.sh: no virtual environment at $VENV (run scripts/test-latest.sh first)"; exit 2; }
freeze=$("$VENV/bin/python" -m pip freeze --exclude-editable | grep -v -i -E '^(torch|unlearnkit|pip|setuptools|wheel)[=@ ]' || true)
{
  echo "# Tested versions of every package unlearnkit installs (with the dev extras), as constraints:"
  echo "# scripts/install.sh and CI install with \`pip install -c\` this file, so a fresh install gets exactly"
  echo "# these. torch is not here: install.sh keeps the torch already present (or installs torch==2.13.0)."
  echo "# Regenerate after a passing scripts/test-latest.sh: scripts/update-lock.sh."
  echo "# Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'), $(uname -s) $(uname -m) (checked on $(date +%F))."
  echo "$freeze"
} > requirements/lock.txt
echo "update-lock.sh: wrote requirements/lock.txt ($(echo "$freeze" | wc -l) packages); review with git diff"
