"""Prompt formats: how a (question, answer) pair becomes token ids with answer-only labels.

Two kinds:

* `TagFormat` joins literal tags by string concatenation and tokenises with the tokenizer's
  special tokens (BOS). The `openunlearning` preset reproduces OpenUnlearning's base-model
  template exactly: ``"Question: " + q + "\\n" + "Answer: " + a``, BOS from the tokenizer, EOS
  appended when missing, labels = −100 on the first ``len(tokenize(prompt))`` tokens, so the loss
  covers the answer and the final EOS only. Numbers computed with it compare with its results.
* `ChatFormat` renders the tokenizer's own chat template twice (full chat, and the prompt with
  the generation prompt) and masks the prompt's length, as OpenUnlearning does for chat models
  (which does not truncate this path; we truncate to `max_length` here too).

`few_shot` (question, answer) pairs are placed before the question with the same tags, each
answer followed by `example_separator` ("\\n\\n" in OpenUnlearning).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Sequence

from unlearnkit.data.batch import IGNORE_INDEX, Example
from unlearnkit.errors import UnlearnError

# Llama-3 templates print "Today Date"; fixing it keeps tokenisation stable (OpenUnlearning's choice).
CHAT_TEMPLATE_KWARGS = {"date_string": "10 Apr 2025"}


def _finish(tokenizer: Any, full: list[int], prompt_len: int, max_length: int | None) -> Example:
    if max_length is not None:
        full = full[:max_length]
    if tokenizer.eos_token_id is not None and (not full or full[-1] != tokenizer.eos_token_id):
        full = full + [tokenizer.eos_token_id]
    prompt_len = min(prompt_len, len(full))
    labels = [IGNORE_INDEX] * prompt_len + full[prompt_len:]
    return Example(tuple(full), tuple(labels))


@dataclass(frozen=True)
class TagFormat:
    """Plain tags: system + [user_start q user_end assistant_start a] (+ EOS)."""

    user_start: str = "Question: "
    user_end: str = "\n"
    assistant_start: str = "Answer: "
    example_separator: str = "\n\n"
    system: str = ""

    def prompt_text(self, question: str, few_shot: Sequence[tuple[str, str]] = ()) -> str:
        text = self.system
        for q, a in few_shot:
            text += self.user_start + q + self.user_end + self.assistant_start + a
            text += self.example_separator
        return text + self.user_start + question + self.user_end + self.assistant_start

    def prompt_ids(self, tokenizer: Any, question: str, few_shot=(), max_length=None) -> list[int]:
        ids = tokenizer(self.prompt_text(question, few_shot), add_special_tokens=True)["input_ids"]
        return list(ids)[:max_length] if max_length else list(ids)

    def encode(self, tokenizer: Any, question: str, answer: str, few_shot=(), max_length=None) -> Example:
        prompt = self.prompt_text(question, few_shot)
        full = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
        prompt_len = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return _finish(tokenizer, list(full), prompt_len, max_length)


@dataclass(frozen=True)
class ChatFormat:
    """The tokenizer's chat template (system prompt optional)."""

    system: str = ""

    def _messages(self, question: str, few_shot: Sequence[tuple[str, str]]) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for q, a in few_shot:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": question}]

    def _render(self, tokenizer: Any, msgs: list[dict], generation_prompt: bool) -> list[int]:
        if not getattr(tokenizer, "chat_template", None):
            raise UnlearnError(
                "format 'chat' needs a tokenizer with a chat template, and this one has none;"
                " use data.format=openunlearning (plain Question:/Answer: tags) instead"
            )
        text = tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=generation_prompt, **CHAT_TEMPLATE_KWARGS
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, tokenizer: Any, question: str, few_shot=(), max_length=None) -> list[int]:
        ids = self._render(tokenizer, self._messages(question, few_shot), True)
        return ids[:max_length] if max_length else ids

    def encode(self, tokenizer: Any, question: str, answer: str, few_shot=(), max_length=None) -> Example:
        msgs = self._messages(question, few_shot)
        full = self._render(tokenizer, msgs + [{"role": "assistant", "content": answer}], False)
        prompt_len = len(self._render(tokenizer, msgs, True))
        return _finish(tokenizer, full, prompt_len, max_length)


def encode_text(tokenizer: Any, text: str, max_length: int | None = None) -> Example:
    """Bare text (no prompt): BOS + text + EOS, every token supervised."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    return _finish(tokenizer, ids, 0, max_length)


PRESETS: dict[str, TagFormat | ChatFormat] = {
    "openunlearning": TagFormat(),
    "chat": ChatFormat(),
    "llama2_chat": TagFormat(user_start="[INST] ", user_end=" [/INST]", assistant_start=""),
}


def get_format(name: str, system: str = "") -> TagFormat | ChatFormat:
    """A preset by name; `system` adds a system prompt (chat) or a text prefix (tags)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" did you mean '{close[0]}'?" if close else ""
        raise UnlearnError(f"unknown prompt format '{name}';{hint} valid: {', '.join(PRESETS)}")
    fmt = PRESETS[name]
    if system:
        fmt = type(fmt)(**{**fmt.__dict__, "system": system})
    return fmt
