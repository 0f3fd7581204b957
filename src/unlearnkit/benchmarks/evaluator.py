"""The Evaluator: one per evaluation of one model, shared by every metric of every benchmark it runs.

Benchmarks plan first: each metric asks for the passes it needs (`score` — teacher-forced summed
log-probs; `token_stats` — per-token log-probs, moments and argmax; `generation` — decoded text under a
`Decoding`; `gradnorm` — per-sample gradient norms; `reference_score` — the reference model's scores;
`logit_lens` / `hidden_states` — what the decoder layers say at the supervised positions, `readout`).
`run()` then takes the union, deduplicates identical sequences across metrics and splits (a sequence asked
for its score and its token statistics is run once: the score is the statistics' sum), runs each pass
once on the model's device under the token budget, and every request gets its arrays in the order it
asked. A sequence asked for a layer readout is read during its own score or statistics pass (hooks on
the same forward; such sequences are batched among themselves so the hooks see only them).
``counts`` and ``seconds`` say what ran (the breakdown `bench/eval_throughput.py` prints); ``seconds``'s
``readout`` is the part of the passes' time spent reading layers.

Under several processes (`accelerate launch`, `torchrun`), each rank runs its share of every pass — every
world_size-th distinct sequence or prompt — and the results are all-gathered back into the original
order, so every rank computes the same metrics as a single process would (rank 0 writes them).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from unlearnkit.benchmarks.generation import Decoding, generate
from unlearnkit.benchmarks.gradnorm import gradnorm_scores
from unlearnkit.benchmarks.passes import score_examples, token_statistics
from unlearnkit.benchmarks.prefix import prefix_length
from unlearnkit.benchmarks.readout import Readout
from unlearnkit.data.batch import Example

Key = tuple[tuple[int, ...], tuple[int, ...]]


def _ranks() -> tuple[int, int]:
    """(rank, world size) of the data-parallel processes; the process group is set up on first use."""
    from unlearnkit.train.strategy import join_processes

    return join_processes()


def _sharded(items: list, run: Callable[[list], list], group: Callable[[Any], Any] | None = None) -> list:
    """`run` over this rank's share of `items`, all-gathered back in `items`' order. The share is every
    world_size-th item, or with `group` whole groups of items with the same ``group(item)``, each to the rank
    with the fewest items so far (a prompt's answers stay on one rank, which runs the prompt once: `prefix`)."""
    rank, world = _ranks()
    if world == 1:
        return run(items)
    import torch.distributed as dist

    shares = _shares(items, world, group)
    mine = run([items[i] for i in shares[rank]]) if shares[rank] else []
    gathered: list = [None] * world
    dist.all_gather_object(gathered, list(mine))
    out: list = [None] * len(items)
    for share, part in zip(shares, gathered):
        for index, value in zip(share, part):
            out[index] = value
    return out


def _shares(items: list, world: int, group: Callable[[Any], Any] | None = None) -> list[list[int]]:
    """Per rank, the indices into `items` it runs (see `_sharded`)."""
    if group is None:
        return [list(range(len(items)))[r::world] for r in range(world)]
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(group(item), []).append(index)
    shares: list[list[int]] = [[] for _ in range(world)]
    for members in groups.values():  # each group to the rank with the fewest items so far
        min(shares, key=len).extend(members)
    return [sorted(share) for share in shares]


def _prompt(key: Key) -> tuple[int, ...]:
    """The part of a sequence that its teacher-forced pass may share with others (`prefix.prefix_length`)."""
    return key[0][:prefix_length(Example(key[0], key[1]))]


class Request:
    """A pass result, filled by `Evaluator.run`."""

    def __init__(self, kind: str):
        self.kind = kind
        self._value: Any = None
        self._ready = False

    def set(self, value: Any) -> None:
        self._value, self._ready = value, True

    def get(self) -> Any:
        if not self._ready:
            raise RuntimeError(f"the {self.kind} pass has not run: call Evaluator.run() first")
        return self._value


def _key(example: Example) -> Key:
    return tuple(example.input_ids), tuple(example.labels)


class Evaluator:
    """Collects pass requests for one model, runs each distinct sequence once, fills the requests."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int | None = 32, max_tokens: int | None = None,
                 progress: bool = False, reference_model: Any = None):
        self.model, self.tokenizer, self.reference_model = model, tokenizer, reference_model
        self.batch_size, self.max_tokens, self.progress = batch_size, max_tokens, progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._examples: dict[Key, Example] = {}
        self._wanted: dict[str, dict[Key, None]] = {"score": {}, "stats": {}, "gradnorm": {}, "reference": {},
                                                    "lens": {}, "hidden": {}}
        self._hidden_layers: set[int] = set()
        self._requests: list[tuple[str, list[Key], Request]] = []
        self._generations: list[tuple[Decoding, tuple[str, ...], list[tuple[int, ...]], Request]] = []
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ planning

    def _ask(self, kind: str, examples: Sequence[Example]) -> Request:
        keys = []
        for example in examples:
            key = _key(example)
            self._examples.setdefault(key, example)
            self._wanted[kind][key] = None
            keys.append(key)
        request = Request(kind)
        self._requests.append((kind, keys, request))
        return request

    def score(self, examples: Sequence[Example]) -> Request:
        """→ (summed log-prob (N,) float64, supervised tokens (N,) int64)."""
        return self._ask("score", examples)

    def token_stats(self, examples: Sequence[Example]) -> Request:
        """→ list of `passes.TokenStatistics`."""
        return self._ask("stats", examples)

    def logit_lens(self, examples: Sequence[Example]) -> Request:
        """→ (summed log-prob per decoder layer (N, L) float64, supervised tokens (N,) int64): each block's output
        decoded through the model's final norm and unembedding (`readout`); layer L−1 is the model's own score."""
        self._ask("score", examples)
        return self._ask("lens", examples)

    def hidden_states(self, examples: Sequence[Example], layer: int) -> Request:
        """→ list of `readout.LayerReadout`, one per example, holding block `layer`'s output at the supervised
        positions (``hidden[layer]`` (n, d)) and the tokens they predict (``targets``)."""
        self._ask("score", examples)
        self._hidden_layers.add(layer)
        return self._ask("hidden", examples)

    def gradnorm(self, examples: Sequence[Example]) -> Request:
        """→ (N,) per-sample gradient norms (`passes.gradnorm_scores`)."""
        return self._ask("gradnorm", examples)

    def reference_score(self, examples: Sequence[Example]) -> Request:
        """→ the reference model's (summed log-prob, tokens); needs `reference_model`."""
        if self.reference_model is None:
            raise ValueError("reference_score needs an Evaluator with a reference_model")
        return self._ask("reference", examples)

    def generation(self, prompts: Sequence[Sequence[int]], decoding: Decoding,
                   stop_strings: Sequence[str] = ()) -> Request:
        """→ list of generated texts, one per prompt (token ids, BOS included)."""
        request = Request("generation")
        self._generations.append((decoding, tuple(stop_strings), [tuple(p) for p in prompts], request))
        return request

    # ------------------------------------------------------------------------------------------ running

    def _timed(self, name: str, count: int, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        self.counts[name] = self.counts.get(name, 0) + count
        return value

    def _examples_of(self, keys: list[Key]) -> list[Example]:
        return [self._examples[k] for k in keys]

    def _run_pass(self, name: str, keys: list[Key], fn: Callable[[list[Example], Any], list],
                        readouts: dict[Key, Any]) -> dict[Key, Any]:
        """`fn(examples, readout)` over `keys`, sharded: the keys without a layer readout in one call, those with
        one in another (so the readout hooks see only them), whose `readout.LayerReadout`s go into `readouts`."""
        traced_keys = self._wanted["lens"].keys() | self._wanted["hidden"].keys()
        plain = [k for k in keys if k not in traced_keys]
        traced = [k for k in keys if k in traced_keys]
        values: dict[Key, Any] = {}
        if plain:
            values.update(zip(plain, self._timed(name, len(plain), lambda: _sharded(
                plain, lambda part: fn(self._examples_of(part), None), group=_prompt))))
        if traced:
            def run(part: list[Key]) -> list:
                readout = Readout(len(part), lens=bool(self._wanted["lens"]), layers=sorted(self._hidden_layers))
                out = fn(self._examples_of(part), readout)
                self.seconds["readout"] = self.seconds.get("readout", 0.0) + readout.seconds
                return list(zip(out, readout.rows))

            for key, (value, row) in zip(traced, self._timed(name, len(traced), lambda: _sharded(traced, run))):
                values[key], readouts[key] = value, row
        return values

    def run(self) -> None:
        """Run every distinct pass once (this rank's share of it, under several processes) and fill every
        request."""
        stats_keys = list(self._wanted["stats"])
        score_keys = [k for k in self._wanted["score"] if k not in self._wanted["stats"]]
        common = dict(batch_size=self.batch_size, max_tokens=self.max_tokens, progress=self.progress)

        def scored(model):
            def run(examples: list[Example], readout: Any = None) -> list[tuple[float, int]]:
                summed, counts = score_examples(model, examples, self.pad_id, readout=readout, **common)
                return list(zip(summed.tolist(), counts.tolist()))
            return run

        readouts: dict[Key, Any] = {}
        stats = self._run_pass("token_stats", stats_keys, lambda examples, readout: token_statistics(
            self.model, examples, self.pad_id, readout=readout, **common), readouts)
        scores: dict[Key, tuple[float, int]] = {k: (float(s.logprobs.sum()), len(s.logprobs)) for k, s in stats.items()}
        scores.update(self._run_pass("score", score_keys, scored(self.model), readouts))
        grad_keys = list(self._wanted["gradnorm"])
        grads = dict(zip(grad_keys, self._timed("gradnorm", len(grad_keys), lambda: _sharded(
            grad_keys, lambda keys: gradnorm_scores(self.model, self._examples_of(keys), self.pad_id,
                                                    batch_size=16).tolist())))) if grad_keys else {}
        ref_keys = list(self._wanted["reference"])
        references = dict(zip(ref_keys, self._timed("reference_score", len(ref_keys), lambda: _sharded(
            ref_keys, lambda keys: scored(self.reference_model)(self._examples_of(keys)))))) if ref_keys else {}
        for kind, keys, request in self._requests:
            if kind == "stats":
                request.set([stats[k] for k in keys])
            elif kind == "gradnorm":
                request.set(np.array([grads[k] for k in keys], dtype=np.float64))
            elif kind == "hidden":
                request.set([readouts[k] for k in keys])
            elif kind == "lens":
                request.set((np.array([readouts[k].lens for k in keys], dtype=np.float64).reshape(len(keys), -1),
                             np.array([scores[k][1] for k in keys], dtype=np.int64)))
            else:
                table = scores if kind == "score" else references
                request.set((np.array([table[k][0] for k in keys], dtype=np.float64),
                             np.array([table[k][1] for k in keys], dtype=np.int64)))
        self._run_generations()
        self._requests, self._generations = [], []

    def _run_generations(self) -> None:
        groups: dict[tuple[Decoding, tuple[str, ...]], dict[tuple[int, ...], None]] = {}
        for decoding, stops, prompts, _ in self._generations:
            groups.setdefault((decoding, stops), {}).update(dict.fromkeys(prompts))
        texts: dict[tuple[Decoding, tuple[str, ...]], dict[tuple[int, ...], str]] = {}
        for (decoding, stops), unique in groups.items():
            prompts = list(unique)
            outputs = self._timed("generation", len(prompts), lambda: _sharded(prompts, lambda part: generate(
                self.model, self.tokenizer, [list(p) for p in part], decoding, stop_strings=stops,
                progress=self.progress)))
            texts[(decoding, stops)] = dict(zip(prompts, outputs))
        for decoding, stops, prompts, request in self._generations:
            request.set([texts[(decoding, stops)][p] for p in prompts])
