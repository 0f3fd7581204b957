"""Two data-parallel ranks (torchrun, gloo, CPU) through the one trainer.

Checks the known OpenUnlearning bug does not happen here: every rank must train on *different*
retain examples, while the weights stay identical across ranks (DDP all-reduce).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("worker.py")


@pytest.mark.slow
def test_ranks_draw_different_retain_rows_and_stay_in_sync(tmp_path):
    out = tmp_path / "rank"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 4
    for step0, step1 in zip(ranks[0]["seen"], ranks[1]["seen"]):
        assert step0 != step1, "both ranks trained on the same retain examples"
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=0, abs=1e-9)
