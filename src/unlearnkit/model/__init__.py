"""Models: loading any causal LM and LoRA (`loading`), hidden states and interventions (`hooks`), GRUN's
gated representation edits (`edits`), and weight arithmetic for task vectors (`task_arithmetic`)."""

from unlearnkit.model.loading import (DTYPES, LoraSpec, count_parameters, load_hint, load_model, load_tokenizer,
                                      merge_lora, resolve_device, tiny_llama, torch_dtype, wrap_lora)

__all__ = ["DTYPES", "LoraSpec", "count_parameters", "load_hint", "load_model", "load_tokenizer", "merge_lora",
           "resolve_device", "tiny_llama", "torch_dtype", "wrap_lora"]
