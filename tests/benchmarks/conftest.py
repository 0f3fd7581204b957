"""Fixtures for benchmark tests: a byte-level BPE tokenizer trained in code and a tiny Llama, both offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = [
    "Question: Who wrote the book?\nAnswer: The book was written by Ana Ruiz.",
    "Question: Where was the author born?\nAnswer: The author was born in Lima, Peru.",
    "Question: What genre does she write?\nAnswer: She writes crime novels and short stories.",
    "The cat sat on the mat. The dog ran in the park. Paris is the capital of France.",
    "William Shakespeare wrote Romeo and Juliet. Mark Twain wrote Tom Sawyer.",
    "the quick brown fox jumps over the lazy dog 0123456789",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="right"
    )


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny models run several times faster on one thread (no fork/join overhead, no contention on
    a busy CI box); the previous setting is restored after each test module."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def build_model(tokenizer, seed: int = 0):
    from unlearnkit.model import tiny_llama

    model = tiny_llama(
        len(tokenizer), hidden=32, layers=2, heads=2, seed=seed,
        bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
    )
    return model.eval()


@pytest.fixture(scope="session")
def model(tokenizer):
    return build_model(tokenizer)


@pytest.fixture(scope="session")
def fmt():
    from unlearnkit.data.formats import TagFormat

    return TagFormat()


def qa_row(question: str, answer: str, n_perturbed: int = 3, paraphrased: bool = True) -> dict:
    row = {
        "question": question,
        "answer": answer,
        "perturbed_answer": [f"{answer} not {k}" for k in range(n_perturbed)],
    }
    if paraphrased:
        row["paraphrased_answer"] = f"In short, {answer.lower()}"
        row["paraphrased_question"] = f"Tell me: {question.lower()}"
    return row


class Splits:
    """Anything with forget/retain/real_authors/world_facts attributes will do for evaluate_tofu."""

    def __init__(self, forget, retain, real_authors, world_facts):
        self.forget, self.retain = forget, retain
        self.real_authors, self.world_facts = real_authors, world_facts
        self.holdout = None


@pytest.fixture(scope="session")
def tiny_splits():
    forget = [qa_row("Who wrote the book?", "The book was written by Ana Ruiz.", 3),
              qa_row("Where was the author born?", "The author was born in Lima, Peru.", 3)]
    retain = [qa_row("What genre does she write?", "She writes crime novels.", 2),
              qa_row("What did the cat do?", "The cat sat on the mat.", 2),
              qa_row("Where did the dog run?", "The dog ran in the park.", 2)]
    real = [qa_row("Who wrote Romeo and Juliet?", "William Shakespeare", 3, paraphrased=False),
            qa_row("Who wrote Tom Sawyer?", "Mark Twain", 3, paraphrased=False)]
    world = [qa_row("What is the capital of France?", "Paris", 2, paraphrased=False)]
    return Splits(forget, retain, real, world)
