"""The bundled tiny world: a deterministic synthetic TOFU-style dataset of fictitious authors, plus real
general knowledge, and a small tokenizer trained on it — so the whole unlearning loop runs offline on a CPU.

Import the submodules directly (`unlearnkit.world.generator`, `unlearnkit.world.tokenizer`); this package
imports nothing heavy on its own.
"""
