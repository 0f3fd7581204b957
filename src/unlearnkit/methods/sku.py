"""SKU: Selective Knowledge negation Unlearning (Liu et al., ACL Findings 2024, arXiv:2402.10058).

Stage 1 deliberately trains a *harmful* copy θ_harm of the model (`HarmfulKnowledge`, through the one
trainer), minimising

    L = w_bad·L_GDist + w_rand·L_RDis + w_norm·L_PDiv

* L_GDist (guided distortion): gradient DESCENT on the forget answers, −mean_b mean_{t∈A_b} log π_θ(y_t),
  answer tokens only, a per-sample mean then the batch mean;
* L_RDis (random disassociation): each step K answers are drawn from the pool of forget answers (shared
  by the batch); every forget question is joined with each of them at token level (prompt tokens +
  the random answer's tokens) and the same descent loss is taken on the random answer tokens only
  (the seed's start-at-position-2 bug, which also trains the question, is not copied);
* L_PDiv (preservation divergence): −KL(P_θ0 ‖ P_θ) on normal data (the retain rows), over real
  (non-pad) positions and the whole vocabulary; minimising it *maximises* the divergence.

Stage 2 negates the harmful change:  θ = θ0 − α·(θ_harm − θ0)  (`unlearnkit.model.task_arithmetic`).

Seed settings (specs/methods.md §4): README 2.5 / 2.5 / 1 at lr 2e-4, argparse 0.5 / 1 / 1 at lr 2e-5,
K = 5, α = 1, 1000 steps at batch 2 (recipes sku/readme and sku/argparse). The field defaults are the
README weights with α = 1.25: with the default recipe (30 steps at lr 5e-4) α = 1 leaves forget_prob
at ~0.6× its start on the tiny world, α = 1.25 at ~0.44× (docs/methods/task-vectors-and-sku.md).
Stage 1 uses the recipe's `train:` settings unless `stage1_lr` / `stage1_steps` override them. LoRA is
handled as in task_vector: adapters are trained, merged, then negated; the result is a plain model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

import torch

from unlearnkit.data.batch import IGNORE_INDEX, Example, TokenBatch, collate
from unlearnkit.errors import UnlearnError
from unlearnkit.losses import kl_to_reference, logits_of, sequence_logprob
from unlearnkit.methods.base import LossOutput, ModelEdit, UnlearningMethod, summed
from unlearnkit.methods.task_vector import check_positive, finetune_settings
from unlearnkit.registry import METHODS, Finite, NonNegative, NonNegativeInt, Positive, PositiveInt


def answer_descent(model, batch: TokenBatch) -> torch.Tensor:
    """NLL on the supervised (answer) tokens: per-sample mean, then the batch mean."""
    return -sequence_logprob(model, batch, mean=True).mean()


def random_answer_batch(prompts: TokenBatch, answers: list[tuple[int, ...]], pad_id: int) -> TokenBatch:
    """Every row's prompt (its unsupervised prefix) joined with each answer; only answer tokens labelled.

    Rows are ordered prompt-major: (prompt 0, answer 0), (prompt 0, answer 1), ...
    """
    examples = []
    for ids, mask, labels in zip(prompts.input_ids.tolist(), prompts.attention_mask.tolist(), prompts.labels.tolist()):
        length = sum(mask)
        start = next((i for i, label in enumerate(labels[:length]) if label != IGNORE_INDEX), length)
        for answer in answers:
            examples.append(Example(tuple(ids[:start]) + answer, (IGNORE_INDEX,) * start + answer))
    return collate(examples, pad_id).to(prompts.input_ids.device)


@dataclass
class HarmfulKnowledge(UnlearningMethod):
    """SKU stage 1 (not registered): learn the forget answers, mismatched answers, and diverge on normal data."""

    w_bad: float = 0.5
    w_rand: float = 1.0
    w_norm: float = 1.0
    n_random_answers: int = 5
    registry_name = "sku_stage1"  # the progress bar label
    reference: ClassVar[str] = "model"  # full reference logits for the KL term
    uses_retain: ClassVar[bool] = True  # normal data = the retain rows

    def setup(self, data) -> None:
        # the answer pool: each forget row's supervised tokens (answer + EOS)
        self._pool = [tuple(t for t in e.labels if t != IGNORE_INDEX) for e in data.forget]
        self._pool = [a for a in self._pool if a]
        self._pad_id = data.pad_id
        self._rng = random.Random(torch.initial_seed())  # the trainer seeded torch with train.seed

    def loss_terms(self, model, batch, ref):
        def bad_answers() -> LossOutput:
            gdist = answer_descent(model, batch.forget)
            return LossOutput(self.w_bad * gdist, {"gdist": gdist})

        def random_answers() -> LossOutput:
            answers = [self._rng.choice(self._pool) for _ in range(self.n_random_answers)]
            rand = answer_descent(model, random_answer_batch(batch.forget, answers, self._pad_id))
            return LossOutput(self.w_rand * rand, {"rdis": rand})

        def stay_close() -> LossOutput:
            kl = kl_to_reference(logits_of(model, batch.retain), ref.logits(batch.retain), batch.retain.attention_mask)
            return LossOutput(-self.w_norm * kl, {"pdiv_kl": kl})

        return ([bad_answers] + ([random_answers] if self.w_rand and self.n_random_answers else [])
                + ([stay_close] if self.w_norm and batch.retain is not None else []))

    def loss(self, model, batch, ref):
        return summed(self.loss_terms(model, batch, ref))


@METHODS.register("sku")
@dataclass
class SKU(ModelEdit):
    """Learn a harmful copy (descent + random answers + divergence on normal data), then negate it."""

    w_bad: NonNegative = 2.5  # README weights
    w_rand: NonNegative = 2.5
    w_norm: NonNegative = 1.0
    n_random_answers: NonNegativeInt = 5  # K random answers per step, shared by the batch
    alpha: Finite = 1.25  # θ = θ0 − α·(θ_harm − θ0); the seed uses 1 (see the module docstring)
    stage1_lr: Positive | None = None  # None: the recipe's train.lr
    stage1_steps: PositiveInt | None = None  # None: the recipe's train.steps / train.epochs
    uses_retain: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("w_bad", "w_rand", "w_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UnlearnError(f"method 'sku': field '{name}' must be a number >= 0 (got {value!r});"
                                   " the seeds use 0.5-2.5")
        if self.n_random_answers < 0:
            raise UnlearnError(f"method 'sku': field 'n_random_answers' must be >= 0 (got {self.n_random_answers});"
                               " the seed uses 5")
        if not math.isfinite(self.alpha):
            raise UnlearnError(f"method 'sku': field 'alpha' must be a finite number (got {self.alpha!r});"
                               " the seed uses 1")
        check_positive("sku", stage1_lr=self.stage1_lr, stage1_steps=self.stage1_steps)

    def objective(self) -> HarmfulKnowledge:
        return HarmfulKnowledge(self.w_bad, self.w_rand, self.w_norm, self.n_random_answers)

    def apply(self, model, data, cfg, *, out_dir=None):
        from unlearnkit.model import merge_lora
        from unlearnkit.model.task_arithmetic import negate_in_place, snapshot
        from unlearnkit.train import train

        base = snapshot(model)  # θ0 (LoRA: only the weights under the adapters)
        settings = finetune_settings(cfg, lr=self.stage1_lr, steps=self.stage1_steps)
        result = train(model, self.objective(), data, settings, out_dir=out_dir)
        result.model = negate_in_place(merge_lora(result.model), base, self.alpha).eval()
        return result
