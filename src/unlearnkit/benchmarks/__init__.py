"""Benchmarks: data splits plus an ``evaluate(model, tokenizer, ...)`` that composes pure metrics.

``passes`` holds the only model-facing code: one teacher-forced scoring pass and one greedy generation
pass, both batched by length. Each benchmark module (``tofu``, ...) builds every sequence a split needs,
runs those passes once per split, and derives all of its metrics from the returned arrays.
"""
