"""The linear probe (`metrics.linear_probe`): deterministic multinomial logistic regression, fitted on one set of
features and applied, unchanged, to another."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.metrics.linear_probe import LinearProbe


def _clusters(seed: int, n_per_class: int = 20, d: int = 16, tokens=(7, 11, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    """Features around one random centre per token (well separated), and the tokens."""
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(len(tokens), d, generator=torch.Generator().manual_seed(0))
    features = torch.cat([c + torch.randn(n_per_class, d, generator=g) for c in centres])
    targets = torch.tensor(tokens).repeat_interleave(n_per_class)
    return features, targets


def test_fits_separable_features_and_generalises_to_fresh_samples():
    features, targets = _clusters(seed=1)
    probe = LinearProbe.fit(features, targets)
    assert probe.classes.tolist() == [7, 11, 40]  # token ids, not class indices
    assert probe.correct(features, targets).all()
    fresh, fresh_targets = _clusters(seed=2)
    assert probe.correct(fresh, fresh_targets).float().mean() > 0.95
    assert probe.true_token_probability(fresh, fresh_targets).mean() > 0.8


def test_unrelated_features_score_near_chance():
    features, targets = _clusters(seed=1)
    probe = LinearProbe.fit(features, targets)
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(3)) * features.std()
    assert probe.correct(noise, targets).float().mean() < 0.6  # chance is 1/3


def test_fitting_is_deterministic():
    features, targets = _clusters(seed=1)
    first, second = LinearProbe.fit(features, targets), LinearProbe.fit(features, targets)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


def test_a_token_without_a_class_is_never_right_and_has_probability_zero():
    features, targets = _clusters(seed=1)
    probe = LinearProbe.fit(features, targets)
    unseen = torch.full_like(targets, 99)
    assert not probe.correct(features, unseen).any()
    assert torch.equal(probe.true_token_probability(features, unseen), torch.zeros(len(targets)))


def test_one_class_predicts_it_everywhere():
    features = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    probe = LinearProbe.fit(features, torch.full((5,), 3))
    assert probe.predict(features).tolist() == [3] * 5
    assert torch.allclose(probe.true_token_probability(features, torch.full((5,), 3)), torch.ones(5))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="features"):
        LinearProbe.fit(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        LinearProbe.fit(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_non_finite_features_are_refused():
    import torch

    from unlearnkit.metrics.linear_probe import LinearProbe

    features = torch.ones(4, 3)
    features[1, 2] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        LinearProbe.fit(features, torch.tensor([1, 2, 1, 2]))
