"""Harmfulness judges, one registered component each (`unlearn ls judges`)."""
