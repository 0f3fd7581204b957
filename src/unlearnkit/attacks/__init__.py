"""Attacks on unlearning: crafted unlearning requests (Scenario II of "Refusal Is Not an Option"), ...

Each attack works on a copy of its input and returns a model or a dataset; see the module docstrings.
"""
