"""The acceptance check of `unlearn run` on the bundled default world (what the README promises).

Builds the default tiny world from scratch into a temporary cache (about 1.5 minutes on 2 CPU
cores), runs the default recipe through the real CLI, and checks that the forgetting is real:

* the target genuinely knew the forget facts (greedy exact match on the forget split ≥ 0.8);
* forget_prob falls by at least half;
* model_utility stays ≥ 0.8× its value before;
* forget_quality after > before.
"""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_run_forgets_and_keeps_utility(tmp_path):
    env = {**os.environ, "UNLEARNKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "run", "--out", str(out), "-q"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    before, after = report["before"], report["after"]

    info = json.loads(next((tmp_path / "cache").glob("world-*/info.json")).read_text())
    assert info["target"]["exact_match_forget"] >= 0.8, info["target"]
    assert info["retain"]["exact_match_forget"] <= 0.1, info["retain"]  # it never saw them

    assert after["forget_prob"] <= 0.5 * before["forget_prob"], (before["forget_prob"], after["forget_prob"])
    assert after["model_utility"] >= 0.8 * before["model_utility"], (before["model_utility"], after["model_utility"])
    assert after["forget_quality"] > before["forget_quality"], (before["forget_quality"], after["forget_quality"])
    assert (out / "report.md").read_text().count("|") > 20
    assert (out / "model" / "model.safetensors").is_file()
