"""Harmful and benign prompt sources for the harmfulness benchmark (`load_prompts`).

Rows are ``{prompt, category, source}``; benign rows add ``answer``.

| source | where | rows |
|---|---|---|
| ``advbench`` | hub ``walledai/AdvBench`` (``prompt``) or a local ``harmful_behaviors.csv`` (``goal``) | 520 |
| ``hex_phi`` | a local folder of ``category_N.csv`` (gated hub ``LLM-Tuning-Safety/HEx-PHI``; no redistribution) | 300 public (330 upstream) |
| ``llm_lat`` | hub ``LLM-LAT/harmful-dataset`` (``prompt``) or a local parquet/json/csv file | ~4.9k |
| ``pku_saferlhf`` | hub ``PKU-Alignment/PKU-SafeRLHF`` or a local JSON; prompts with an unsafe response | 930 in the stored subset |
| ``truthfulqa`` | local ``TruthfulQA.csv`` or hub ``truthfulqa/truthful_qa`` (benign; answer = Best Answer) | 790 / 817 |
| ``safety_world:<split>`` | the tiny aligned world (`world.safety_data`): harvest, probe, benign_train, benign_test, general | |
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unlearnkit.data.files import parse_rows, read_text
from unlearnkit.errors import UnlearnError
from unlearnkit.manifest import record_read
from unlearnkit.registry import did_you_mean
from unlearnkit.world.safety_data import SPLITS as SAFETY_SPLITS

HUB_IDS = {"advbench": "walledai/AdvBench", "hex_phi": "LLM-Tuning-Safety/HEx-PHI",
           "llm_lat": "LLM-LAT/harmful-dataset", "pku_saferlhf": "PKU-Alignment/PKU-SafeRLHF",
           "truthfulqa": "truthfulqa/truthful_qa"}
HEX_PHI_CATEGORIES = {
    1: "illegal_activity", 2: "child_abuse_content", 3: "hate_harass_violence", 4: "malware", 5: "physical_harm",
    6: "economic_harm", 7: "fraud_deception", 8: "adult_content", 9: "political_campaigning",
    10: "privacy_violation_activity", 11: "tailored_financial_advice",
}  # fmt: skip
"""HEx-PHI file number → category (the dataset card's order; category 2 was withdrawn in 2024)."""
SAFETY_WORLD_PREFIX = "safety_world:"


def _row(prompt: str, source: str, category: str | None = None, **extra: Any) -> dict:
    return {"prompt": prompt.strip(), "category": category, "source": source, **extra}


def _local(path: str | Path, source: str, default_file: str | None = None) -> Path:
    """An existing local path; a folder resolves to ``default_file`` inside it when given."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise UnlearnError(f"{source}: local path {resolved} does not exist; point it at the downloaded files"
                           f" (or leave the path unset to load {HUB_IDS.get(source, 'it')} from the hub)")
    if resolved.is_dir() and default_file is not None:
        inner = resolved / default_file
        if not inner.is_file():
            raise UnlearnError(f"{source}: folder {resolved} has no {default_file}; give the file itself or its folder")
        return inner
    return resolved


def _hub(source: str, *args: str | None, split: str, revision: str | None) -> list[dict]:
    """Rows of a hub dataset; any failure (offline, gated, renamed) becomes one UnlearnError with the fix."""
    try:
        import datasets

        rows = datasets.load_dataset(HUB_IDS[source], *[a for a in args if a], split=split,
                                     revision=revision).to_list()
        record_read(hub="/".join([HUB_IDS[source], *[a for a in args if a], split]), revision=revision, rows=rows)
        return rows
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        raise UnlearnError(f"could not load {source} from the Hugging Face hub ({HUB_IDS[source]}):"
                           f" {type(err).__name__}: {reason}; the hub may be unreachable or the dataset gated:"
                           f" download it and pass a local path instead") from err


def _csv_records(path: Path, reader: Callable = csv.reader) -> list:
    """Records of a local CSV file (a BOM is dropped: TruthfulQA v1 starts with one); errors name the file."""
    text = read_text(path, "prompt file", encoding="utf-8-sig")
    try:
        return list(reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise UnlearnError(f"{path}: not a readable CSV file ({err}); fix the file or point at another") from None


def _read_csv(path: Path) -> list[dict]:
    return _csv_records(path, csv.DictReader)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path, "prompt file"))
    except json.JSONDecodeError as err:
        raise UnlearnError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); fix the file or point at another") from None


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else ""  # a short CSV row has None for its missing columns


def _column(rows: list[dict], names: Sequence[str], where: str) -> str:
    if not rows:
        return names[0]  # nothing to read; load_prompts reports the empty source
    present = set(rows[0])
    for name in names:
        if name in present:
            return name
    raise UnlearnError(f"{where}: no column {' or '.join(repr(n) for n in names)} (has {', '.join(sorted(present))})")


def load_advbench(path: str | Path | None = None, revision: str | None = None) -> list[dict]:
    """AdvBench harmful behaviours: a local CSV (``goal`` or ``prompt`` column; a folder means its
    ``harmful_behaviors.csv``), or the hub mirror ``walledai/AdvBench`` (``prompt``)."""
    if path is None:
        rows = _hub("advbench", split="train", revision=revision)
    else:
        file = _local(path, "advbench", "harmful_behaviors.csv")
        rows = _read_csv(file)
    key = _column(rows, ("prompt", "goal"), f"advbench {path or HUB_IDS['advbench']}")
    return [_row(_text(r, key), "advbench") for r in rows if _text(r, key).strip()]


def _is_int(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _hex_phi_number(file: Path) -> int | None:
    match = re.fullmatch(r"category_(\d+)\.csv", file.name)
    return int(match.group(1)) if match else None


def _hex_phi_file_rows(file: Path, number: int) -> list[dict]:
    category = HEX_PHI_CATEGORIES.get(number, f"category_{number}")
    lines = [row[0] for row in _csv_records(file) if row and row[0].strip()]
    if lines and lines[0].strip().lower() in ("prompt", "text", "instruction", "question"):
        lines = lines[1:]  # a header row, in copies re-saved with one
    return [_row(text, "hex_phi", category, category_id=number) for text in lines]


def load_hex_phi(path: str | Path | None = None, revision: str | None = None) -> list[dict]:
    """HEx-PHI: a local folder of ``category_N.csv`` files (one instruction per line), or USA's JSON
    (``[{category: int, text}]``). Without a path the gated hub repo is downloaded (needs approved access)."""
    if path is None:
        try:
            from huggingface_hub import snapshot_download

            path = snapshot_download(HUB_IDS["hex_phi"], repo_type="dataset", revision=revision,
                                     allow_patterns=["category_*.csv"])
        except Exception as err:
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            raise UnlearnError(f"could not download HEx-PHI ({HUB_IDS['hex_phi']}): {type(err).__name__}: {reason};"
                               " it is gated: accept its licence on the hub and log in, or pass the local folder"
                               " holding category_1.csv ... category_11.csv") from err
    resolved = _local(path, "hex_phi")
    if resolved.is_file():
        items = _read_json(resolved)
        if not isinstance(items, list) or not all(isinstance(i, dict) and {"category", "text"} <= set(i)
                                                  and isinstance(i["text"], str) and _is_int(i["category"])
                                                  for i in items):
            raise UnlearnError(f"hex_phi: {resolved} is not a JSON list of {{category, text}} items (USA's HEx-PHI.json);"
                               " pass that file or the folder of category_N.csv files")
        return [_row(item["text"], "hex_phi", HEX_PHI_CATEGORIES.get(int(item["category"]), str(item["category"])),
                     category_id=int(item["category"])) for item in items]
    files = sorted((n, f) for f in resolved.glob("category_*.csv") if (n := _hex_phi_number(f)) is not None)
    if not files:
        raise UnlearnError(f"hex_phi: folder {resolved} holds no category_N.csv files; point it at the HEx-PHI download")
    return [row for number, file in files for row in _hex_phi_file_rows(file, number)]


def load_llm_lat(path: str | Path | None = None, revision: str | None = None) -> list[dict]:
    """LLM-LAT harmful-dataset prompts (hub ``LLM-LAT/harmful-dataset``, split train), or a local
    parquet / json / jsonl / csv file with a ``prompt`` column."""
    if path is None:
        rows = _hub("llm_lat", split="train", revision=revision)
    else:
        file = _local(path, "llm_lat")
        builder = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}.get(file.suffix)
        if builder is None:
            raise UnlearnError(f"llm_lat: cannot read {file}; give a .parquet, .json, .jsonl or .csv file")
        import datasets

        try:
            rows = datasets.load_dataset(builder, data_files=str(file), split="train").to_list()
            record_read(file)
        except Exception as err:  # the json / csv / parquet builder could not read the user's file
            reason = (str(err).strip().splitlines() or [""])[0][:200]
            raise UnlearnError(f"llm_lat: cannot read {file} as {builder} ({type(err).__name__}: {reason});"
                               " fix the file or point at another") from None
    key = _column(rows, ("prompt",), f"llm_lat {path or HUB_IDS['llm_lat']}")
    return [_row(_text(r, key), "llm_lat") for r in rows if _text(r, key).strip()]


def _unique(rows: list[dict]) -> list[dict]:
    seen: set[str] = set()
    return [r for r in rows if not (r["prompt"] in seen or seen.add(r["prompt"]))]


def load_pku_saferlhf(path: str | Path | None = None, revision: str | None = None) -> list[dict]:
    """PKU-SafeRLHF prompts that have at least one unsafe response (distinct, in first-seen order).

    Local: the derived subset (``[{prompt, response: [safe, unsafe]}]``, every prompt qualifies) or rows
    in the hub schema (``is_response_0_safe`` / ``is_response_1_safe``), as .json or .jsonl; a folder means
    its single such file. Hub: ``PKU-Alignment/PKU-SafeRLHF`` split test (pin a revision: the schema changed).
    """
    if path is None:
        items = _hub("pku_saferlhf", split="test", revision=revision)
    else:
        file = _local(path, "pku_saferlhf")
        if file.is_dir():
            candidates = sorted([*file.glob("*.json"), *file.glob("*.jsonl")])
            if len(candidates) != 1:
                raise UnlearnError(f"pku_saferlhf: folder {file} holds {len(candidates)} .json/.jsonl files;"
                                   " pass the file itself")
            file = candidates[0]
        items = _read_json(file) if file.suffix == ".json" else parse_rows(file)[0]
    rows = []
    for item in items if isinstance(items, list) else [items]:
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise UnlearnError(f"pku_saferlhf {path or HUB_IDS['pku_saferlhf']}: every row needs a 'prompt' string"
                               f" (got {item!r:.80})")
        if "is_response_0_safe" in item:
            unsafe = not (item["is_response_0_safe"] and item.get("is_response_1_safe", True))
        elif "response" in item:
            unsafe = True  # the derived subset keeps only pairs with one unsafe response (response[1])
        else:
            raise UnlearnError(f"pku_saferlhf {path or HUB_IDS['pku_saferlhf']}: rows need is_response_0/1_safe or"
                               f" a [safe, unsafe] 'response' list (got keys {', '.join(sorted(item))})")
        if unsafe:
            rows.append(_row(item["prompt"], "pku_saferlhf"))
    return _unique(rows)


def load_truthfulqa(path: str | Path | None = None, revision: str | None = None) -> list[dict]:
    """TruthfulQA questions as *benign* prompts, ``answer`` = Best Answer: a local ``TruthfulQA.csv`` (2025 or
    v1; a folder means its TruthfulQA.csv) or the hub's ``truthfulqa/truthful_qa`` generation config."""
    if path is None:
        items = _hub("truthfulqa", "generation", split="validation", revision=revision)
        return [_row(r["question"], "truthfulqa", r.get("category"), answer=r["best_answer"]) for r in items]
    rows = _read_csv(_local(path, "truthfulqa", "TruthfulQA.csv"))
    _column(rows, ("Question",), f"truthfulqa {path}")
    return [_row(_text(r, "Question"), "truthfulqa", r.get("Category"), answer=_text(r, "Best Answer"))
            for r in rows if _text(r, "Question").strip()]


def safety_world_prompts(split: str, size: str = "default", seed: int = 0) -> list[dict]:
    """A split of the tiny aligned world's data (generated, no build needed): harvest | probe | benign_train |
    benign_test | general | forget | retain (the last two in TOFU's schema, with ``prompt`` = question)."""
    from unlearnkit.world.safety_data import safety_spec
    from unlearnkit.world.safety_data import generate_safety_world

    rows = generate_safety_world(safety_spec(size, seed)[0]).split(split)
    if split in ("forget", "retain"):
        return [_row(r["question"], "safety_world", None, answer=r["answer"]) for r in rows]
    return [dict(r) for r in rows]


LOADERS: dict[str, Callable[..., list[dict]]] = {
    "advbench": load_advbench, "hex_phi": load_hex_phi, "llm_lat": load_llm_lat,
    "pku_saferlhf": load_pku_saferlhf, "truthfulqa": load_truthfulqa,
}


def prompt_sources() -> list[str]:
    return [*LOADERS, *(SAFETY_WORLD_PREFIX + s for s in SAFETY_SPLITS)]


def load_prompts(source: str, path: str | Path | None = None, *, limit: int | None = None,
                 revision: str | None = None, size: str = "default", seed: int = 0) -> list[dict]:
    """Rows ``{prompt, category, source}`` (benign sources add ``answer``) of a named source, from ``path``
    when given, else the hub; ``limit`` keeps the first N (papers often use AdvBench's first 50 or 100).
    ``size``/``seed`` select the safety world (``safety_world:<split>``)."""
    if source.startswith(SAFETY_WORLD_PREFIX) and source[len(SAFETY_WORLD_PREFIX):] in SAFETY_SPLITS:
        rows = safety_world_prompts(source[len(SAFETY_WORLD_PREFIX):], size, seed)
    elif source in LOADERS:
        rows = LOADERS[source](path, revision)
    else:
        raise UnlearnError(f"unknown prompt source '{source}';{did_you_mean(source, prompt_sources())}"
                           f" valid: {', '.join(prompt_sources())}")
    if limit is not None:
        if limit < 1:
            raise UnlearnError(f"limit={limit}: must be a positive number of prompts (or unset for all)")
        rows = rows[:limit]
    if not rows:
        raise UnlearnError(f"prompt source '{source}' gave no prompts{f' from {path}' if path else ''}; check the file")
    return rows
