"""Ten-step loss curves of every registered method on the tiny model, against tests/golden/.

A change in any method, in losses.py, in the data stream or in the trainer shows up here.
If the change is intended: `pytest tests/methods/test_golden.py --update-golden` and commit the
rewritten tests/golden/<method>_tiny_10.json.
"""

from __future__ import annotations

import pytest

from unlearnkit.methods.base import ModelEdit
from unlearnkit.registry import METHODS

OBJECTIVES = [n for n in METHODS.names() if not issubclass(METHODS.get(n), ModelEdit)]


@pytest.mark.parametrize("name", OBJECTIVES)
def test_ten_step_loss_curve_matches_golden(name, train_tiny, golden):
    run = train_tiny(METHODS.build(name), steps=10)
    assert len(run.losses) == 10
    golden.check(f"{name}_tiny_10", run.losses, atol=1e-4)
