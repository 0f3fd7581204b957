"""The offline backend: a deterministic stand-in for an LLM that plays the two Scenario II agents.

It reads the role from the system prompt (`crafting_prompts.REWRITE_SYSTEM` / `EVAL_SYSTEM`) and the tagged
blocks from the user message, so it sees exactly what a real model sees and answers in the format a real
model is asked for. No model, no network, no randomness: the same messages always give the same reply.

* Rewrite: splits the original (refusal) and the content into sentences and weaves them together with
  templated connective phrases. What it writes depends on the iteration (the number of earlier candidates
  in the prompt, so the history matters) and on a CRC32 of the inputs (which connectives):

  ====  ===================================  =========================================================
  it.   arrangement                          refusal sentences kept
  ====  ===================================  =========================================================
  1     content first, then the refusal      the first one only (a brief mention)
  2     interleaved sentence by sentence     the first two, lightly paraphrased (`PARAPHRASES`)
  3     refusal first, then the content      all, lightly paraphrased
  4     content first, then the refusal      all, verbatim
  ====  ===================================  =========================================================

  and then the cycle repeats with the next set of connectives. So scores usually rise over iterations but
  not always monotonically, and the best candidate is not always the last.
* Evaluate: ``[SEMANTIC]`` = share of the original's distinct content words (stop words and 1-2 letter
  words removed) that appear in the synthetic text; ``[SYNTACTIC]`` = share of the synthetic text's
  sentences that start with a capital or digit, end with . ! ? and hold 3 to 60 words, times a penalty
  for immediately repeated words. Both rounded to two decimals.

It is for tests and the offline demo; its scores say nothing about how a real rewriter would do.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

from unlearnkit.agents.base import BackendError, ChatBackend
from unlearnkit.registry import BACKENDS

CONNECTIVES = (
    ("On a related note:", "As the record also says:", "To put it plainly:"),
    ("For the record:", "In the same breath:", "Alongside this:"),
    ("It should be said:", "Put another way:", "As noted here:"),
    ("In this context:", "Equally:", "Within the same passage:"),
    ("Worth adding:", "By the same token:", "Also recorded:"),
)
"""Sets of connective phrases; the inspector's data gives each split its own sets (`connectives=`)."""
_STOP = frozenset(
    "the a an and or but of to in on at for with by from as is are was were be been it its this that these those"
    " i you he she we they my your our their me him her them not no so if then than into about can could would"
    " will just also".split()
)
PARAPHRASES = (("I'm", "I am"), ("can't", "cannot"), ("won't", "will not"), ("don't", "do not"),
               ("help with", "assist with"), ("request", "query"), ("provide", "give"), ("could", "might"),
               ("harm", "damage"), ("Sorry", "Apologies"), ("happy", "glad"), ("something else", "another topic"))
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) > 2 and w not in _STOP}


def paraphrase(sentence: str) -> str:
    """Apply the word-level substitutions in `PARAPHRASES` (whole words, case as written)."""
    for before, after in PARAPHRASES:
        sentence = re.sub(rf"(?<![\w']){re.escape(before)}(?![\w'])", after, sentence)
    return sentence


@BACKENDS.register("offline")
@dataclass
class OfflineBackend(ChatBackend):
    """Deterministic rewrite/evaluation agent for tests and the offline demo (no model, no network)."""

    connectives: Optional[list[list[str]]] = None  # sets of 3 phrases; None: all of `CONNECTIVES`

    def chat(self, messages: Sequence[dict], *, temperature: float = 0.0, max_tokens: int = 512) -> str:
        from unlearnkit.attacks.crafting_prompts import EVAL_SYSTEM, REWRITE_SYSTEM

        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        user = "\n\n".join(m["content"] for m in messages if m.get("role") == "user")
        if system == REWRITE_SYSTEM:
            return self._rewrite(user)
        if system == EVAL_SYSTEM:
            return self._evaluate(user)
        raise BackendError("the offline backend only plays the Scenario II rewrite and evaluation agents"
                           " (their system prompts are in attacks/crafting_prompts.py); use a model backend"
                           " (openai_compat, hf_local) for anything else")

    def _rewrite(self, user: str) -> str:
        from unlearnkit.attacks.crafting_prompts import count_candidates, read_block

        original, content = read_block(user, "ORIGINAL"), read_block(user, "CONTENT")
        if not original or content is None:
            raise BackendError("offline rewrite: the prompt lacks an [ORIGINAL] or [CONTENT] block")
        iteration = count_candidates(user)  # 0 for the first candidate
        refusal, carrier = sentences(original), sentences(content)
        salt = zlib.crc32(f"{original}\x00{content}".encode())
        sets = self.connectives or CONNECTIVES
        phrases = list(sets[(salt + iteration // 4) % len(sets)]) * 3  # any set length works
        step = iteration % 4
        if step in (1, 2):
            refusal = [paraphrase(s) for s in refusal]
        refusal = refusal[: (1, 2, len(refusal), len(refusal))[step]]
        if step == 1:  # interleaved sentence by sentence
            pieces = []
            for k in range(max(len(refusal), len(carrier))):
                if k < len(carrier):
                    pieces.append(carrier[k])
                if k < len(refusal):
                    pieces.append(f"{phrases[k % len(phrases)]} {refusal[k]}" if k == 0 else refusal[k])
        elif step == 2:  # the refusal, then the content
            pieces = refusal + [f"{phrases[2]} {' '.join(carrier)}"]
        else:  # the content, then the refusal
            pieces = carrier + [f"{phrases[0]} {' '.join(refusal)}"]
        return "[DATA]\n" + " ".join(p for p in pieces if p.strip()) + "\n[/DATA]"

    def _evaluate(self, user: str) -> str:
        from unlearnkit.attacks.crafting_prompts import read_block

        original, synthetic = read_block(user, "ORIGINAL"), read_block(user, "SYNTHETIC")
        if original is None or synthetic is None:
            raise BackendError("offline evaluation: the prompt lacks an [ORIGINAL] or [SYNTHETIC] block")
        wanted = content_words(original)
        semantic = len(wanted & content_words(synthetic)) / len(wanted) if wanted else 0.0
        parts = sentences(synthetic)
        good = [p for p in parts if re.match(r"[A-Z0-9\"'(\[]", p) and p.rstrip("\"')").endswith((".", "!", "?"))
                and 3 <= len(p.split()) <= 60]
        words = synthetic.lower().split()
        repeats = sum(a == b for a, b in zip(words, words[1:]))
        syntactic = (len(good) / len(parts) if parts else 0.0) * max(0.0, 1.0 - repeats / max(len(words), 1) * 5)
        return f"[SEMANTIC] {semantic:.2f}\n[SYNTACTIC] {syntactic:.2f}"
