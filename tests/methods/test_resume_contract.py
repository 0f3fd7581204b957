"""Every registered objective resumes exactly: a run restarted from its step-2 checkpoint logs the same losses and
ends with the same weights as the uninterrupted run. Methods with state of their own (step counters, an inner
attack's RNG, cached directions: `UnlearningMethod.state_dict`) must checkpoint it for this to hold."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.methods.base import ModelEdit
from unlearnkit.registry import METHODS

OBJECTIVES = [n for n in METHODS.names() if not issubclass(METHODS.get(n), ModelEdit)]


@pytest.mark.parametrize("name", OBJECTIVES)
def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(name, train_tiny, tmp_path):
    whole = train_tiny(METHODS.build(name), 4, out_dir=tmp_path / "whole", save_every=2)
    resumed = train_tiny(METHODS.build(name), 4, out_dir=tmp_path / "resumed",
                         resume_from=str(tmp_path / "whole" / "checkpoints" / "step-2"))
    assert resumed.losses == whole.losses
    for (key, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key
