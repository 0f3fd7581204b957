"""The tiny world in MUSE's folder layout, so ``data.benchmark=muse`` runs offline (``data.data_dir=world:tiny``).

MUSE's texts cannot be shipped (Books is copyrighted, News is BBC text), so the MUSE pipeline — raw-text
unlearning, verbmem, knowmem, privleak — is exercised on the world's fictitious authors instead. The
world's "corpus" is what its models were trained on: each fact as ``Question: q\nAnswer: a`` text.

- ``raw/forget``, ``raw/retain1``, ``raw/holdout``: those texts, one per fact;
- ``verbmem/forget``: each forget text split after ``Answer: `` (prompt → the answer as gt): verbatim
  memorization of the training text;
- ``knowmem/forget_qa`` / ``knowmem/retain_qa``: the facts asked with their PARAPHRASED questions (the
  knowledge, not the wording; retain: the first `RETAIN_QA` retain facts). The ``*_icl`` files are empty:
  the world's models were trained on single question/answer pairs and in-context examples only confuse
  them (the ICL path is tested on its own in tests/benchmarks/test_muse.py);
- ``privleak/{forget, holdout, retain}``: the texts of the forget, holdout (never trained) and retain facts.

The world's own models are the MUSE roles: ``world:target`` (trained on forget + retain) and
``world:retain`` (never saw the forget authors; privleak's reference via ``eval.retain_model``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearnkit.cache import build_lock
from unlearnkit.train.checkpoint import atomic_dir
from unlearnkit.logs import info

VIEW_VERSION = "1"
RETAIN_QA = 20


def muse_files(world: Any) -> dict[str, list]:
    """{"<config>/<split>": rows} of the MUSE view of ``world``."""
    from unlearnkit.data.formats import TagFormat

    fmt = TagFormat()  # the format the world's models were trained in

    def texts(rows: list[dict]) -> list[str]:
        return [fmt.prompt_text(r["question"]) + r["answer"] for r in rows]

    def paraphrased(rows: list[dict]) -> list[dict]:
        return [{"question": r.get("paraphrased_question") or r["question"], "answer": r["answer"]} for r in rows]

    forget, retain, holdout = list(world.forget), list(world.retain), list(world.holdout)
    return {
        "raw/forget": texts(forget),
        "raw/retain1": texts(retain),
        "raw/holdout": texts(holdout),
        "verbmem/forget": [{"prompt": fmt.prompt_text(r["question"]), "gt": r["answer"]} for r in forget],
        "knowmem/forget_qa": paraphrased(forget),
        "knowmem/forget_qa_icl": [],
        "knowmem/retain_qa": paraphrased(retain[:RETAIN_QA]),
        "knowmem/retain_qa_icl": [],
        "privleak/forget": texts(forget),
        "privleak/holdout": texts(holdout),
        "privleak/retain": texts(retain[:len(forget)]),
    }


def ensure_muse_view(art: Any, log=info) -> Path:
    """The MUSE-layout folder of a built world (written once into the world's cache folder)."""
    directory = Path(art.root) / f"muse-v{VIEW_VERSION}"
    if (directory / "privleak" / "retain.json").is_file():
        return directory
    with build_lock(f"{Path(art.root).name}-{directory.name}", Path(art.root).parent,
                    ready=(directory / "privleak" / "retain.json").is_file):
        if (directory / "privleak" / "retain.json").is_file():  # another process wrote it meanwhile
            return directory
        log(f"writing the tiny world in MUSE's layout to {directory}")
        files = muse_files(art.world)
        with atomic_dir(directory) as tmp:
            for name, rows in files.items():
                path = Path(tmp) / f"{name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rows, indent=1))
    return directory
