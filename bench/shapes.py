"""The model shapes the benchmarks build, defined once (imported as ``from shapes import ...``).

Every benchmark runs as ``python bench/<script>.py``, so ``bench/`` is ``sys.path[0]`` and this
module imports as a sibling. Each shape is a set of ``transformers.LlamaConfig`` fields; the models are
randomly initialised (a benchmark needs the work of a forward/backward, not trained weights).

* ``tiny``: a few hundred thousand parameters, for dry runs of the accelerator scripts on a CPU.
* ``small``: ``unlearnkit.model.tiny_llama(vocab, hidden=256, layers=4, heads=4)`` (the vocabulary is the
  script's: 1024 synthetic tokens in ``train_throughput.py``, the trained BPE in ``eval_throughput.py``).
* ``medium``: ``tiny_llama(4096, hidden=512, layers=8, heads=8)``, 31.5M parameters, big enough that
  weights, gradients and AdamW state dominate the interpreter (``memory_ratio.py``'s default).
* ``1b``: Llama-3.2-1B: hidden 2048, 16 layers, 32 attention heads over 8 KV heads, MLP 8192,
  vocabulary 128256, input and output embeddings tied (1.24B parameters).

With ``seed`` fixed, ``build_llama`` gives the same weights as ``tiny_llama`` for the same fields.
"""

from __future__ import annotations

import torch

SHAPES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, tie_word_embeddings=True),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=768, tie_word_embeddings=False),
    "medium": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                   intermediate_size=1536, vocab_size=4096, tie_word_embeddings=False),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, tie_word_embeddings=True, vocab_size=128256),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def shape_fields(shape: str, *, vocab: int | None = None, hidden: int | None = None, layers: int | None = None,
                 heads: int | None = None, default_vocab: int = 1024) -> dict:
    """The LlamaConfig fields of `shape`, with any of its sizes overridden as ``tiny_llama`` would set
    them (``--hidden H`` also sets the MLP to 3·H; ``--heads N`` sets N KV heads). The vocabulary is
    `vocab`, else the shape's own, else `default_vocab`."""
    fields = dict(SHAPES[shape])
    if hidden:
        fields.update(hidden_size=hidden, intermediate_size=3 * hidden)
    if layers:
        fields["num_hidden_layers"] = layers
    if heads:
        fields.update(num_attention_heads=heads, num_key_value_heads=heads)
    fields["vocab_size"] = vocab or fields.get("vocab_size") or default_vocab
    return fields


def build_llama(fields: dict, *, dtype: str = "float32", device: str = "cpu", seed: int = 0,
                max_positions: int = 256, pad_id: int | None = 0):
    """A randomly initialised ``LlamaForCausalLM`` with `fields`, built directly on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**fields, max_position_embeddings=max_positions, bos_token_id=None, eos_token_id=None,
                         pad_token_id=pad_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(DTYPES[dtype])


def count_parameters(fields: dict) -> int:
    """Parameters of a model with `fields` (built on the meta device: no memory, no init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**fields))
    return sum(p.numel() for p in model.parameters())


def describe(fields: dict) -> str:
    return (f"hidden={fields['hidden_size']} layers={fields['num_hidden_layers']} "
            f"heads={fields['num_attention_heads']}/{fields['num_key_value_heads']}kv vocab={fields['vocab_size']}"
            f"{' tied' if fields.get('tie_word_embeddings') else ''}")
