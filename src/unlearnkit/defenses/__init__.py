"""Defenses: the unlearning-request inspector (flags requests that carry refusal text) and the
safety-regression guard. See each module's docstring."""
