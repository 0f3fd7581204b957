"""Inner ("max") attacks for robust unlearning, used by ERU (methods/eru.py). Not registered methods.

Both act on decoder-block outputs h_ℓ (model/hooks.py) of the forget forward pass and never touch the
parameters' gradients:

* refusal-feature ablation (ReFAT, Yu et al., 2024, arXiv:2409.20089): per layer ℓ,

      r_ℓ = mean_{x ∈ H} h_ℓ(x)[last prompt token] − mean_{x ∈ S} h_ℓ(x)[last prompt token]
      r̂_ℓ = r_ℓ / ‖r_ℓ‖

  computed without gradients under the current model (H: forget rows, S: retain rows, for
  knowledge unlearning; specs/methods.md §7.2), then applied as h ← h − r̂ r̂ᵀ h at every token
  (`hooks.ablate_directions`). The last prompt token is the token before the first supervised
  label, so the rows must be QA-formatted (prompt masked).
* latent PGD (targeted LAT, Sheshadri et al., 2024, arXiv:2407.15549): a perturbation δ_ℓ (B, T, d)
  added to h_ℓ, K ascent steps on log π(y|x; δ) — the attacker makes the forget answers *more*
  likely — each step moving every token's δ by `step_size`·ε along its normalised gradient, then
  projecting back to ‖δ_t‖₂ ≤ ε. Gradients w.r.t. δ only (`torch.autograd.grad`), so no parameter
  gradient is accumulated.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from unlearnkit.data.batch import Example, TokenBatch, collate
from unlearnkit.model.hooks import add_to_outputs, capture_outputs, gather_positions, hidden_size, prompt_end_positions
from unlearnkit.losses import sequence_logprob


def sample_rows(rows: Sequence[Example] | None, n: int, generator: torch.Generator, pad_id: int) -> TokenBatch | None:
    """min(n, len(rows)) rows drawn without replacement with `generator`, collated (None for no rows)."""
    if rows is None:
        return None
    picked = torch.randperm(len(rows), generator=generator)[:n].tolist()
    return collate([rows[i] for i in picked], pad_id)


def prompt_end_means(model, rows: TokenBatch, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{ℓ: (d,)} mean block output at each row's last prompt token, without gradients."""
    with torch.no_grad(), capture_outputs(model, layers) as captured:
        model(input_ids=rows.input_ids, attention_mask=rows.attention_mask)
    positions = prompt_end_positions(rows.labels)
    return {layer: gather_positions(captured[layer], positions).float().mean(0) for layer in layers}


def refusal_directions(model, harmful: TokenBatch, harmless: TokenBatch,
                       layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{ℓ: r̂_ℓ (d,)}: the unit difference of mean prompt-end activations, harmful − harmless
    (forget − retain for unlearning)."""
    first = prompt_end_means(model, harmful, layers)
    second = prompt_end_means(model, harmless, layers)
    return {layer: F.normalize(first[layer] - second[layer], dim=0) for layer in layers}


def project_to_ball(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """Scale every token's vector (last dim) into the L2 ball of `radius`."""
    norms = delta.norm(dim=-1, keepdim=True)
    return delta * (radius / norms.clamp(min=radius)) if radius > 0 else torch.zeros_like(delta)


def latent_pgd(model, batch: TokenBatch, layers: Sequence[int], radius: float, steps: int,
               step_size: float) -> dict[int, torch.Tensor]:
    """{ℓ: δ*_ℓ (B, T, d)}, detached, per-token ‖δ‖₂ ≤ `radius`, that raise log π(y|x) on `batch`."""
    shape = (*batch.input_ids.shape, hidden_size(model))
    deltas = {layer: torch.zeros(shape, device=batch.input_ids.device, requires_grad=True) for layer in layers}
    for _ in range(steps):
        with torch.enable_grad(), add_to_outputs(model, deltas):
            objective = sequence_logprob(model, batch).sum()
            grads = torch.autograd.grad(objective, list(deltas.values()))
        with torch.no_grad():
            deltas = {
                layer: project_to_ball(delta + step_size * radius * F.normalize(grad, dim=-1), radius).requires_grad_()
                for (layer, delta), grad in zip(deltas.items(), grads)
            }
    return {layer: delta.detach() for layer, delta in deltas.items()}
