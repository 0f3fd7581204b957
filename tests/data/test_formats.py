"""Prompt formats with a tokenizer built here (byte-level BPE, `<s>` BOS via TemplateProcessing,
`</s>` EOS, `<pad>`): exact ids and answer-only labels, as OpenUnlearning builds them."""

from __future__ import annotations

import copy

import pytest

from unlearnkit.data.batch import IGNORE_INDEX
from unlearnkit.data.formats import ChatFormat, TagFormat, encode_text, get_format
from unlearnkit.data.pairing import encode_rows, idk_view
from unlearnkit.errors import UnlearnError

CORPUS = [
    "Question: Who wrote The Silent Orchard?\nAnswer: Mara Velin wrote it in 1987.",
    "Question: Where was Mara Velin born?\nAnswer: She was born in Lisbon.",
    "I don't know. I have no idea. I'm not sure about that.",
    "<|user|> <|assistant|> <|system|>",
]
QUESTION = "Who wrote The Silent Orchard?"
ANSWER = "Mara Velin wrote it."
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    return tok


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def ids(tok, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def supervised(example) -> list[int]:
    return [label for label in example.labels if label != IGNORE_INDEX]


def test_openunlearning_preset_tokenises_like_openunlearning(tokenizer):
    example = get_format("openunlearning").encode(tokenizer, QUESTION, ANSWER)
    expected = ids(tokenizer, f"Question: {QUESTION}\nAnswer: {ANSWER}") + [tokenizer.eos_token_id]
    prompt_len = len(ids(tokenizer, f"Question: {QUESTION}\nAnswer: "))
    assert list(example.input_ids) == expected
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert list(example.labels) == [IGNORE_INDEX] * prompt_len + expected[prompt_len:]
    assert example.prompt_length == prompt_len
    assert example.labels[-1] == tokenizer.eos_token_id  # the final EOS is trained on


def test_prompt_mask_length_is_the_prompts_own_token_count_even_across_a_merge(tokenizer):
    # OpenUnlearning's quirk, reproduced on purpose: the prompt ends in a space that byte-level BPE
    # tokenises alone ("Ġ"), while in the full text it merges into the answer ("ĠMara"). Masking
    # len(tokenize(prompt)) tokens then also masks the first answer token.
    example = get_format("openunlearning").encode(tokenizer, QUESTION, ANSWER)
    prompt = ids(tokenizer, f"Question: {QUESTION}\nAnswer: ")
    assert list(example.input_ids[: len(prompt) - 1]) == prompt[:-1]
    assert example.input_ids[len(prompt) - 1] != prompt[-1]  # the merge happened in this tokenizer
    assert tokenizer.decode(supervised(example), skip_special_tokens=True) == " Velin wrote it."


def test_eos_is_not_duplicated_when_already_present(tokenizer):
    fmt = get_format("openunlearning")
    plain = fmt.encode(tokenizer, QUESTION, ANSWER)
    with_eos = fmt.encode(tokenizer, QUESTION, ANSWER + "</s>")
    assert with_eos.input_ids == plain.input_ids
    assert with_eos.input_ids.count(tokenizer.eos_token_id) == 1


def test_few_shot_examples_precede_the_question_separated_by_blank_lines(tokenizer):
    fmt = get_format("openunlearning")
    shots = [("Where was Mara Velin born?", "Lisbon."), ("Who is she?", "A writer.")]
    text = fmt.prompt_text(QUESTION, shots)
    assert text == ("Question: Where was Mara Velin born?\nAnswer: Lisbon.\n\n"
                    "Question: Who is she?\nAnswer: A writer.\n\n"
                    f"Question: {QUESTION}\nAnswer: ")
    assert tokenizer.decode(fmt.prompt_ids(tokenizer, QUESTION, shots), skip_special_tokens=True) == text
    example = fmt.encode(tokenizer, QUESTION, ANSWER, few_shot=shots)
    assert example.prompt_length == len(ids(tokenizer, text))  # the shots are prompt: no loss on them
    assert supervised(example) == supervised(fmt.encode(tokenizer, QUESTION, ANSWER))


def test_tag_format_system_text_is_a_prefix_and_llama2_preset_uses_inst_tags():
    assert get_format("openunlearning", system="Facts.\n").prompt_text("q") == "Facts.\nQuestion: q\nAnswer: "
    assert get_format("llama2_chat").prompt_text("q") == "[INST] q [/INST]"


def test_chat_format_masks_the_rendered_prompt(chat_tokenizer):
    fmt = get_format("chat", system="Be brief.")
    assert isinstance(fmt, ChatFormat)
    example = fmt.encode(chat_tokenizer, QUESTION, ANSWER)
    prompt_text = f"<|system|>Be brief.\n<|user|>{QUESTION}\n<|assistant|>"
    full_text = f"{prompt_text}{ANSWER}\n"
    prompt = list(chat_tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    full = list(chat_tokenizer(full_text, add_special_tokens=False)["input_ids"]) + [chat_tokenizer.eos_token_id]
    assert list(example.input_ids) == full
    assert example.prompt_length == len(prompt) and full[: len(prompt)] == prompt
    assert list(example.labels) == [IGNORE_INDEX] * len(prompt) + full[len(prompt):]
    assert chat_tokenizer.decode(supervised(example), skip_special_tokens=True) == ANSWER + "\n"
    assert fmt.prompt_ids(chat_tokenizer, QUESTION) == prompt


def test_chat_format_without_a_template_is_a_user_error(tokenizer):
    assert not getattr(tokenizer, "chat_template", None)
    with pytest.raises(UnlearnError, match="chat template.*data.format=openunlearning"):
        get_format("chat").encode(tokenizer, QUESTION, ANSWER)


@pytest.mark.parametrize("name,suggestion", [("openunlearnin", "openunlearning"), ("chatt", "chat")])
def test_unknown_format_name_suggests_the_near_miss(name, suggestion):
    with pytest.raises(UnlearnError, match=f"unknown prompt format '{name}'; did you mean '{suggestion}'\\?"
                                           ".*valid: openunlearning, chat, llama2_chat"):
        get_format(name)


def test_encode_text_supervises_every_token(tokenizer):
    example = encode_text(tokenizer, "Mara Velin wrote it.")
    assert list(example.input_ids) == ids(tokenizer, "Mara Velin wrote it.") + [tokenizer.eos_token_id]
    assert example.labels == example.input_ids
    assert example.prompt_length == 0


def test_encode_rows_and_idk_view_align_with_the_questions(tokenizer):
    fmt = TagFormat()
    rows = [{"question": QUESTION, "answer": ANSWER}, {"question": "Where was Mara Velin born?", "answer": "Lisbon."}]
    forget = encode_rows(rows, tokenizer, fmt)
    pool = ["I don't know.", "I have no idea.", "I'm not sure about that."]
    idk = idk_view(rows, tokenizer, fmt, pool, seed=0)
    assert idk == idk_view(rows, tokenizer, fmt, pool, seed=0)  # chosen once per row, seeded
    for f, k, row in zip(forget, idk, rows):
        assert tokenizer.decode(f.input_ids, skip_special_tokens=True) == fmt.prompt_text(row["question"]) + row["answer"]
        idk_text = tokenizer.decode(k.input_ids, skip_special_tokens=True)
        assert idk_text.startswith(fmt.prompt_text(row["question"]))
        assert idk_text[len(fmt.prompt_text(row["question"])):] in pool
        assert k.input_ids[-1] == tokenizer.eos_token_id
    with pytest.raises(UnlearnError, match="IDK answer pool is empty"):
        idk_view(rows, tokenizer, fmt, [], seed=0)
