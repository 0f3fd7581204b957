"""The training data of a recipe: forget rows (and paired retain rows, and the views a method asks for)
tokenised for the method's objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearnkit.errors import UnlearnError

if TYPE_CHECKING:
    from unlearnkit.recipe import Recipe


def build_training_data(recipe: Recipe, method, bench, tokenizer, fmt, forget_rows: list[dict] | None = None):
    """The recipe's training data for `method` (forget rows default to the benchmark's)."""
    from unlearnkit.data.texts import load_texts, text_of
    from unlearnkit.data.tofu import load_idk

    rows, retain = bench.component.training_rows(bench, forget_rows, tokenizer, recipe.data.max_length)
    idk = load_idk(recipe.data.idk_file) if "idk" in method.extra_views else None
    generic = None
    if "generic" in method.extra_views:
        generic = load_texts(recipe.data.generic_file) if recipe.data.generic_file else [text_of(r) for r in retain]
    text = recipe.data.text_format
    if text is None:  # bare-text requests (harvested refusals, {"text": ...} files) can only be text
        text = method.forget_format == "text" or any("question" not in r or "answer" not in r for r in rows)
    return training_data(method, tokenizer, fmt, rows, retain, max_length=recipe.data.max_length,
                         idk_answers=idk, generic_texts=generic, seed=recipe.seed, text_format=text)


def training_data(method, tokenizer, fmt, forget_rows: list[dict], retain_rows: list[dict] | None, *,
                  max_length: int | None = 512, idk_answers=None, generic_texts=None, seed: int = 0,
                  text_format: bool | None = None):
    """Tokenise forget rows (+ paired retain rows, + the extra views the method asks for).

    `method.forget_format` "qa" encodes rows with `fmt` (prompt masked); "text" as bare text
    (every token supervised); `text_format` overrides the method's choice. Views: "idk" (each question with an IDK answer from `idk_answers`),
    "generic" (generic texts, cycled, as the preferred side of dpo_generic_preferred).
    """
    from unlearnkit.data.pairing import UnlearnData, encode_rows, idk_view
    from unlearnkit.data.texts import encode_text_rows, generic_view

    text = method.forget_format == "text" if text_format is None else text_format

    def encode(rows):
        if text:
            return encode_text_rows(rows, tokenizer, max_length=max_length)
        return encode_rows(rows, tokenizer, fmt, max_length=max_length)

    if method.needs_retain() and not retain_rows:
        raise UnlearnError(f"method '{getattr(method, 'registry_name', type(method).__name__)}' uses retain data;"
                           " give retain rows (a benchmark with a retain split, or retain=... in the API)")
    extra = {}
    if "idk" in method.extra_views:
        from unlearnkit.data.tofu import load_idk

        extra["idk"] = idk_view(forget_rows, tokenizer, fmt, idk_answers or load_idk(), seed, max_length=max_length)
    if "generic" in method.extra_views:
        if not generic_texts:
            raise UnlearnError("this method prefers generic texts over the forget texts; give generic texts"
                               " (data.generic_file, or generic_texts=... in the API)")
        extra["generic"] = generic_view(len(forget_rows), generic_texts, tokenizer, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return UnlearnData(encode(forget_rows), encode(retain_rows) if method.needs_retain() else None, extra,
                       pad_id=pad_id, tokenizer=tokenizer)
