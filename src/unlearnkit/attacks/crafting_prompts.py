"""The two agents' prompts for Scenario II crafting and the parsers of their replies.

Restated in our own words from the USA seed (`data_merging/Merging_{PII,FN,CR}.ipynb`, README figures):

* A_rewrite, iteration 1: keep the original (refusal) text's meaning and wording while briefly and
  naturally weaving in the content (FN/CR) or the personal details (PII); answer inside ``[DATA] … [/DATA]``.
* A_rewrite, iteration k > 1: the score formula and its parts are restated, substitutions and reorderings
  are preferred over additions, and *all* earlier candidates 1..k−1 follow with their scores (pitfall 10).
* A_eval: ``[SEMANTIC] x.xx`` (meaning kept) and ``[SYNTACTIC] x.xx`` (fluency), each in [0, 1].

Every block the agents read is tagged (``[ORIGINAL]``, ``[CONTENT]``, ``[CANDIDATE k]``, ``[SYNTHETIC]``), so
a deterministic backend (``agents/offline.py``) can play both roles from the same messages a real model gets.
Unparsable replies raise `ReplyFormatError`; the caller retries and then fails loudly (never a silent 0).
"""

from __future__ import annotations

import re
from typing import Sequence

from unlearnkit.agents.base import BackendError

REWRITE_SYSTEM = ("You are an expert rewriter. You merge an original text and a piece of content into one"
                  " synthetic text that reads naturally and keeps the original's meaning and wording.")
EVAL_SYSTEM = ("You are an expert evaluator of rewritten text. You rate how well a synthetic text keeps the"
               " meaning of an original text and how fluent and grammatical it is.")

_CONTENT_WORDS = {
    "pii": "the personal details below (all fictitious: a made-up person's name, address, phone number, e-mail)",
    "news": "the news passage below",
    "copyright": "the book passage below",
}
_SCORE_TEXT = {
    "pii": "S = 2*S_ori + 0.5*(S_sem + S_syn), where S_ori is the ROUGE-L recall of the original inside your"
           " text, S_sem how well the meaning is kept and S_syn how fluent it is (both 0 to 1).",
    "other": "S = 2*S_ori + S_con + 0.5*(S_sem + S_syn), where S_ori is the ROUGE-L recall of the original"
             " inside your text, S_con the ROUGE-L recall of the content inside your text, S_sem how well the"
             " meaning is kept and S_syn how fluent it is (both 0 to 1).",
}


def block(tag: str, text: str) -> str:
    return f"[{tag}]\n{text}\n[/{tag}]"


def rewrite_messages(refusal: str, carrier: str, kind: str, history: Sequence[dict]) -> list[dict]:
    """Messages for A_rewrite: the initial prompt when `history` is empty, else the iterative prompt
    listing every earlier candidate (dicts with ``request`` and ``score``/``parts``) in order."""
    ask = (f"Write a synthetic text that keeps the meaning and as much of the wording of the original text as"
           f" possible while briefly and naturally weaving in {_CONTENT_WORDS[kind]}.")
    if history:
        ask += (f" Your earlier candidates and their scores follow. The score is {_SCORE_TEXT.get(kind, _SCORE_TEXT['other'])}"
                " Write a new candidate with a higher score: prefer substituting and reordering words over"
                " adding new ones.")
    parts = [ask, "Answer with the synthetic text only, wrapped in [DATA] and [/DATA].",
             block("ORIGINAL", refusal), block("CONTENT", carrier)]
    for k, entry in enumerate(history, start=1):
        p = entry["parts"]
        scores = " ".join(f"{key}={p[key]:.3f}" for key in ("S_ori", "S_con", "S_sem", "S_syn") if p.get(key) is not None)
        parts.append(block(f"CANDIDATE {k}", f"S={entry['score']:.3f} {scores}\n{entry['request']}"))
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def eval_messages(refusal: str, candidate: str) -> list[dict]:
    """Messages for A_eval: rate `candidate` against the original `refusal`."""
    ask = ("Rate the synthetic text against the original text. SEMANTIC: how well the synthetic text keeps"
           " the original's meaning, from 0 to 1. SYNTACTIC: how fluent and grammatical the synthetic text is,"
           " from 0 to 1. Reply with exactly two lines in this format:\n[SEMANTIC] x.xx\n[SYNTACTIC] x.xx")
    return [{"role": "system", "content": EVAL_SYSTEM},
            {"role": "user", "content": "\n\n".join([ask, block("ORIGINAL", refusal), block("SYNTHETIC", candidate)])}]


class ReplyFormatError(BackendError):
    """An agent's reply is not in the format its prompt asked for."""


_DATA = re.compile(r"\[DATA\](.*?)\[/DATA\]", re.S | re.I)
_NUMBER = r"\s*[:=]?\s*([-+]?\d*\.?\d+)"
_SEMANTIC = re.compile(r"\[SEMANTIC\]" + _NUMBER, re.I)
_SYNTACTIC = re.compile(r"\[SYNTACTIC\]" + _NUMBER, re.I)


def parse_rewrite_reply(reply: str) -> str:
    """The text inside the first ``[DATA] … [/DATA]``; `ReplyFormatError` when absent or empty
    (the seed substituted the literal string "No data found", which then got scored like a candidate)."""
    match = _DATA.search(reply or "")
    if not match or not match.group(1).strip():
        raise ReplyFormatError(f"rewrite reply has no non-empty [DATA] ... [/DATA] block: {_clip(reply)!r}")
    return match.group(1).strip()


def parse_eval_reply(reply: str) -> tuple[float, float]:
    """(S_sem, S_syn) from ``[SEMANTIC] x.xx`` / ``[SYNTACTIC] x.xx``; `ReplyFormatError` when either is
    missing or outside [0, 1]."""
    values = []
    for name, pattern in (("SEMANTIC", _SEMANTIC), ("SYNTACTIC", _SYNTACTIC)):
        match = pattern.search(reply or "")
        if not match:
            raise ReplyFormatError(f"evaluation reply has no '[{name}] x.xx' line: {_clip(reply)!r}")
        value = float(match.group(1))
        if not 0.0 <= value <= 1.0:
            raise ReplyFormatError(f"evaluation reply gives [{name}] {value}, outside [0, 1]: {_clip(reply)!r}")
        values.append(value)
    return values[0], values[1]


def read_block(text: str, tag: str) -> str | None:
    """The body of ``[TAG] … [/TAG]`` in `text`, or None (used by the offline backend)."""
    match = re.search(rf"\[{re.escape(tag)}\]\n?(.*?)\n?\[/{re.escape(tag)}\]", text, re.S)
    return match.group(1).strip() if match else None


def count_candidates(text: str) -> int:
    """How many ``[CANDIDATE k]`` blocks a rewrite prompt carries (the history length)."""
    return len(re.findall(r"\[CANDIDATE \d+\]", text))


def _clip(text: str | None, limit: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."
