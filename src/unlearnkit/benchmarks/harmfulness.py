"""Harmfulness benchmark: does the model comply with harmful requests, and does it still help with benign ones?

The protocol of "Refusal Is Not an Option" (USA; specs/methods.md §2.3, §6.1): wrap each harmful prompt
in the target's chat template (``apply_chat_template(..., add_generation_prompt=True)``, here
`data.formats.ChatFormat`), generate a response, let a judge label each (prompt, response) pair, and report

    harmful_rate = #(verdict harmful) / #(parsed verdicts)

overall, per judge category (Llama-Guard-3's S1–S14; the keyword judge's single "refusal_absent") and per
prompt category (HEx-PHI's 11 files, the safety world's categories). Unparsed verdicts are counted apart,
never guessed (pitfall 8). The decoding is recorded with every result: greedy by default, sampling with a
seed on request, or the model's own generation config as the seed code did (pitfall 7). Which prompt the
judge sees (raw instruction or templated, pitfall 6) is the judge's field and is recorded with its config.

`benign_utility` is the other side: on benign prompts (TruthfulQA, the safety world's benign split), the
share *answered* (non-empty and not a refusal per the keyword judge) and the mean ROUGE-L recall against
reference answers where they exist. `harmfulness_suite` runs both and returns the flat numbers a report needs.

Prompt sources are loaded by `benchmarks.harmful_prompts` (`load_prompts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from unlearnkit.benchmarks.harmful_prompts import (  # noqa: F401  (re-exported: the loaders' public home was here)
    HEX_PHI_CATEGORIES, HUB_IDS, LOADERS, _row, load_advbench, load_hex_phi, load_llm_lat, load_pku_saferlhf,
    load_prompts, load_truthfulqa, prompt_sources, safety_world_prompts)
from unlearnkit.benchmarks.generation import Decoding, generate
from unlearnkit.errors import UnlearnError
from unlearnkit.judges.base import Judge, harmful_rate
from unlearnkit.registry import JUDGES


# ------------------------------------------------------------------------------------------- evaluation

def as_rows(prompts: str | Sequence[dict | str], **load_options: Any) -> list[dict]:
    """Prompt rows from a source name (`load_prompts`), row dicts (need ``prompt``) or bare strings."""
    if isinstance(prompts, str):
        return load_prompts(prompts, **load_options)
    rows = []
    for index, item in enumerate(prompts):
        if isinstance(item, str):
            rows.append(_row(item, "given"))
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            rows.append({"category": None, "source": "given", **item})
        else:
            raise UnlearnError(f"prompt {index} is {type(item).__name__}; give strings or dicts with a 'prompt' string")
    return rows


def build_judge(judge: str | dict | Judge | None) -> Judge:
    """A judge from its registry name (`unlearn ls judges`), ``{name: ..., field: value}``, or an instance."""
    if judge is None:
        judge = "keyword"
    if isinstance(judge, Judge):
        return judge
    if isinstance(judge, dict):
        options = dict(judge)
        if "name" not in options:
            from unlearnkit.secrets import redact_config

            raise UnlearnError(f"judge settings {redact_config(options)} have no 'name'; valid names:"
                               f" {', '.join(JUDGES.names())}")
        return JUDGES.build(options.pop("name"), **options)
    return JUDGES.build(judge)


def judge_label(judge: Judge) -> str:
    return getattr(judge, "registry_name", type(judge).__name__)


def judge_config(judge: Judge) -> dict:
    """The judge's scalar settings (model id, prompt_field, ...) for the record; lists such as phrases are left out."""
    if not is_dataclass(judge):
        return {}
    from unlearnkit.secrets import redact_config

    values = {f.name: getattr(judge, f.name) for f in fields(judge)}
    return redact_config({k: v for k, v in values.items() if v is None or isinstance(v, (str, int, float, bool))})


def _format(fmt: Any):
    from unlearnkit.data.formats import get_format

    if fmt is None:
        return "chat", get_format("chat")
    if isinstance(fmt, str):
        return fmt, get_format(fmt)
    return repr(fmt), fmt


def respond(model: Any, tokenizer: Any, rows: list[dict], decoding: Decoding, fmt: Any,
            progress: bool = False) -> list[str]:
    """The model's response to each row's prompt, rendered by ``fmt`` (the chat template by default)."""
    ids = [fmt.prompt_ids(tokenizer, row["prompt"]) for row in rows]
    return generate(model, tokenizer, ids, decoding, progress=progress)


def evaluate_harmfulness(model: Any, tokenizer: Any, prompts: str | Sequence[dict | str],
                         judge: str | dict | Judge | None = "keyword", decoding: Decoding | dict | None = None,
                         fmt: Any = None, *, progress: bool = False) -> dict:
    """Generate a response to every harmful prompt and judge it.

    Returns ``harmful_rate`` (harmful / parsed; None when nothing parsed), ``per_category`` (judge
    categories, share of parsed items), ``per_prompt_category`` (harmful rate within each prompt category),
    ``n``, ``n_parsed``, ``n_harmful``, ``n_unparsed``, ``decoding`` (the settings that applied), ``judge``
    (its name), ``judge_config``, ``format`` and ``samples``: one ``{prompt, category, source, response,
    harmful, categories, parsed}`` per prompt, in order.
    """
    rows = as_rows(prompts)
    judge = build_judge(judge)
    decoding = Decoding.of(decoding).resolved(model)
    fmt_name, fmt = _format(fmt)
    responses = respond(model, tokenizer, rows, decoding, fmt, progress)
    verdicts = judge.score([row["prompt"] for row in rows], responses)
    if len(verdicts) != len(rows):
        raise ValueError(f"judge {judge_label(judge)} returned {len(verdicts)} verdicts for {len(rows)} prompts")
    samples = [{"prompt": row["prompt"], "category": row.get("category"), "source": row.get("source"),
                "response": response, "harmful": verdict.harmful, "categories": list(verdict.categories),
                "parsed": verdict.parsed and verdict.harmful is not None}
               for row, response, verdict in zip(rows, responses, verdicts)]
    summary = harmful_rate(verdicts)
    return {**summary, "per_prompt_category": per_prompt_category(samples), "decoding": decoding.to_dict(),
            "judge": judge_label(judge), "judge_config": judge_config(judge), "format": fmt_name, "samples": samples}


def per_prompt_category(samples: Sequence[dict]) -> dict[str, float]:
    """Harmful rate among the parsed samples of each prompt category (samples without one are skipped)."""
    counts: dict[str, list[int]] = {}
    for sample in samples:
        if sample.get("category") is None or not sample["parsed"]:
            continue
        harmful_total = counts.setdefault(str(sample["category"]), [0, 0])
        harmful_total[0] += bool(sample["harmful"])
        harmful_total[1] += 1
    return {category: harmful / total for category, (harmful, total) in sorted(counts.items())}


def benign_utility(model: Any, tokenizer: Any, prompts: str | Sequence[dict | str],
                   decoding: Decoding | dict | None = None, fmt: Any = None, *, progress: bool = False) -> dict:
    """On benign prompts: ``benign_answered`` = share of responses that are non-empty and not a refusal
    (keyword judge's phrases), and ``benign_rouge`` = mean ROUGE-L recall against the rows' ``answer``
    (None when no row has one), with ``n``, ``n_with_reference``, ``decoding`` and per-sample ``samples``."""
    from unlearnkit.judges.keyword import KeywordJudge
    from unlearnkit.metrics.text import rouge

    rows = as_rows(prompts)
    decoding = Decoding.of(decoding).resolved(model)
    fmt_name, fmt = _format(fmt)
    responses = respond(model, tokenizer, rows, decoding, fmt, progress)
    refusals = KeywordJudge()
    samples = []
    for row, response in zip(rows, responses):
        answered = bool(response.strip()) and not refusals.is_refusal(response)
        reference = row.get("answer") or None
        score = rouge(reference, response)["rougeL_recall"] if reference else None
        samples.append({"prompt": row["prompt"], "category": row.get("category"), "source": row.get("source"),
                        "response": response, "answered": answered, "reference": reference, "rougeL_recall": score})
    scored = [s["rougeL_recall"] for s in samples if s["rougeL_recall"] is not None]
    return {"benign_answered": sum(s["answered"] for s in samples) / len(samples) if samples else None,
            "benign_rouge": sum(scored) / len(scored) if scored else None, "n": len(samples),
            "n_with_reference": len(scored), "decoding": decoding.to_dict(), "format": fmt_name, "samples": samples}


def harmfulness_suite(model: Any, tokenizer: Any, prompts: str | Sequence[dict | str],
                      benign: str | Sequence[dict | str] | None = None,
                      judge_name: str | dict | Judge | None = "keyword", decoding: Decoding | dict | None = None,
                      fmt: Any = None, *, progress: bool = False) -> dict:
    """Harmful rate on ``prompts`` and benign utility on ``benign`` (each a source name, rows or strings).

    Returns ``harmful_rate``, ``per_category``, ``per_prompt_category``, ``n_harmful_prompts``, ``n_unparsed``,
    ``benign_answered``, ``benign_rouge`` (None without benign prompts), ``n_benign``, ``judge``,
    ``judge_config``, ``decoding``, ``format``, ``harmful_samples`` and ``benign_samples``.
    """
    harmful = evaluate_harmfulness(model, tokenizer, prompts, judge_name, decoding, fmt, progress=progress)
    result = {"harmful_rate": harmful["harmful_rate"], "per_category": harmful["per_category"],
              "per_prompt_category": harmful["per_prompt_category"], "n_harmful_prompts": harmful["n"],
              "n_unparsed": harmful["n_unparsed"], "benign_answered": None, "benign_rouge": None, "n_benign": 0,
              "judge": harmful["judge"], "judge_config": harmful["judge_config"], "decoding": harmful["decoding"],
              "format": harmful["format"], "harmful_samples": harmful["samples"], "benign_samples": []}
    if benign is not None:
        utility = benign_utility(model, tokenizer, benign, decoding, fmt, progress=progress)
        result.update(benign_answered=utility["benign_answered"], benign_rouge=utility["benign_rouge"],
                      n_benign=utility["n"], benign_samples=utility["samples"])
    return result
