"""`unlearn meta-eval`: the protocol's formulas (faithfulness AUC, Q, R, harmonic means) and the command end to end on
the small tiny world."""

from __future__ import annotations

import json

import pytest

from unlearnkit.pipeline.meta_eval import (ORIENTATION, faithfulness, harmonic, quantization_robustness,
                                           relearning_robustness)


def test_faithfulness_is_the_oriented_auc():
    assert faithfulness([0.9, 0.8], [0.1, 0.2], 1) == 1.0
    assert faithfulness([0.9, 0.8], [0.1, 0.2], -1) == 0.0  # a metric read the wrong way round
    assert faithfulness([0.9, 0.1], [0.5, 0.5], 1) == 0.5
    assert faithfulness([0.9], [], 1) is None and faithfulness([float("nan")], [0.1], 1) is None


def test_robustness_scores():
    assert quantization_robustness(0.4, 0.4) == 1.0 and quantization_robustness(0.0, 0.0) == 1.0
    assert quantization_robustness(0.2, 0.6) == pytest.approx(1 - 0.4 / 0.8)
    assert relearning_robustness(0.3, 0.3) == 1.0 and relearning_robustness(0.3, -0.3) == 0.0
    assert relearning_robustness(0.5, 0.0) == 0.0  # only the unlearned model moved: knowledge came back
    assert harmonic(1.0, 0.5) == pytest.approx(2 / 3) and harmonic(0.0, 0.0) == 0.0 and harmonic(None, 1.0) is None


@pytest.mark.usefixtures("isolated_env")
def test_meta_eval_command_writes_the_table(cli, tmp_path):
    out = tmp_path / "meta"
    result = cli("meta-eval", "world.size=small", "--methods", "npo", "--variants", "5", "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "meta_eval.json").read_text())
    rows = {row["metric"]: row for row in saved["table"]}
    assert {"forget_prob", "forget_rouge", "forget_truth_ratio", "forget_rouge_paraphrased"} <= set(rows) <= set(ORIENTATION)
    for row in rows.values():
        for key in ("faithfulness", "quantization", "relearning", "robustness", "overall"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0, (row["metric"], key)
    assert rows["forget_prob"]["faithfulness"] == 1.0  # the target knows its forget answers better than retain
    kinds = [member["kind"] for member in saved["family"].values()]
    assert kinds.count("positive") == kinds.count("negative") == 2  # each model and its 5-step variant
    assert list(saved["unlearned"]) == ["npo"]
    assert "| forget_prob |" in (out / "meta_eval.md").read_text() and "faithfulness" in result.stdout


@pytest.mark.parametrize("args, message", [(["--methods", "npoo"], "did you mean 'npo'"),
                                           (["--variants", "five"], "--variants takes step counts")])
def test_bad_options_are_one_line(cli, tmp_path, args, message):
    result = cli("meta-eval", "world.size=small", *args, "-o", tmp_path / "m", "-q")
    assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "m").exists()
