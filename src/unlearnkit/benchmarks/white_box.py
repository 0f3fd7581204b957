"""White-box knowledge probes of the forget answers: the logit lens and a linear probe. Lower = forgot more.

A method can hide an answer at the output while the layers below still hold it; both metrics look there
(field-methods.md §2). They read the decoder layers during the forget answers' own teacher-forced pass —
the sequences ``forget_prob`` and the privacy suite score — through hooks (`readout`), so they add no
forward pass. With a_i the forget answer of question q_i, P̄ the length-normalised probability
exp(mean_t log p(y_t | ·)) over the answer tokens and EOS (``forget_prob``'s normalisation):

* ``forget_logit_lens`` = max_ℓ mean_i P̄_ℓ(a_i | q_i), where P̄_ℓ decodes block ℓ's output h_ℓ through the
  model's own final norm and unembedding, logits = lm_head(norm(h_ℓ)) ("residual knowledge"; the logit lens
  is nostalgebraist's, 2020). The last block's lens is the model's own output, so the value is never below
  ``forget_prob``; the per-layer means are kept in ``per_sample.logit_lens`` (and a warning is logged when the
  last layer's lens and the model's own log-probs disagree: an unembedding this code does not know).
* ``forget_linear_probe`` = mean_i (fraction of a_i's answer tokens, EOS left out, that a linear probe
  predicts from block ℓ_p's output at the position before the token). The probe
  (`metrics.linear_probe`: multinomial logistic regression over the forget answers' tokens) is fitted on
  the FIRST model this benchmark data is evaluated with and reused for every later evaluation of it: in
  `unlearn run` that is the starting model, and the unlearned model and every attacked copy are scored
  with the start model's probe. A model that still carries the answers in the same directions keeps the
  probe's accuracy even when its output no longer says them. ℓ_p = round(`PROBE_LAYER`·(L − 1)), the middle
  block by default. `unlearn eval` evaluates one model, so its probe is fitted and applied on that model
  (an in-sample accuracy, near 1 for a model that knows the answers); ``per_sample.linear_probe.fitted_on``
  says which case a number is. `fit_forget_probe(model, ...)` fits the probe on a model of your choosing.

The probe lives in memory on the run's `BenchmarkData` (``data.probes``, by layer): it is never written
to disk, and an evaluation of other data (or another run) fits its own.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from unlearnkit.benchmarks.passes import model_device
from unlearnkit.data.pairing import encode_qa_rows
from unlearnkit.errors import UnlearnError
from unlearnkit.logs import logger
from unlearnkit.metrics.likelihood import average_loss
from unlearnkit.metrics.linear_probe import LinearProbe
from unlearnkit.model.hooks import decoder_layers, resolve_layers

PROBE_LAYER = 0.5  # the probe's block, as a fraction of depth (0: the first block, 1: the last)
LENS_GAP_WARNING = 0.05  # nats per token between the last layer's lens and the model's own log-probs
FITTED_HERE = "this model"
FITTED_EARLIER = "the first model evaluated on this data (in `unlearn run`: the starting model)"


def forget_answer_examples(rows: Sequence[dict], fmt: Any, tokenizer: Any) -> list:
    """The forget answers as teacher-forced sequences, exactly as ``forget_prob`` encodes them."""
    return encode_qa_rows(rows, tokenizer, fmt, "forget", "the logit lens and the linear probe")


def probe_layer(model: Any) -> int:
    """The block the probe reads: round(PROBE_LAYER·(L − 1))."""
    return resolve_layers(PROBE_LAYER, len(decoder_layers(model)), field="probe layer")[0]


def _probe_positions(readouts: list, layer: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(features (N, d), targets (N,), row of each position (N,)) over every example's supervised positions but
    its last (the EOS, which says nothing about the fact), or its only one."""
    features, targets, rows = [], [], []
    for row, readout in enumerate(readouts):
        keep = max(len(readout.targets) - 1, 1)
        features.append(readout.hidden[layer][:keep])
        targets.append(torch.from_numpy(readout.targets[:keep]))
        rows.append(np.full(keep, row))
    return torch.cat(features), torch.cat(targets), np.concatenate(rows)


def _row_means(values: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    return np.bincount(rows, weights=values, minlength=n_rows) / np.bincount(rows, minlength=n_rows)


def _lens_result(lens: tuple[np.ndarray, np.ndarray], own: tuple[np.ndarray, np.ndarray]) -> tuple[float, dict]:
    summed, n_tokens = lens  # (N, L), (N,)
    by_row = np.stack([np.exp(-average_loss(summed[:, layer], n_tokens)) for layer in range(summed.shape[1])], 1)
    by_layer = by_row.mean(0)
    # the last block's lens is the model's own distribution: a gap means the unembedding is not what the model does
    gap = float(np.max(np.abs(summed[:, -1] - own[0]) / np.maximum(n_tokens, 1)))
    if gap > LENS_GAP_WARNING:
        logger.warning(f"logit lens: the last layer differs from the model's own output by {gap:.3g} nats per token;"
                       " this model's unembedding is not final norm + lm_head, so forget_logit_lens is unreliable")
    detail = {"layer": list(range(len(by_layer))), "forget_logit_lens_by_layer": by_layer.tolist(),
              "best_layer": int(np.argmax(by_layer)), "last_layer_gap": gap, "forget": by_row.tolist()}
    return float(by_layer.max()), detail


def _probe_result(probes: dict, layer: int, readouts: list, device: torch.device) -> tuple[float, dict, float]:
    """(metric, detail, seconds spent fitting) — fitting first when `probes` has none for `layer`."""
    features, targets, rows = _probe_positions(readouts, layer)
    if not bool(torch.isfinite(features).all()):  # a broken model: nothing to fit or read (reported non-finite)
        return float("nan"), {"layer": layer, "non_finite_hidden_states": True}, 0.0
    fitted_here, fit_seconds = layer not in probes, 0.0
    if fitted_here:
        started = time.perf_counter()
        probes[layer] = LinearProbe.fit(features.to(device), targets)
        fit_seconds = time.perf_counter() - started
    probe = probes[layer]
    if probe.mean.shape[0] != features.shape[1]:
        raise UnlearnError(f"forget_linear_probe: the probe on this data was fitted on {probe.mean.shape[0]}-wide"
                           f" hidden states and this model's are {features.shape[1]}-wide; a probe applies to models"
                           " of one architecture (evaluate other models on freshly loaded benchmark data)")
    n_rows = len(readouts)
    correct = probe.correct(features, targets).double().numpy()
    true_prob = probe.true_token_probability(features, targets).double().numpy()
    majority = torch.mode(targets).values  # always answering the commonest answer token: the chance level
    detail = {"layer": layer, "fitted_on": FITTED_HERE if fitted_here else FITTED_EARLIER,
              "classes": int(len(probe.classes)), "positions": int(len(targets)),
              "true_token_prob": float(_row_means(true_prob, rows, n_rows).mean()),
              "majority_token_baseline": float(_row_means((targets == majority).double().numpy(), rows, n_rows).mean()),
              "forget": _row_means(correct, rows, n_rows).tolist()}
    return float(np.mean(detail["forget"])), detail, fit_seconds


def plan_white_box(ev, data, fmt, metrics: Sequence[str]) -> Callable[[], dict]:
    """Ask `ev` for the layer readouts of the wanted white-box metrics on `data`'s forget answers; return the
    function computing ``{"metrics": ..., "per_sample": {"logit_lens": ..., "linear_probe": ...}}`` after
    `ev.run()`. The probe is fitted on this evaluation's model when `data.probes` has none yet."""
    examples = forget_answer_examples(list(data.splits.forget), fmt, ev.tokenizer)
    lens = ev.logit_lens(examples) if "forget_logit_lens" in metrics else None
    own = ev.score(examples) if lens is not None else None
    layer = probe_layer(ev.model) if "forget_linear_probe" in metrics else None
    hidden = ev.hidden_states(examples, layer) if layer is not None else None

    def finish() -> dict:
        result: dict[str, Any] = {"metrics": {}, "per_sample": {}}
        if lens is not None:
            result["metrics"]["forget_logit_lens"], result["per_sample"]["logit_lens"] = _lens_result(lens.get(),
                                                                                                      own.get())
        if hidden is not None:
            value, detail, fit_seconds = _probe_result(data.probes, layer, hidden.get(), model_device(ev.model))
            result["metrics"]["forget_linear_probe"], result["per_sample"]["linear_probe"] = value, detail
            if fit_seconds:
                ev.seconds["probe_fit"] = ev.seconds.get("probe_fit", 0.0) + fit_seconds
        return result

    return finish


def fit_forget_probe(model, tokenizer, data, fmt, eval_cfg) -> LinearProbe | None:
    """Fit the linear probe on `model`'s forget-answer hidden states and keep it on `data`, so that every later
    evaluation of `data` (any model) applies this one: fit on model A, evaluate model B. One scoring pass. None (and
    nothing kept) when `model`'s hidden states are not finite."""
    from unlearnkit.benchmarks.evaluator import Evaluator

    ev = Evaluator(model, tokenizer, batch_size=eval_cfg.batch_size, max_tokens=eval_cfg.max_tokens_per_batch)
    layer = probe_layer(model)
    hidden = ev.hidden_states(forget_answer_examples(list(data.splits.forget), fmt, tokenizer), layer)
    ev.run()
    features, targets, _ = _probe_positions(hidden.get(), layer)
    if not bool(torch.isfinite(features).all()):  # a broken starting model: each evaluation fits its own
        return None
    data.probes[layer] = LinearProbe.fit(features.to(model_device(model)), targets)
    return data.probes[layer]
