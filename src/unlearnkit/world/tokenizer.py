"""A small byte-level BPE tokenizer trained on the tiny world's text, wrapped for `transformers`.

Why train one: the bundled world must run offline (no hub download), and a vocabulary fitted to the world
keeps sequences short, which is what makes a ~1M-parameter model train in minutes on a CPU.

Byte-level: any string round-trips, nothing is ever `<unk>`. One deliberate difference from GPT-2's
pre-tokenization: a space is glued to the END of the preceding word ("born " "in ") instead of the start of
the next (" born" " in"). A chat prompt ends with "Answer: ", so with this split
``ids(prompt) + ids(answer) == ids(prompt + answer)``: answer-only loss masks computed by tokenizing the
prompt alone line up exactly with the full sequence.

Conventions the rest of the toolkit relies on: BOS ``<s>`` is prepended when ``add_special_tokens=True``;
EOS ``</s>`` is never added automatically; ``<pad>`` is a separate id; padding is on the right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN]  # ids 0..3, in this order

QA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}Question: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Answer: {{ message['content'] }}{% if not loop.last %}{{ '\\n' }}{% endif %}"
    "{% else %}{{ message['content'] }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Answer: {% endif %}"
)
"""Renders ``<s>Question: {q}\\nAnswer: {a}``; the generation prompt is ``<s>Question: {q}\\nAnswer: ``.
A system message (if any) is rendered as its bare content on its own line. (The newline after an
assistant turn is written as ``{{ '\\n' }}`` because transformers renders with ``trim_blocks``, which drops a
literal newline right after a ``{% ... %}`` tag.)"""

# Words (letters, digits, apostrophe-s) or punctuation runs, each taking at most one trailing space;
# any other whitespace (newlines, repeated spaces) is its own piece. Covers every character, so no text is lost.
_PRE_TOKENIZE_PATTERN = r"'s ?|\p{L}+ ?|\p{N}+ ?|[^\s\p{L}\p{N}]+ ?|\s+"

_FRAMING_TEXTS = ["Question: ", "\nAnswer: "]  # the chat template's own words, so they get merged tokens


def train_world_tokenizer(texts: list[str], vocab_size: int = 1024) -> "PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a `transformers` fast tokenizer.

    Deterministic: the same texts and vocab size give the same vocabulary and merges. The vocabulary can
    end up smaller than ``vocab_size`` when the corpus runs out of pairs worth merging.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level vocabulary needs at least "
            f"{256 + len(SPECIAL_TOKENS)} entries (256 bytes + {len(SPECIAL_TOKENS)} special tokens)."
        )
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRE_TOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The framing words occur once per training example, so weight them as such.
    backend.train_from_iterator(list(texts) + _FRAMING_TEXTS * max(1, len(texts)), trainer=trainer)
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B:1", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=512,
        padding_side="right",
        chat_template=QA_CHAT_TEMPLATE,
    )
