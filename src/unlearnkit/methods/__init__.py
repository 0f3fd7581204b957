"""Unlearning methods, one file each. `unlearnkit.registry.METHODS` finds them by name."""
