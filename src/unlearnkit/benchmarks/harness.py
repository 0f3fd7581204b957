"""lm-evaluation-harness as an optional second scorer for WMDP / MMLU (``pip install "unlearnkit[lm-eval]"``).

`evaluate_with_lm_eval` hands an in-memory model to lm-eval's ``HFLM`` and runs ``lm_eval.simple_evaluate``,
so batching, prompt building, truncation and metrics are lm-eval's own. Honoured settings:

- ``batch_size``: given to ``HFLM`` (which does the batching; ``"auto"`` works) and to ``simple_evaluate``.
  lm-eval batches unique contexts: four one-token options of one question are one row of a batch.
- ``num_fewshot``: None keeps each task's default (0 for ``wmdp_*`` and ``mmlu_*``).
- ``limit``: items per task (an int) or a fraction of each task (a float below 1).
- ``add_bos_token``: lm-eval's default False; unlearnkit's own scorer adds BOS unless
  ``MultipleChoiceFormat(add_special_tokens=False)``.

Offline use: ``local={task name: rows}`` keeps the REGISTERED task's config (prompt template, choices,
description, metric) and only points its dataset at the given rows, written as JSON Lines to a temporary
folder and read with ``datasets``' ``json`` builder (its cache in that folder, too). `local_tasks` builds that
mapping from a folder of WMDP or MMLU files (`wmdp.load_wmdp` / `wmdp.load_mmlu`), so the shared WMDP files
run through lm-eval unchanged with no hub access.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnError


def import_lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager  # noqa: F401  (fails early on a broken install)
    except ImportError as err:
        raise UnlearnError(
            "the lm_eval backend needs lm-evaluation-harness, which is not installed: run `pip install lm-eval` "
            "(or `pip install \"unlearnkit[lm-eval]\"`; or use the built-in scorer: --backend unlearnkit)"
        ) from err
    return lm_eval


@functools.lru_cache(maxsize=1)
def task_manager() -> Any:
    """lm-eval's index of registered tasks (it reads every task YAML: ~5 s, so built once per process)."""
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager()


def local_tasks(benchmark: str, data_dir: str | Path, names: Sequence[str] | None = None, *,
                limit: int | None = None) -> dict[str, list[dict]]:
    """{lm-eval task name: rows} from local files: ``wmdp_<subset>`` (default bio, cyber) or ``mmlu_<subject>``
    (default: every subject found in ``data_dir``)."""
    from unlearnkit.benchmarks.wmdp import load_mmlu, load_wmdp

    if benchmark == "wmdp":
        return {f"wmdp_{k}": v for k, v in load_wmdp(names or ("bio", "cyber"), data_dir, limit=limit).items()}
    if benchmark == "mmlu":
        return {f"mmlu_{k}": v for k, v in load_mmlu(names, data_dir, limit=limit).items()}
    raise UnlearnError(f"local lm-eval tasks exist for wmdp and mmlu, not {benchmark!r}")


def task_configs(local: Mapping[str, Sequence[dict]], directory: Path, task_manager: Any) -> list[dict]:
    """The registered config of each task in ``local`` with its dataset replaced by the given rows."""
    from lm_eval.tasks._yaml_loader import load_yaml

    configs = []
    for name, rows in local.items():
        entry = task_manager.task_index.get(name)
        if entry is None or entry.yaml_path is None:
            known = [t for t in task_manager.all_subtasks if t.startswith(name.split("_")[0])][:8]
            raise UnlearnError(f"lm-eval has no task {name!r} to take a prompt template from; similar: "
                               f"{', '.join(known) or 'none'} (`lm_eval ls tasks` lists them)")
        if not rows:
            raise UnlearnError(f"local rows for lm-eval task {name!r} are empty; give at least one item")
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows))
        config = dict(load_yaml(entry.yaml_path, resolve_func=True))
        config.update(task=name, dataset_path="json", dataset_name=None, test_split="test",
                      dataset_kwargs={"data_files": {"test": str(path)}, "cache_dir": str(directory / "cache")})
        if config.get("fewshot_split") not in (None, "test"):
            config["fewshot_split"] = "test"  # only a test split exists locally; lm-eval skips the item itself
        configs.append(config)
    return configs


def evaluate_with_lm_eval(
    model: Any, tokenizer: Any, tasks: Sequence[str] = ("wmdp_bio", "wmdp_cyber", "mmlu"), *,
    local: Mapping[str, Sequence[dict]] | None = None, num_fewshot: int | None = None,
    batch_size: int | str = 32, limit: int | float | None = None, add_bos_token: bool = False,
) -> dict:
    """Run lm-eval ``tasks`` (hub datasets) and/or ``local`` tasks (rows given here) on an in-memory model.

    Returns the shape of `wmdp.evaluate_multiple_choice`: ``accuracy`` (item-weighted mean of lm-eval's
    ``acc,none`` over leaf tasks), ``n``, ``per_subset`` ({task: accuracy, accuracy_norm, n}), ``per_sample``
    ({task: {answer, prediction, correct, loglikelihoods}} from lm-eval's logged samples), ``settings``.
    """
    lm_eval = import_lm_eval()
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=add_bos_token)
    manager = task_manager()
    with tempfile.TemporaryDirectory(prefix="unlearnkit-lm-eval-") as tmp:
        specs: list[Any] = list(tasks) + task_configs(local or {}, Path(tmp), manager)
        if not specs:
            raise UnlearnError("evaluate_with_lm_eval got no tasks: pass task names or local={task: rows}")
        output = lm_eval.simple_evaluate(model=lm, tasks=specs, num_fewshot=num_fewshot, batch_size=batch_size,
                                         limit=limit, log_samples=True, task_manager=manager)
    samples = output.get("samples", {})
    per_subset, per_sample = {}, {}
    for task, values in output["results"].items():
        logged = samples.get(task, [])
        if not logged or values.get("acc,none") is None:
            continue  # a group's aggregate: its leaves carry the items
        per_subset[task] = {"accuracy": values["acc,none"], "accuracy_norm": values.get("acc_norm,none"), "n": len(logged)}
        lls = [[float(r[0]) for r in s["filtered_resps"]] for s in logged]
        predictions = [max(range(len(v)), key=v.__getitem__) for v in lls]
        answers = [int(s["target"]) for s in logged]
        per_sample[task] = {"answer": answers, "prediction": predictions, "loglikelihoods": lls,
                            "correct": [p == a for p, a in zip(predictions, answers)]}
    total = sum(v["n"] for v in per_subset.values())
    accuracy = sum(v["accuracy"] * v["n"] for v in per_subset.values()) / total if total else float("nan")
    return {"accuracy": accuracy, "accuracy_norm": None, "n": total, "per_subset": per_subset, "per_sample": per_sample,
            "settings": {"backend": "lm_eval", "lm_eval_version": getattr(lm_eval, "__version__", None),
                         "tasks": list(tasks) + list(local or {}), "num_fewshot": num_fewshot,
                         "batch_size": batch_size, "limit": limit, "add_bos_token": add_bos_token},
            "seconds": time.perf_counter() - started}
