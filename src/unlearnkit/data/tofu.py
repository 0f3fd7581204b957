"""TOFU loader: the fictitious-author QA benchmark of Maini et al. (2024), "TOFU: A Task of
Fictitious Unlearning for LLMs" (Hugging Face dataset ``locuslab/TOFU``, MIT licence).

Splits come either from a local folder of TOFU files (``--data-dir``; the offline path, used by the
tests) or from the hub through ``datasets.load_dataset``. TOFU's ``*.json`` files are JSON Lines
despite the suffix, so this module parses them line by line (a real JSON array file and ``.jsonl``
are accepted too) and reports bad data as ``file:line`` instead of a deep traceback. Every row is
checked for the keys its split kind needs, so a wrong file fails here and not mid-evaluation.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields
from pathlib import Path

from unlearnkit.data.files import blank_field, describe_blank, parse_rows, read_text, row_label
from unlearnkit.errors import UnlearnError
from unlearnkit.manifest import record_read

TOFU_HUB_ID = "locuslab/TOFU"

# forget split -> (full retain split for training, holdout split of the same size)
FORGET_SPLITS: dict[str, tuple[str, str]] = {
    "forget01": ("retain99", "holdout01"),
    "forget05": ("retain95", "holdout05"),
    "forget10": ("retain90", "holdout10"),
}

_QA_KEYS = ("question", "answer")
_PARAPHRASED_KEYS = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question")
_PERTURBED_KEYS = ("question", "answer", "perturbed_answer")
_CHOICE_KEYS = ("question", "option1", "option2", "option3", "option4", "answer")
_NOT_SPLITS = {"idontknow"}  # plain-text file living next to the splits
_TEXT_KEYS = ("question", "answer", "paraphrased_answer", "paraphrased_question")  # must not be empty

# Our own wording; used by the IDK baseline when no idontknow file is given, so nothing needs a download.
BUILTIN_IDK_ANSWERS: tuple[str, ...] = (
    "I'm not sure about that.", "I don't know the answer to that.", "I have no information on that.",
    "That is something I can't answer.", "I'm afraid I don't know.", "I can't say for certain.",
    "I don't have any details about that.", "That's not something I know about.",
    "I can't give you an answer on that one.", "I have no knowledge of that.", "Sorry, I don't know.",
    "I couldn't tell you.", "I'm not familiar with that.", "That question is outside what I know.",
    "I don't have an answer for that.", "I really have no idea.", "Unfortunately, I don't know that.",
    "I can't recall anything about that.", "I don't have enough information to answer.",
    "That's unknown to me.",
)


def required_keys(name: str) -> tuple[str, ...]:
    """Keys every row of split ``name`` must have; unknown names fall back to question/answer."""
    if name in ("real_authors", "world_facts"):
        return _CHOICE_KEYS
    if name in ("real_authors_perturbed", "world_facts_perturbed"):
        return _PERTURBED_KEYS
    if name.endswith("_perturbed"):  # forgetXX_perturbed, retain_perturbed
        return _PARAPHRASED_KEYS
    return _QA_KEYS


def _did_you_mean(name: str, choices: list[str]) -> str | None:
    """The closest valid name; digits are zero-padded first ('forget1' ties 'forget10' in difflib)."""
    padded = re.sub(r"\d+", lambda m: f"{int(m.group()):02d}", name.strip().lower())
    if padded in choices:
        return padded
    close = difflib.get_close_matches(padded, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _split_file(name: str, directory: Path) -> Path | None:
    """``<directory>/<name>.json`` (TOFU's own naming) or ``<name>.jsonl``, whichever exists."""
    return next((p for p in (directory / f"{name}.json", directory / f"{name}.jsonl") if p.is_file()), None)


def _find_split_file(name: str, directory: Path) -> Path:
    """The split's file; a missing one is an error listing the splits that are there."""
    if not directory.is_dir():
        raise UnlearnError(
            f"TOFU data directory {directory} does not exist; pass --data-dir (or data.data_dir= in a recipe) pointing at a folder "
            f"with TOFU's split files (forget10_perturbed.json, retain_perturbed.json, ...)"
        )
    if (path := _split_file(name, directory)) is not None:
        return path
    stems = {p.stem for p in directory.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl")}
    present = sorted(stems - _NOT_SPLITS)
    hint = _did_you_mean(name, present)
    raise UnlearnError(
        f"TOFU split {name!r} not found in {directory} (looked for {name}.json and {name}.jsonl); "
        + (f"did you mean {hint!r}? " if hint else "")
        + f"present: {', '.join(present) or 'no split files'}; "
        f"pass --data-dir (or data.data_dir= in a recipe) pointing at a folder that holds {name}.json"
    )


def _check_rows(name: str, rows: list, lines: list[int | None], where: str) -> list[dict]:
    """Fail on an empty split, non-object rows, missing keys, an empty question or answer, or a
    ``perturbed_answer`` that is not a list of texts."""
    if not rows:
        raise UnlearnError(f"{where} has no rows; a TOFU split needs at least one question")
    need = required_keys(name)
    for index, (row, line) in enumerate(zip(rows, lines), start=1):
        at = f"{where}:{line}" if line is not None else where
        if not isinstance(row, dict):
            raise UnlearnError(f"{at}: row {index} is a {type(row).__name__}, not a JSON object")
        missing = [key for key in need if key not in row]
        if missing:
            raise UnlearnError(
                f"{at}: row {index} is missing {', '.join(missing)} "
                f"(split {name!r} needs {', '.join(need)}); is this the right file for {name}?"
            )
        if "perturbed_answer" in need and not isinstance(row["perturbed_answer"], list):
            raise UnlearnError(
                f"{at}: row {index} has perturbed_answer of type {type(row['perturbed_answer']).__name__}; "
                f"it must be a list of wrong answers"
            )
        if (key := blank_field(row, [key for key in need if key in _TEXT_KEYS])) is not None:
            raise UnlearnError(f"{row_label(where, index, line)} has {describe_blank(row, key)}; every row needs a"
                               f" non-empty question and answer: fix or remove the row")
        if "perturbed_answer" in need and (not row["perturbed_answer"] or any(
                not isinstance(a, str) or not a.strip() for a in row["perturbed_answer"])):
            raise UnlearnError(f"{row_label(where, index, line)} has an empty perturbed_answer list or an empty"
                               " wrong answer in it; give one or more non-empty wrong answers")
    return rows


def load_split(
    name: str, data_dir: str | Path | None = None, *, hub_id: str = TOFU_HUB_ID, revision: str | None = None
) -> list[dict]:
    """Rows of TOFU split ``name`` (e.g. 'forget10_perturbed') as dicts, validated for its kind.

    With ``data_dir`` the split is read from ``<data_dir>/<name>.json`` (or ``.jsonl``); without it
    from the hub (``hub_id`` at ``revision``), which needs network access.
    """
    if data_dir is not None:
        path = _find_split_file(name, Path(data_dir).expanduser())
        rows, lines = parse_rows(path)
        return _check_rows(name, rows, lines, str(path))
    try:
        import datasets

        rows = datasets.load_dataset(hub_id, name, split="train", revision=revision).to_list()
        record_read(hub=f"{hub_id}/{name}", revision=revision, rows=rows)
    except Exception as err:  # offline, unknown config, auth...: all fixed the same way
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        raise UnlearnError(
            f"could not load TOFU split {name!r} from the Hugging Face hub ({hub_id}): "
            f"{type(err).__name__}: {reason}; the hub may be unreachable: download the TOFU files "
            f"and pass --data-dir (or data.data_dir= in a recipe) pointing at the folder that holds {name}.json"
        ) from err
    return _check_rows(name, rows, [None] * len(rows), f"{hub_id}/{name}")


def load_idk(path: str | Path | None = None) -> list[str]:
    """"I don't know" answers for the IDK baseline: one per line of a plain-text file (TOFU's
    ``idontknow.jsonl`` is plain text, not JSON), or the built-in list when ``path`` is None."""
    if path is None:
        return list(BUILTIN_IDK_ANSWERS)
    path = Path(path).expanduser()
    if not path.is_file():
        raise UnlearnError(
            f"IDK answers file {path} not found; pass a plain-text file with one answer per line, "
            f"or leave it unset to use the built-in answers"
        )
    answers = [line.strip() for line in read_text(path, "IDK answers file").splitlines() if line.strip()]
    if not answers:
        raise UnlearnError(f"IDK answers file {path} has no non-empty lines; add one answer per line")
    return answers


@dataclass
class TofuSplits:
    """The splits one TOFU run needs: what to forget, what to keep, and the evaluation sets.

    ``forget``/``retain``/``real_authors``/``world_facts`` use the perturbed schemas (paraphrased and
    perturbed answers for truth-ratio); ``holdout`` (never-trained authors, for MIA) is None when
    absent locally; ``retain_train`` is the full retain split (e.g. retain90) used for training.
    """

    forget: list[dict]
    retain: list[dict]
    real_authors: list[dict]
    world_facts: list[dict]
    holdout: list[dict] | None
    retain_train: list[dict] | None
    name: str

    def __repr__(self) -> str:
        """Row counts, not 4000 dicts, so logs stay readable."""
        counts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        shown = ", ".join(f"{key}={None if rows is None else len(rows)}" for key, rows in counts.items())
        return f"TofuSplits(name={self.name!r}, {shown})"


def load_tofu(
    forget_split: str = "forget10", data_dir: str | Path | None = None, *,
    hub_id: str = TOFU_HUB_ID, revision: str | None = None, with_train_retain: bool = True,
) -> TofuSplits:
    """Load the forget split and its matching retain/holdout/evaluation splits (see ``FORGET_SPLITS``)."""
    if forget_split not in FORGET_SPLITS:
        valid = list(FORGET_SPLITS)
        hint = _did_you_mean(forget_split, valid)
        raise UnlearnError(
            f"unknown TOFU forget split {forget_split!r}; "
            + (f"did you mean {hint!r}? " if hint else "")
            + f"valid: {', '.join(valid)}"
        )
    retain_name, holdout_name = FORGET_SPLITS[forget_split]

    def load(name: str) -> list[dict]:
        return load_split(name, data_dir, hub_id=hub_id, revision=revision)

    forget = load(f"{forget_split}_perturbed")  # first, so a wrong folder fails on the main split
    holdout_present = data_dir is None or _split_file(holdout_name, Path(data_dir).expanduser()) is not None
    return TofuSplits(
        forget=forget,
        retain=load("retain_perturbed"),
        real_authors=load("real_authors_perturbed"),
        world_facts=load("world_facts_perturbed"),
        holdout=load(holdout_name) if holdout_present else None,
        retain_train=load(retain_name) if with_train_retain else None,
        name=forget_split,
    )


def shared_tofu_dir() -> Path | None:
    """The ``shared/data/tofu`` folder found walking up from this file and from the working directory
    (the checkout sits next to ``shared/``); None when absent. Used by tests and docs examples."""
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for directory in (start, *start.parents):
            candidate = directory / "shared" / "data" / "tofu"
            if candidate.is_dir():
                return candidate
    return None
