# Shortcuts for the README's two commands.
.PHONY: install run test bench
install:
	bash scripts/install.sh
run: install
	.venv/bin/unlearn run
test: install
	.venv/bin/python -m pytest
bench: install
	.venv/bin/python bench/train_throughput.py
	.venv/bin/python bench/memory_ratio.py
