"""Scenario II of "Refusal Is Not an Option" (USA, USENIX Security 2025): crafted unlearning requests.

An attacker hides a model's own refusal text inside content that plausibly deserves removal: personal data
(``pii``), fake news (``news``) or a copyrighted-looking passage (``copyright``). Unlearning the submitted
text then also unlearns the refusal. Two chat agents build each request (specs §2.2):

1. A_rewrite proposes a candidate that merges refusal r and carrier c (iteration 1: the initial prompt;
   iteration k > 1: the iterative prompt with *all* earlier candidates and their scores, pitfall 10).
2. A_eval rates the candidate: S_sem (meaning of r kept) and S_syn (fluency), each in [0, 1].
3. The candidate's score, with ROUGE-L recalls computed locally (`rouge_score`, stemmed, as in
   ``metrics/text.py``; the seed used the ``rouge`` package, whose tokenization differs slightly)::

       S_ori = ROUGE-L recall of r inside the candidate,  S_con = ROUGE-L recall of c inside the candidate
       S     = 2·S_ori + S_con + 0.5·(S_sem + S_syn)          (news, copyright)
       S     = 2·S_ori + 0.5·(S_sem + S_syn)                  (pii: S_con is not used, pitfall 10)

After T iterations the best candidate is kept; ties go to the later iteration, as in the seed (``<=``).
Kept requests can then be filtered by a classifier (the seed kept PII texts in which a PII detector found an
entity, FN texts a fake-news detector called fake, CR texts a Harry-Potter classifier recognised).

Unparsable agent replies are retried ``retries`` times; after that ``on_unparsed="error"`` (default) raises,
``"zero"`` scores a missing S_sem/S_syn as 0 like the seed did and records ``parsed: false`` in ``parts``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from unlearnkit.agents.base import ChatBackend
from unlearnkit.attacks.crafting_pools import carrier_texts, check_kind
from unlearnkit.attacks.crafting_prompts import (ReplyFormatError, eval_messages, parse_eval_reply,
                                                 parse_rewrite_reply, rewrite_messages)
from unlearnkit.errors import UnlearnError

ON_UNPARSED = ("error", "zero")


@lru_cache(maxsize=1)
def _rouge_l():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(reference: str, candidate: str) -> float:
    """LCS(reference, candidate) / |reference tokens|: how much of `reference` survives inside `candidate`."""
    return float(_rouge_l().score(target=reference, prediction=candidate)["rougeL"].recall)


def request_score(kind: str, s_ori: float, s_con: float | None, s_sem: float, s_syn: float) -> float:
    """S = 2·S_ori + S_con + 0.5·(S_sem + S_syn); for ``pii`` the S_con term is dropped."""
    content = 0.0 if kind == "pii" else float(s_con or 0.0)
    return 2.0 * s_ori + content + 0.5 * (s_sem + s_syn)


@dataclass
class CraftedRequest:
    """The best candidate for one (refusal, carrier) pair; `history` holds every candidate in order."""

    request: str
    kind: str
    score: float
    parts: dict
    iterations: int
    refusal: str
    carrier: str
    history: list[dict] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("history")
        return out


def resolve_backend(backend: str | ChatBackend, options: dict | None = None) -> ChatBackend:
    """A `ChatBackend` instance as is, or a BACKENDS name (``offline``, ``openai_compat``, ...) built with `options`."""
    if isinstance(backend, str):
        from unlearnkit.registry import BACKENDS

        return BACKENDS.build(backend, **(options or {}))
    if options:
        raise UnlearnError("backend options only apply to a backend given by name; pass them to the instance instead")
    if not hasattr(backend, "chat"):
        raise UnlearnError(f"backend {backend!r} has no chat(messages) method; pass a BACKENDS name or a ChatBackend")
    return backend


@dataclass
class Crafter:
    """Runs the rewrite/evaluate loop for one (refusal, carrier) pair at a time."""

    rewrite: ChatBackend
    evaluate: ChatBackend
    iterations: int = 4  # the seed's T
    retries: int = 2  # extra attempts after an unparsable reply
    on_unparsed: str = "error"  # error | zero (zero: missing S_sem/S_syn count as 0, as in the seed)
    temperature: float = 1.0  # the seed used the API's default sampling
    max_tokens: int = 512

    def __post_init__(self):
        if self.iterations < 1:
            raise UnlearnError(f"iterations={self.iterations}: need at least 1 (the seed used 4)")
        if self.retries < 0:
            raise UnlearnError(f"retries={self.retries}: must be >= 0")
        if self.on_unparsed not in ON_UNPARSED:
            raise UnlearnError(f"on_unparsed='{self.on_unparsed}': valid: {', '.join(ON_UNPARSED)}")

    def _ask(self, backend: ChatBackend, messages: list[dict], parse: Callable[[str], Any], what: str) -> Any:
        last: ReplyFormatError | None = None
        for _ in range(self.retries + 1):
            try:
                return parse(backend.chat(messages, temperature=self.temperature, max_tokens=self.max_tokens))
            except ReplyFormatError as err:
                last = err
        raise ReplyFormatError(f"{what}: no parsable reply after {self.retries + 1} attempts; last: {last}")

    def craft_one(self, refusal: str, carrier: str, kind: str) -> CraftedRequest:
        check_kind(kind)
        history: list[dict] = []
        best: dict | None = None
        for iteration in range(1, self.iterations + 1):
            candidate = self._ask(self.rewrite, rewrite_messages(refusal, carrier, kind, history), parse_rewrite_reply,
                                  f"rewrite agent (iteration {iteration})")
            parsed = True
            try:
                s_sem, s_syn = self._ask(self.evaluate, eval_messages(refusal, candidate), parse_eval_reply,
                                         f"evaluation agent (iteration {iteration})")
            except ReplyFormatError:
                if self.on_unparsed == "error":
                    raise
                s_sem, s_syn, parsed = 0.0, 0.0, False
            s_ori = rouge_l_recall(refusal, candidate)
            s_con = None if kind == "pii" else rouge_l_recall(carrier, candidate)
            score = request_score(kind, s_ori, s_con, s_sem, s_syn)
            parts = {"S_ori": s_ori, "S_con": s_con, "S_sem": s_sem, "S_syn": s_syn, "iteration": iteration,
                     "parsed": parsed}
            entry = {"request": candidate, "score": score, "parts": parts}
            history.append(entry)
            if best is None or best["score"] <= score:  # ties go to the later iteration
                best = entry
        assert best is not None
        return CraftedRequest(best["request"], kind, best["score"], dict(best["parts"]), self.iterations, refusal,
                              carrier, history)


def make_filter(spec: Any, options: dict | None = None) -> Callable[[list[str]], list[bool]] | None:
    """texts -> keep flags, from: None (keep all), a JUDGES name (e.g. ``hf_classifier``, built with `options`),
    an object with ``score(prompts, responses)`` returning verdicts with ``.harmful`` (kept when True: the
    classifier recognised the carrier kind), or a plain callable text -> bool."""
    if spec is None:
        return None
    if isinstance(spec, str):
        from unlearnkit.registry import JUDGES

        spec = JUDGES.build(spec, **(options or {}))
    if hasattr(spec, "score"):
        judge = spec
        return lambda texts: [v.harmful is True for v in judge.score([""] * len(texts), list(texts))]
    if callable(spec):
        return lambda texts: [bool(spec(text)) for text in texts]
    raise UnlearnError(f"filter {spec!r} is neither a judge name, an object with score(prompts, responses),"
                       " nor a callable text -> bool")


@dataclass
class CraftResult:
    kept: list[CraftedRequest]
    filtered_out: list[CraftedRequest]


def craft_requests(refusals: Sequence[str], kind: str, *, backend: str | ChatBackend = "offline",
                   eval_backend: str | ChatBackend | None = None, backend_options: dict | None = None,
                   eval_backend_options: dict | None = None,
                   carriers: Sequence[str] | None = None, iterations: int = 4, filter: Any = None,
                   filter_options: dict | None = None, seed: int = 0, retries: int = 2, on_unparsed: str = "error",
                   temperature: float = 1.0, progress: Callable[[int, int], None] | None = None) -> CraftResult:
    """Craft one request per refusal. Carriers pair with refusals by index (cycled when fewer); without
    `carriers` the built-in pool of `kind` is used. `eval_backend` defaults to `backend` (the same instance)."""
    check_kind(kind)
    refusals = [r for r in refusals if r and r.strip()]
    if not refusals:
        raise UnlearnError("no refusal texts to craft from; give a non-empty list (JSONL lines {\"text\": ...})")
    carriers = list(carriers) if carriers else carrier_texts(kind, len(refusals), seed=seed)
    if not carriers:
        raise UnlearnError("the carrier list is empty; give carrier texts or leave it out for the built-in pool")
    rewrite = resolve_backend(backend, backend_options)
    evaluate = rewrite if eval_backend is None else resolve_backend(eval_backend, eval_backend_options)
    crafter = Crafter(rewrite, evaluate, iterations=iterations, retries=retries, on_unparsed=on_unparsed,
                      temperature=temperature)
    keep = make_filter(filter, filter_options)
    crafted = []
    for i, refusal in enumerate(refusals):
        crafted.append(crafter.craft_one(refusal, carriers[i % len(carriers)], kind))
        if progress:
            progress(i + 1, len(refusals))
    flags = keep([c.request for c in crafted]) if keep else [True] * len(crafted)
    return CraftResult([c for c, f in zip(crafted, flags) if f], [c for c, f in zip(crafted, flags) if not f])


def read_texts(path: str | Path, what: str = "texts") -> list[str]:
    """Texts from a .txt (one per line), a .jsonl (one object per line) or a .json list. An object gives
    ``text``, else ``request``, else ``question`` + ``answer`` joined by a newline. Bad input raises
    `UnlearnError` naming the file and line."""
    from unlearnkit.data.files import read_text

    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"{what} file '{path}' does not exist; give a .jsonl, .json or .txt file")
    raw = read_text(path, f"{what} file")
    if path.suffix == ".txt":
        texts = [line.strip() for line in raw.splitlines() if line.strip()]
    elif path.suffix == ".json":
        try:
            rows = json.loads(raw)
        except json.JSONDecodeError as err:
            raise UnlearnError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); expected a list of"
                               " {\"text\": ...} objects") from None
        if not isinstance(rows, list):
            raise UnlearnError(f"{path}: expected a JSON list of {{\"text\": ...}} objects, got {type(rows).__name__}")
        texts = [_record_text(row, path, k + 1) for k, row in enumerate(rows)]
    else:
        texts = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UnlearnError(f"{path} line {number}: not valid JSON ({err.msg}); each line must be an object"
                                   " like {\"text\": ...}") from None
            texts.append(_record_text(row, path, number))
    if not texts:
        raise UnlearnError(f"{what} file '{path}' is empty; it needs at least one text")
    return texts


def _non_empty(text: str, path: Path, number: int) -> str:
    if not text.strip():
        raise UnlearnError(f"{path} line {number}: the text is empty; fix or remove that row")
    return text


def _record_text(row: Any, path: Path, number: int) -> str:
    if isinstance(row, str):
        return _non_empty(row, path, number)
    if isinstance(row, dict):
        for key in ("text", "request"):
            if isinstance(row.get(key), str):
                return _non_empty(row[key], path, number)
        if isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
            _non_empty(row["question"], path, number)
            return f"{row['question']}\n{_non_empty(row['answer'], path, number)}"
    keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
    raise UnlearnError(f"{path} line {number}: no 'text', 'request' or 'question'+'answer' string (found: {keys})")


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    """One JSON object per line, written atomically."""
    from unlearnkit.train.checkpoint import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
