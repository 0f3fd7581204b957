"""MUSE (Shi et al., 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models"), with
OpenUnlearning's settings (``configs/eval/muse.yaml``). Hub ``muse-bench/MUSE-News`` / ``muse-bench/MUSE-Books``.

Metrics (ROUGE-L **F1**, ``unlearnkit.metrics.text``; greedy decoding, cut at EOS and stop strings):

* ``forget_verbmem_rouge``  = mean_i F1(gt_i, greedy continuation of prompt_i, ≤ 128 new tokens). Hub items
  come pre-split into (prompt, gt); `verbmem_from_texts` splits raw texts at the first ``prefix_tokens``
  tokens (continuation = the next ``continuation_tokens``) for local data.
* ``forget_knowmem_rouge`` / ``retain_knowmem_rouge`` = mean_i F1(answer_i, greedy answer ≤ 32 new tokens),
  the prompt being the split's in-context examples (``*_qa_icl``) then the question, in the
  "Question: …\\nAnswer: …" format with "\\n\\n" between examples; generations are cut at
  ``"\\n\\n"``, ``"\\nQuestion"``, ``"Question:"``. The retain value is MUSE's utility preservation.
* privleak (Min-K% MIA AUC on privleak forget vs holdout, normalised by the retrained model) is computed
  by ``unlearnkit.benchmarks.privacy``: pass it as ``muse_suite(..., privacy_fn=...)``.

`plan_muse` asks an `Evaluator` for one greedy generation per split (and one token-statistics pass over the
privleak texts), so a repeated prompt is decoded once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.benchmarks.generation import generate_greedy
from unlearnkit.data.formats import TagFormat
from unlearnkit.data.files import parse_rows
from unlearnkit.errors import UnlearnError
from unlearnkit.manifest import record_read
from unlearnkit.metrics.text import rouge_scores

MUSE_HUB_IDS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")
VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
# (hub config, hub split) -> MuseData field; the local file is <data_dir>/<config>/<split>.json(l)
FILES: dict[tuple[str, str], str] = {
    ("verbmem", "forget"): "verbmem_forget",
    ("knowmem", "forget_qa"): "knowmem_forget",
    ("knowmem", "forget_qa_icl"): "knowmem_forget_icl",
    ("knowmem", "retain_qa"): "knowmem_retain",
    ("knowmem", "retain_qa_icl"): "knowmem_retain_icl",
}
PRIVLEAK_SPLITS = ("forget", "holdout", "retain")
_KEYS = {"verbmem": ("prompt", "gt"), "knowmem": ("question", "answer")}

PrivacyFn = Callable[[Any, Any, Mapping[str, list[str]]], Mapping[str, Any]]


@dataclass
class MuseData:
    """The MUSE splits: verbmem {prompt, gt}; knowmem {question, answer} (+ ICL examples); privleak texts
    ({"forget", "holdout", "retain"} -> list of str; None when not loaded)."""

    verbmem_forget: list[dict]
    knowmem_forget: list[dict]
    knowmem_forget_icl: list[dict]
    knowmem_retain: list[dict]
    knowmem_retain_icl: list[dict]
    privleak: dict[str, list[str]] | None = None
    name: str = "muse"


@dataclass
class MuseResult:
    """Aggregate metrics, per-sample inputs/generations/scores, and where the time went."""

    metrics: dict[str, float | None]
    per_sample: dict[str, dict[str, list]]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metrics": {k: (None if v is None else float(v)) for k, v in self.metrics.items()},
                "per_sample": {k: {c: list(v) for c, v in cols.items()} for k, cols in self.per_sample.items()},
                "seconds": {k: float(v) for k, v in self.seconds.items()}}


def _check(rows: list, config: str, where: str, lines: Sequence[int | None] | None = None) -> list:
    """Rows of one MUSE split, checked: texts (privleak, raw) or string fields (verbmem, knowmem), none empty.

    An empty text or field is refused naming the row, except in the hub's raw corpus, whose texts are only
    joined into one stream (`data.texts.pretraining_chunks`): an empty one there adds nothing and is dropped."""
    def at(i: int) -> str:
        return f"{where}:{lines[i]}" if lines and lines[i] else f"{where} item {i}"

    if not isinstance(rows, list):
        raise UnlearnError(f"{where}: a MUSE {config} file is a JSON list (or JSON Lines), got a {type(rows).__name__}")
    if config in ("privleak", "raw"):
        texts = [row if isinstance(row, str) else row.get("text") if isinstance(row, Mapping) else None for row in rows]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UnlearnError(f"{where} item {i}: a MUSE {config} item is a string or {{'text': str}}, got {rows[i]!r:.80}")
            if not text.strip() and not (config == "raw" and lines is None):
                raise UnlearnError(f"{at(i)}: an empty MUSE {config} text; fix or remove it")
        return [text for text in texts if text.strip()]
    need = _KEYS[config]
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or any(not isinstance(row.get(k), str) for k in need):
            raise UnlearnError(f"{at(i)}: a MUSE {config} row needs string fields {', '.join(need)}, got {row!r:.100}")
        if blank := [k for k in need if not row[k].strip()]:
            raise UnlearnError(f"{at(i)}: a MUSE {config} row with an empty {blank[0]}; fix or remove the row")
    return [{k: row[k] for k in need} for row in rows]


def _local_file(directory: Path, config: str, split: str) -> Path | None:
    return next((p for p in (directory / config / f"{split}.json", directory / config / f"{split}.jsonl") if p.is_file()), None)


def _hub_rows(hub_id: str, config: str, split: str, revision: str | None) -> list:
    try:
        import datasets

        rows = datasets.load_dataset(hub_id, config, split=split, revision=revision).to_list()
        record_read(hub=f"{hub_id}/{config}/{split}", revision=revision, rows=rows)
        return rows
    except Exception as err:  # offline, gated, unknown split: all fixed the same way
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        raise UnlearnError(
            f"could not load MUSE {config}/{split} from the Hugging Face hub ({hub_id}): {type(err).__name__}: "
            f"{reason}; the hub may be unreachable: download the MUSE files and pass data_dir (data.data_dir in a "
            f"recipe) with <data_dir>/{config}/{split}.json") from err


def load_muse(corpus: str = "news", data_dir: str | Path | None = None, *, hub_id: str | None = None,
              revision: str | None = None, privleak: bool = True, limit: int | None = None) -> MuseData:
    """MUSE-News (``corpus="news"``) or MUSE-Books (``"books"``) evaluation splits.

    With ``data_dir``: ``<data_dir>/verbmem/forget.json``, ``<data_dir>/knowmem/{forget_qa, forget_qa_icl,
    retain_qa, retain_qa_icl}.json`` and, optionally, ``<data_dir>/privleak/{forget, holdout, retain}.json``
    (JSON array or JSON Lines; ``.jsonl`` too) — the hub's config/split names. Without it: the hub
    (configs ``verbmem``, ``knowmem``, ``privleak``). ``limit`` keeps the first N rows of each
    evaluated split (ICL examples are kept whole).
    """
    if corpus not in MUSE_HUB_IDS:
        raise UnlearnError(f"unknown MUSE corpus {corpus!r}; valid: {', '.join(MUSE_HUB_IDS)}")
    hub_id = hub_id or MUSE_HUB_IDS[corpus]
    directory = Path(data_dir).expanduser() if data_dir is not None else None
    if directory is not None and not directory.is_dir():
        raise UnlearnError(f"MUSE data directory {directory} does not exist; pass data_dir pointing at a folder "
                           "with verbmem/forget.json and knowmem/*.json")

    def load(config: str, split: str, required: bool = True) -> list | None:
        if directory is None:
            rows, lines, where = _hub_rows(hub_id, config, split, revision), None, f"{hub_id}/{config}/{split}"
        else:
            path = _local_file(directory, config, split)
            if path is None:
                if not required:
                    return None
                raise UnlearnError(f"MUSE split file {directory / config / (split + '.json')} not found (nor .jsonl); "
                                   f"data_dir must hold verbmem/forget.json and knowmem/{{forget_qa,forget_qa_icl,"
                                   f"retain_qa,retain_qa_icl}}.json")
            rows, lines = parse_rows(path)
            where = str(path)
        if not split.endswith("_icl") and limit is not None:
            rows, lines = rows[:limit], (lines[:limit] if lines else None)
        return _check(rows, config, where, lines)

    values = {attr: load(config, split) for (config, split), attr in FILES.items()}
    leak = None
    if privleak:
        leak = {split: load("privleak", split, required=directory is None) for split in PRIVLEAK_SPLITS}
        leak = {k: v for k, v in leak.items() if v is not None} or None
    return MuseData(**values, privleak=leak, name=f"muse_{corpus}")


RAW_SPLITS = ("forget", "retain1", "retain2", "holdout")


def load_muse_raw(corpus: str = "news", data_dir: str | Path | None = None, splits: Sequence[str] = ("forget", "retain1"),
                  *, hub_id: str | None = None, revision: str | None = None) -> dict[str, list[str]]:
    """MUSE's raw training texts ({split: [text]}): hub config ``raw`` (splits forget, retain1, retain2, holdout;
    rows ``{"text"}``) or ``<data_dir>/raw/<split>.json(l)`` (strings or ``{"text": ...}`` rows).

    Unlearning trains on these as pretraining-style text (`data.texts.pretraining_chunks`)."""
    if corpus not in MUSE_HUB_IDS:
        raise UnlearnError(f"unknown MUSE corpus {corpus!r}; valid: {', '.join(MUSE_HUB_IDS)}")
    out = {}
    for split in splits:
        if split not in RAW_SPLITS:
            raise UnlearnError(f"unknown MUSE raw split {split!r}; valid: {', '.join(RAW_SPLITS)}")
        if data_dir is None:
            hub = hub_id or MUSE_HUB_IDS[corpus]
            rows, lines, where = _hub_rows(hub, "raw", split, revision), None, f"{hub}/raw/{split}"
        else:
            path = _local_file(Path(data_dir).expanduser(), "raw", split)
            if path is None:
                raise UnlearnError(f"MUSE training texts {Path(data_dir) / 'raw' / (split + '.json')} not found (nor "
                                   ".jsonl); data_dir must hold raw/forget.json and raw/retain1.json (strings or "
                                   "{\"text\": ...} rows)")
            rows, lines = parse_rows(path)
            where = str(path)
        texts = _check(rows, "raw", where, lines)
        if not texts:
            raise UnlearnError(f"{where} holds no texts")
        out[split] = texts
    return out


def verbmem_from_texts(texts: Sequence[str], tokenizer: Any, prefix_tokens: int = 32,
                       continuation_tokens: int = 128) -> list[dict]:
    """{prompt, gt} items from raw texts: the first ``prefix_tokens`` tokens and the next ``continuation_tokens``
    (decoded back to text). Texts shorter than prefix_tokens + 1 tokens are skipped."""
    if prefix_tokens < 1 or continuation_tokens < 1:
        raise UnlearnError(f"prefix_tokens ({prefix_tokens}) and continuation_tokens ({continuation_tokens}) must be >= 1")
    items = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) <= prefix_tokens:
            continue
        items.append({"prompt": tokenizer.decode(ids[:prefix_tokens]),
                      "gt": tokenizer.decode(ids[prefix_tokens:prefix_tokens + continuation_tokens])})
    return items


def verbmem_prompts(tokenizer: Any, items: Sequence[dict]) -> list[list[int]]:
    """Token ids of each verbmem ``prompt`` (BOS included)."""
    if not items:
        raise UnlearnError("MUSE verbmem has no items; it needs at least one {prompt, gt} row")
    return [list(tokenizer(item["prompt"], add_special_tokens=True)["input_ids"]) for item in items]


def knowmem_prompts(tokenizer: Any, rows: Sequence[dict], icl: Sequence[dict] = (), fmt: Any = None) -> list[list[int]]:
    """Token ids of each knowmem question, with the ``icl`` examples before it in ``fmt`` (Question:/Answer:)."""
    if not rows:
        raise UnlearnError("MUSE knowmem split has no rows; it needs at least one {question, answer} row")
    fmt = fmt or TagFormat()
    few_shot = [(example["question"], example["answer"]) for example in icl]
    return [fmt.prompt_ids(tokenizer, row["question"], few_shot) for row in rows]


def verbmem_rouge(model: Any, tokenizer: Any, items: Sequence[dict], *, max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
                  batch_size: int = 8, progress: bool = False) -> tuple[float, dict[str, list]]:
    """(mean ROUGE-L F1, per-sample columns) of greedy continuations of each ``prompt`` against its ``gt``."""
    prompts = verbmem_prompts(tokenizer, items)
    generations = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, progress=progress)
    golds = [item["gt"] for item in items]
    f1 = rouge_scores(golds, generations)["rougeL_f1"]
    return float(np.mean(f1)), {"prompt": [i["prompt"] for i in items], "gt": golds,
                                "generation": generations, "rouge_l_f1": f1}


def knowmem_rouge(model: Any, tokenizer: Any, rows: Sequence[dict], icl: Sequence[dict] = (), *,
                  fmt: Any = None, max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, batch_size: int = 16,
                  stop_strings: Sequence[str] = KNOWMEM_STOP_STRINGS, progress: bool = False) -> tuple[float, dict[str, list]]:
    """(mean ROUGE-L F1, per-sample columns) of greedy answers to ``rows`` with ``icl`` examples in the prompt."""
    prompts = knowmem_prompts(tokenizer, rows, icl, fmt)
    generations = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  stop_strings=stop_strings, progress=progress)
    golds = [row["answer"] for row in rows]
    f1 = rouge_scores(golds, generations)["rougeL_f1"]
    return float(np.mean(f1)), {"question": [r["question"] for r in rows], "answer": golds,
                                "generation": generations, "rouge_l_f1": f1}


MUSE_METRICS = ("forget_verbmem_rouge", "forget_knowmem_rouge", "retain_knowmem_rouge")
MUSE_PRIVACY = ("mia_min_k", "privleak")
MUSE_ALIASES = {"forget_verbmem_ROUGE": "forget_verbmem_rouge", "forget_knowmem_ROUGE": "forget_knowmem_rouge",
                "retain_knowmem_ROUGE": "retain_knowmem_rouge"}


def plan_muse(ev, data: MuseData, *, fmt: Any = None, verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
              knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, retain_auc: float | None = None,
              metrics: Sequence[str] | None = None, k: float = 0.4):
    """Ask `ev` for the passes of the wanted MUSE metrics (default: the three ROUGE-L F1 metrics, plus
    mia_min_k and privleak when `data.privleak` has forget and holdout texts) and return the function that
    computes `MuseResult` afterwards. privleak is against `retain_auc` (the retain model's Min-K% AUC on
    the same texts), or 0.5 without it."""
    from unlearnkit.benchmarks.generation import Decoding
    from unlearnkit.data.formats import encode_text

    fmt = fmt or TagFormat()
    leak = bool(data.privleak and {"forget", "holdout"} <= set(data.privleak))
    wanted = list(MUSE_METRICS + (MUSE_PRIVACY if leak else ())) if metrics is None else list(metrics)
    if any(m in MUSE_PRIVACY for m in wanted) and not leak:
        raise UnlearnError("MUSE privacy metrics need privleak/forget.json and privleak/holdout.json in"
                           " data.data_dir (or the hub's privleak config)")
    batch = ev.batch_size or 16
    requests: dict[str, tuple] = {}
    if "forget_verbmem_rouge" in wanted:
        prompts = verbmem_prompts(ev.tokenizer, data.verbmem_forget)
        requests["forget_verbmem_rouge"] = ("verbmem_forget", data.verbmem_forget, ev.generation(
            prompts, Decoding(max_new_tokens=verbmem_max_new_tokens, batch_size=batch)))
    for metric, split, rows, icl in (("forget_knowmem_rouge", "knowmem_forget", data.knowmem_forget,
                                      data.knowmem_forget_icl),
                                     ("retain_knowmem_rouge", "knowmem_retain", data.knowmem_retain,
                                      data.knowmem_retain_icl)):
        if metric not in wanted:
            continue
        prompts = knowmem_prompts(ev.tokenizer, rows, icl, fmt)
        requests[metric] = (split, rows, ev.generation(prompts, Decoding(max_new_tokens=knowmem_max_new_tokens,
                                                                         batch_size=batch), KNOWMEM_STOP_STRINGS))
    stats = None
    if any(m in MUSE_PRIVACY for m in wanted):
        texts = [*data.privleak["forget"], *data.privleak["holdout"]]
        stats = ev.token_stats([encode_text(ev.tokenizer, t, max_length=512) for t in texts])

    def finish() -> MuseResult:
        from unlearnkit.benchmarks.privacy import privleak_reference
        from unlearnkit.metrics import mia

        metrics_out: dict[str, float | None] = {}
        per_sample: dict[str, dict[str, list]] = {}
        for metric, (split, rows, request) in requests.items():
            generations = request.get()
            gold_key, shown = ("gt", "prompt") if split == "verbmem_forget" else ("answer", "question")
            golds = [row[gold_key] for row in rows]
            f1 = rouge_scores(golds, generations)["rougeL_f1"]
            metrics_out[metric] = float(np.mean(f1))
            per_sample[split] = {shown: [row[shown] for row in rows], gold_key: golds, "generation": generations,
                                 "rouge_l_f1": f1}
        if stats is not None:
            scores = np.array([mia.min_k_score(s.logprobs, k) for s in stats.get()])
            n_forget = len(data.privleak["forget"])
            auc = mia.auc(scores[:n_forget], scores[n_forget:])
            metrics_out["mia_min_k"] = auc
            metrics_out["privleak"] = mia.privleak(auc, privleak_reference(retain_auc)["auc"])
        return MuseResult({m: metrics_out[m] for m in wanted}, per_sample, dict(ev.seconds))

    return finish


def muse_suite(model: Any, tokenizer: Any, data: MuseData, *, fmt: Any = None, batch_size: int = 16,
               verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS, knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS,
               privacy_fn: PrivacyFn | None = None, progress: bool = False) -> MuseResult:
    """forget_verbmem_rouge, forget_knowmem_rouge, retain_knowmem_rouge (+ privacy metrics).

    ``privacy_fn(model, tokenizer, data.privleak)`` — e.g. a wrapper of ``unlearnkit.benchmarks.privacy`` —
    is called when given and must return a mapping of metric name -> number (e.g. ``{"privleak": ...}``);
    its entries are merged into ``metrics``. ``fmt`` is the knowmem prompt format (default Question:/Answer:).
    """
    from unlearnkit.benchmarks.evaluator import Evaluator

    ev = Evaluator(model, tokenizer, batch_size=batch_size, progress=progress)
    finish = plan_muse(ev, data, fmt=fmt, verbmem_max_new_tokens=verbmem_max_new_tokens,
                       knowmem_max_new_tokens=knowmem_max_new_tokens, metrics=MUSE_METRICS)
    ev.run()
    result = finish()
    metrics, seconds = result.metrics, result.seconds
    if privacy_fn is not None:
        if not data.privleak or not {"forget", "holdout"} <= set(data.privleak):
            raise UnlearnError("privacy_fn needs the privleak forget and holdout texts, and this MUSE data has "
                               f"{sorted(data.privleak or {}) or 'none'}; add privleak/forget.json and privleak/holdout.json")
        started = time.perf_counter()
        extra = privacy_fn(model, tokenizer, data.privleak)
        if not isinstance(extra, Mapping):
            raise UnlearnError(f"privacy_fn must return a mapping of metric name -> number, got {type(extra).__name__}")
        metrics.update({str(k): (None if v is None else float(v)) for k, v in extra.items()})
        seconds["privleak"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return MuseResult(metrics, result.per_sample, seconds)
