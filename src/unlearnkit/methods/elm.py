"""ELM: erasure of language memory (Gandikota, Feucht, Marks, Bau, 2024, "Erasing Conceptual Knowledge from
Language Models", arXiv:2410.02760).

The frozen model is its own classifier of the concept: the same text read after an *expert* context c⁺ ("written
by an expert on {concept}") and after a *novice* context c⁻ ("written by someone who knows nothing about
{concept}") says which next tokens carry the concept. For each supervised position t of a forget row x (the answer
of a QA row, every token of a text row), with ℓ(·) = log_softmax(z_ref(·) / T) the frozen model's log-probs:

    log q_t  = ℓ(x_<t) + η · [ℓ(c⁻, x_<t) − ℓ(c⁺, x_<t)]      (then top-k of log q_t kept, softmax; no gradient)
    L_erase  = (1/|A|) Σ_t CE(π_θ(·|x_<t), q_t) = −(1/|A|) Σ_t Σ_v q_t,v · log π_θ(v|x_<t)
    L_fluent = NLL_θ(s | x_prompt)   s: a continuation of the forget prompt generated once, before training, by
               the frozen model guided away from the concept, greedy over
               ℓ(p, s_<j) + γ_f·[ℓ(c⁻, p, s_<j) − ℓ(c⁺, p, s_<j)]
    L        = L_erase + w_f · L_fluent + α · L_retain               (L_retain: KL to the frozen model on retain rows)

With c⁺ = c⁻ (or η = 0), top_k = 0 and T = 1 the target is the frozen model's own distribution, so at the start
(π_θ = π_ref) the erase term has zero gradient (d CE / d z_θ = softmax(z_θ) − q = 0), as UNDIAL's with β = 0.

Choices, from the paper and its code (rohitgandikota/erasing-llm, trainscripts/erase.py):

* η = 500. The code ramps η linearly over a text's positions from 1 to 1000 (the `--eta` default); a constant η at
  the ramp's mean treats every position alike, whatever the row's length.
* T = 1.2 on the teacher's logits and top_k = 50 on log q (the rest get probability 0): the code's defaults. Both are
  fields (T = 1 and top_k = 0 turn them off).
* The contexts are prepended to the whole row (after its BOS token, when it has one), as the code prepends them to
  the raw text; with a chat template they precede the template. The templates are fields with a ``{concept}``
  placeholder; `concept` should name what is erased (e.g. "the fictitious authors of the TOFU dataset"). They are
  tokenised once in `setup` with the run's tokenizer (the training data's); the three reference forwards per
  forget batch (plain, expert, novice) read the same supervised tokens, so their logits line up position for
  position.
* Retain: KL(π_ref ‖ π_θ) on retain rows with α = 1 (the code's default is CE to the frozen model's argmax token;
  KL is its soft form). `retain_loss=nll` trains on the retain answers instead.
* Fluency (the paper's conditional-fluency term): the code generates, with classifier-free guidance γ = 3, a
  continuation of the forget text after a sentence that changes the subject, and trains on it. Here the continuation
  follows the forget prompt (the question of a QA row; the whole text of a text row), is greedy (deterministic: no
  RNG, the same on every rank and on resume), at most `fluency_tokens` long, stops at an EOS of the model's config,
  and is conditioned on c⁺ / c⁻ the same way as the erase target; every generated token is supervised. It costs
  one single-token forward of each of the three contexts per generated token (each context keeps a KV cache),
  once before the first step; `fluency_weight=0` skips it.
* The code trains LoRA adapters (rank 4–8) on layers 4–7 of 32; here the trainable set is the recipe's (full
  weights, or `model.lora`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearnkit.data.batch import IGNORE_INDEX, Example, TokenBatch, collate_prompts
from unlearnkit.errors import UnlearnError
from unlearnkit.losses import logits_of, supervised_logits
from unlearnkit.methods.altpo import _eos_ids
from unlearnkit.methods.base import RetainRegularised
from unlearnkit.model.hooks import cache_keyword, output_cache
from unlearnkit.registry import METHODS, NonNegative, NonNegativeInt, Positive, PositiveInt

EXPERT = "The following text was written by an expert on {concept}, who knows every detail and states it exactly:\n"
NOVICE = ("The following text was written by someone who knows nothing about {concept}, and who gets its details"
          " wrong or moves on to another subject:\n")
FLUENT = "elm/fluent"


@METHODS.register("elm")
@dataclass
class ELM(RetainRegularised):
    """Erasure of language memory: match the frozen model's own 'novice, not expert' distribution on forget text."""

    eta: NonNegative = 500.0  # η: strength of the novice-minus-expert shift of the target
    temperature: Positive = 1.2  # T: the teacher's logits are divided by it
    top_k: NonNegativeInt = 50  # the target keeps its k most likely tokens (0: all)
    concept: str = "the subject of this text"
    expert_prompt: str = EXPERT
    novice_prompt: str = NOVICE
    fluency_weight: NonNegative = 1.0  # w_f (0: no fluency term, no generation)
    fluency_tokens: PositiveInt = 32  # longest generated continuation
    fluency_guidance: NonNegative = 3.0  # γ_f: the guidance of the generation (the code's CFG scale)
    retain_loss: str = "kl"
    reference = "model"  # the teacher's logits under three contexts

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("expert_prompt", "novice_prompt"):
            try:
                getattr(self, name).format(concept=self.concept)
            except (KeyError, IndexError, ValueError) as err:
                raise UnlearnError(f"method.{name} may use only the placeholder {{concept}} ({err!r}); write"
                                   " literal braces as {{ and }}") from None
        self._contexts: tuple[torch.Tensor, torch.Tensor] | None = None
        self._bos: int | None = None

    def prepare(self, model):
        self._model = model  # the starting model, for the fluency generation in `setup`
        return super().prepare(model)

    def setup(self, data) -> None:
        tokenizer = getattr(data, "tokenizer", None)
        if tokenizer is None:
            raise UnlearnError("elm tokenises its expert/novice contexts with the run's tokenizer; build the data"
                               " with `training_data` (as `unlearn run` does) or give UnlearnData(tokenizer=...)")
        self._contexts = tuple(torch.tensor(_encode(tokenizer, text.format(concept=self.concept)), dtype=torch.long)
                               for text in (self.expert_prompt, self.novice_prompt))
        if not all(len(c) for c in self._contexts):
            raise UnlearnError("method.expert_prompt and method.novice_prompt must not be empty")
        self._bos = getattr(tokenizer, "bos_token_id", None)
        if self.fluency_weight:
            model = getattr(self, "_model", None)
            if model is None:
                raise UnlearnError("elm.setup needs the model: call prepare(model) first")
            data.extra[FLUENT] = self._fluent_rows(model, data.forget)

    # ------------------------------------------------------------------ losses

    def forget_loss(self, model, batch, ref):
        if self._contexts is None:
            raise UnlearnError("elm: call setup(data) before the loss (the trainer does)")
        labels = batch.forget.labels
        student, targets = supervised_logits(logits_of(model, batch.forget), labels)
        with torch.no_grad():
            plain, expert, novice = (supervised_logits(logits_of(ref, view), view.labels)[0]
                                     for view in self.views(batch.forget))
            target = torch.softmax(self.target_logits(plain, expert, novice), dim=-1)
        logp = torch.log_softmax(student, dim=-1)
        positions = max(len(targets), 1)
        erase = -(target * logp).sum() / positions
        logged = {"erase": erase.detach(),
                  "forget_nll": -logp.detach().gather(-1, targets.unsqueeze(-1)).sum() / positions}
        total = erase
        fluent = batch.extra.get(FLUENT)
        if self.fluency_weight and fluent is not None:
            fluency = _nll(model, fluent)
            logged["fluency"] = fluency.detach()
            total = erase + self.fluency_weight * fluency
        return total, logged

    def target_logits(self, plain: torch.Tensor, expert: torch.Tensor, novice: torch.Tensor,
                      eta: float | None = None, top_k: int | None = None) -> torch.Tensor:
        """log q (up to a constant) from the frozen model's (N, V) logits without, with c⁺ and with c⁻."""
        eta = self.eta if eta is None else eta
        top_k = self.top_k if top_k is None else top_k
        lp = [torch.log_softmax(z.float() / self.temperature, dim=-1) for z in (plain, expert, novice)]
        edited = lp[0] + eta * (lp[2] - lp[1])
        if top_k and top_k < edited.shape[-1]:
            kth = edited.topk(top_k, dim=-1).values[..., -1:]
            edited = edited.masked_fill(edited < kth, float("-inf"))
        return edited

    def views(self, batch: TokenBatch) -> tuple[TokenBatch, TokenBatch, TokenBatch]:
        """The batch itself, and with the expert / novice context inserted after BOS (context tokens unsupervised)."""
        ids, mask, labels = batch.input_ids, batch.attention_mask, batch.labels.clone()
        labels[:, 0] = IGNORE_INDEX  # never a target; a row without BOS must not gain one behind the context
        keep = 1 if self._bos is not None and bool((ids[:, 0] == self._bos).all()) else 0
        out = [batch]
        for context in self._contexts:
            context = context.to(ids.device)
            n = len(context)
            out.append(TokenBatch(torch.cat([ids[:, :keep], context.expand(len(ids), n), ids[:, keep:]], 1),
                                  torch.cat([mask[:, :keep], mask.new_ones(len(ids), n), mask[:, keep:]], 1),
                                  torch.cat([labels[:, :keep], labels.new_full((len(ids), n), IGNORE_INDEX),
                                             labels[:, keep:]], 1)))
        return tuple(out)

    # ------------------------------------------------------------------ fluency data

    @torch.no_grad()
    def _fluent_rows(self, model, forget: list[Example]) -> list[Example]:
        """Each forget prompt with a greedy continuation of the frozen model guided away from the concept."""
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            eos = _eos_ids(model)
            rows = []
            for start in range(0, len(forget), 16):
                rows += self._continue(model, [_prompt(e, eos, self._bos) for e in forget[start:start + 16]], eos, device)
            return rows
        finally:
            model.train(was_training)

    def _continue(self, model, prompts: list[list[int]], eos: set[int], device) -> list[Example]:
        """Greedy guided continuations of `prompts`: each of the three views (plain, c⁺, c⁻) keeps its own KV cache,
        prompts left-padded with explicit positions (those of the unpadded row), one token per row per step."""
        keyword = cache_keyword(model)
        keep = 1 if self._bos is not None and all(p[:1] == [self._bos] for p in prompts) else 0
        views = []  # per view: [last logits (B, V), cache, attention mask (B, W), last position (B,)]
        for context in [[]] + [c.tolist() for c in self._contexts]:
            ids, mask = collate_prompts([p[:keep] + context + p[keep:] for p in prompts], 0)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            views.append([out.logits[:, -1], output_cache(out), mask, positions[:, -1]])
        new: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        for step in range(self.fluency_tokens):
            picks = self.target_logits(*[view[0] for view in views], eta=self.fluency_guidance, top_k=0).argmax(-1)
            for i, token in enumerate(picks.tolist()):
                if not done[i]:
                    new[i].append(token)  # an EOS ends the row and is supervised
                    done[i] = token in eos
            if all(done) or step == self.fluency_tokens - 1:
                break
            for view in views:  # finished rows keep decoding; their tokens are not kept
                view[2] = torch.cat([view[2], view[2].new_ones(len(prompts), 1)], 1)
                view[3] = view[3] + 1
                out = model(input_ids=picks.unsqueeze(1), attention_mask=view[2], position_ids=view[3].unsqueeze(1),
                            use_cache=True, **{keyword: view[1]})
                view[0], view[1] = out.logits[:, -1], output_cache(out)
        return [Example(tuple(p + s), tuple([IGNORE_INDEX] * len(p) + s)) for p, s in zip(prompts, new)]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _prompt(example: Example, eos: set[int], bos: int | None) -> list[int]:
    """The prompt of a QA row; the whole text of a text row (every token but a BOS supervised), without its final EOS."""
    n, ids = example.prompt_length, list(example.input_ids)
    text = n == 0 or (n == 1 and ids[0] == bos)
    ids = ids if text else ids[:n]
    while len(ids) > 1 and ids[-1] in eos:
        ids.pop()
    return ids


def _nll(model, batch: TokenBatch) -> torch.Tensor:
    logits, targets = supervised_logits(logits_of(model, batch), batch.labels)
    return F.cross_entropy(logits, targets) if len(targets) else logits.sum() * 0
