"""A linear probe: multinomial logistic regression from hidden states to the token they predict.

Fitted on features X (N, d) — one model's hidden states at some layer — and targets y (N,) token ids:

    x̃ = (x − μ) / σ                    μ, σ: per-feature mean and standard deviation over X (σ floored at 1e-6)
    p(c | x) = softmax(W x̃ + b)_c       over the classes c ∈ C, the distinct tokens of y
    minimise  mean_i −log p(y_i | x_i) + (λ/2)·‖W‖²_F

by full-batch L-BFGS (strong-Wolfe line search) from W = 0, b = 0 on the features' device. There is no
randomness: the same features give the same probe (bit for bit on a CPU). Standardising makes one λ fit
every model width; the L2 term keeps a probe with d ≫ N from hanging on to single coordinates, so it
reads a direction that a small change of the model (a few unlearning steps) does not erase by accident.

Applied to another model's features at the same positions, μ, σ, W and b stay as fitted (one fixed affine
read-out). ``correct`` is 1[argmax_c p(c | x_i) = y_i] per row, ``true_token_probability`` p(y_i | x_i); a target
with no class of its own (a token the fitting set never had) is never correct and has probability 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

L2 = 1e-3  # λ, on standardised features
MAX_ITER = 100  # L-BFGS iterations, scikit-learn's LogisticRegression default (the tiny world stops at ~66, on its tolerance)


@dataclass
class LinearProbe:
    classes: torch.Tensor  # (C,) int64 token ids, sorted
    mean: torch.Tensor  # (d,) μ
    scale: torch.Tensor  # (d,) σ
    weight: torch.Tensor  # (C, d) W
    bias: torch.Tensor  # (C,) b

    @classmethod
    def fit(cls, features: torch.Tensor, targets: torch.Tensor, *, l2: float = L2,
            max_iter: int = MAX_ITER) -> "LinearProbe":
        """The probe for `features` (N, d) and `targets` (N,) token ids (see the module docstring)."""
        if features.ndim != 2 or features.shape[0] != targets.shape[0] or features.shape[0] == 0:
            raise ValueError(f"a probe needs features (N, d) and N targets with N > 0; got {tuple(features.shape)}"
                             f" and {tuple(targets.shape)}")
        x = features.float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("a probe needs finite features; these hold inf or nan (a diverged model?)")
        classes, y = torch.unique(targets.to(x.device), sorted=True, return_inverse=True)
        mean, scale = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
        x = (x - mean) / scale
        weight = torch.zeros(len(classes), x.shape[1], device=x.device, requires_grad=True)
        bias = torch.zeros(len(classes), device=x.device, requires_grad=True)
        if len(classes) > 1:
            optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                          line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.square().sum()
                loss.backward()
                return loss

            with torch.enable_grad():
                optimizer.step(closure)
        return cls(classes, mean, scale, weight.detach(), bias.detach())

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) class scores W x̃ + b for features (N, d)."""
        x = (features.to(self.weight.device).float() - self.mean) / self.scale
        return x @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) the token id each row's probe prediction is."""
        return self.classes[self.logits(features).argmax(-1)]

    def correct(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the probe's prediction is the target."""
        return self.predict(features).cpu() == targets.cpu()

    def true_token_probability(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) p(y | x) under the probe (0 where y is not one of its classes)."""
        probs = torch.softmax(self.logits(features), dim=-1).cpu()
        index = torch.searchsorted(self.classes.cpu(), targets.cpu()).clamp(max=len(self.classes) - 1)
        known = self.classes.cpu()[index] == targets.cpu()
        return torch.where(known, probs.gather(-1, index.unsqueeze(-1)).squeeze(-1), torch.zeros(()))
