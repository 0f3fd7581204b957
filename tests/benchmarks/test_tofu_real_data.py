"""End to end on the real TOFU files (../shared/data/tofu; skipped when absent): schema flows through."""

from __future__ import annotations

import math

import pytest

from unlearnkit.benchmarks.tofu import evaluate_tofu
from unlearnkit.data.tofu import load_tofu, shared_tofu_dir


def test_forget01_slice_end_to_end(model, tokenizer, fmt):
    directory = shared_tofu_dir()
    if directory is None:
        pytest.skip("shared/data/tofu not found next to the checkout")
    splits = load_tofu("forget01", directory, with_train_retain=False)
    for name in ("forget", "retain", "real_authors", "world_facts"):
        setattr(splits, name, getattr(splits, name)[:4])
    result = evaluate_tofu(model, tokenizer, splits, fmt, batch_size=16, max_new_tokens=8,
                           retain_truth_ratios=[0.5, 0.6, 0.7, 0.8])
    for key, value in result.metrics.items():
        assert value is not None and math.isfinite(value), key
    assert 0.0 <= result.metrics["forget_quality"] <= 1.0
    assert len(result.forget_truth_ratios) == 4
    assert all(len(column) == 4 for column in result.per_sample["world_facts"].values())
