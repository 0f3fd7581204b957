"""The world tokenizer: lossless round trip, BOS-only special tokens, distinct pad, stable save/reload, and a
chat template whose prompt tokens are an exact prefix of the full prompt+answer tokens."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unlearnkit.world.generator import WorldSpec, generate_world, world_texts  # noqa: E402
from unlearnkit.world.tokenizer import train_world_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldSpec())


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_world_tokenizer(world_texts(world), vocab_size=1024)


def chat(question: str, answer: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": question}]
    return messages + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def test_decode_round_trips_world_text_and_unseen_text(tokenizer, world):
    samples = [row[key] for row in world.forget + world.holdout for key in ("question", "answer", "paraphrased_answer")]
    samples += ["Unseen text: Zürich, 42°C — naïve café!\n  two  spaces", world.world_facts[0]["answer"]]
    for text in samples:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.unk_token_id not in ids


def test_bos_is_added_eos_is_not_and_pad_is_distinct(tokenizer):
    ids = tokenizer("Who wrote 'Hamlet'?")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.eos_token_id not in ids
    assert tokenizer("Who wrote 'Hamlet'?", add_special_tokens=False)["input_ids"] == ids[1:]
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}) == 4
    assert tokenizer.padding_side == "right" and tokenizer.model_max_length == 512


def test_training_is_deterministic_and_respects_vocab_size(tokenizer, world):
    again = train_world_tokenizer(world_texts(world), vocab_size=1024)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert len(tokenizer) <= 1024
    with pytest.raises(ValueError, match="vocab_size"):
        train_world_tokenizer(["tiny"], vocab_size=100)


def test_save_and_reload_give_identical_ids(tokenizer, world, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [world.retain[0]["answer"], world.real_authors[0]["question"]]
    assert reloaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
    )  # fmt: skip
    assert reloaded.padding_side == "right"
    messages = chat(world.retain[0]["question"], world.retain[0]["answer"])
    assert reloaded.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(messages, tokenize=False)


def test_chat_template_renders_question_answer(tokenizer, world):
    row = world.forget[0]
    full = tokenizer.apply_chat_template(chat(row["question"], row["answer"]), tokenize=False)
    prompt = tokenizer.apply_chat_template(chat(row["question"]), tokenize=False, add_generation_prompt=True)
    assert full == f"<s>Question: {row['question']}\nAnswer: {row['answer']}"
    assert prompt == f"<s>Question: {row['question']}\nAnswer: "
    two_turns = chat(row["question"], row["answer"]) + chat(world.forget[1]["question"])
    assert "\nQuestion: " in tokenizer.apply_chat_template(two_turns, tokenize=False)


def test_prompt_tokens_are_a_prefix_of_prompt_plus_answer_tokens(tokenizer, world):
    for row in world.forget + world.real_authors[:3]:
        prompt = tokenizer.apply_chat_template(chat(row["question"]), tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(chat(row["question"], row["answer"]), tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert full_ids == prompt_ids + answer_ids
        assert full_ids[0] == tokenizer.bos_token_id and full_ids.count(tokenizer.bos_token_id) == 1
