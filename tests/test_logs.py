"""The `unlearnkit` logger: the CLI shows INFO lines on rank 0 only; library use stays quiet unless configured."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from unlearnkit import logs


@pytest.fixture
def restore_logger():
    before = (list(logs.logger.handlers), logs.logger.level, logs.logger.propagate)
    yield
    logs.logger.handlers[:], logs.logger.level, logs.logger.propagate = before[0], before[1], before[2]


@pytest.mark.parametrize("rank, shown", [("0", True), ("1", False)])
def test_cli_logging_shows_info_on_rank_zero_only(monkeypatch, restore_logger, rank, shown):
    monkeypatch.setenv("RANK", rank)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.configure_cli_logging()
    logs.configure_cli_logging()  # configuring twice must not print twice
    logs.info("evaluating 3 metrics")
    logs.logger.warning("a warning")
    text = stderr.getvalue()
    assert ("evaluating 3 metrics" in text) is shown
    assert text.count("a warning") == 1


def test_info_is_silent_without_configuration(restore_logger, capsys):
    logs.logger.handlers[:] = []
    logs.logger.setLevel(logging.NOTSET)
    logs.logger.propagate = True
    logs.info("nobody asked")
    captured = capsys.readouterr()
    assert "nobody asked" not in captured.out + captured.err
