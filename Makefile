# Shortcuts for the README's two commands.
.PHONY: install run test bench test-latest test-lowest
install:
	bash scripts/install.sh
run: install
	.venv/bin/unlearn run
test: install
	.venv/bin/python -m pytest
bench: install
	.venv/bin/python bench/train_throughput.py
	.venv/bin/python bench/memory_ratio.py
# The suite against the newest releases of every dependency (drift), and against pyproject's lower bounds
# (requirements/lowest.txt). Each builds its own fresh venv (.venv-latest / .venv-lowest).
test-latest:
	bash scripts/test-latest.sh
test-lowest:
	bash scripts/test-lowest.sh
