"""The manifest in eval.json / report.json: package versions, source commit, device, dtypes, seeds, and
content digests of the model weights and of every data file the command read."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cache import file_digest
from unlearnkit.cli import app

pytestmark = pytest.mark.usefixtures("isolated_env")


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_eval_records_versions_device_seeds_and_digests_of_what_it_read(env, tmp_path, cache_dir):
    from unlearnkit.world.build import ensure_world

    target = ensure_world(cache_dir, size="small", progress=False, log=lambda m: None).target_dir
    data = tmp_path / "tofu"
    data.mkdir()
    qa = [{"question": f"Question {i}?", "answer": f"Answer {i}."} for i in range(3)]
    perturbed = [{**row, "paraphrased_answer": "P.", "perturbed_answer": ["W.", "X."],
                  "paraphrased_question": "Q?"} for row in qa]
    for name, rows in {"forget01_perturbed": perturbed, "retain_perturbed": perturbed,
                       "real_authors_perturbed": perturbed, "world_facts_perturbed": perturbed,
                       "retain99": qa, "holdout01": qa}.items():
        (data / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "unused.json").write_text("{}")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--model", str(target), "-b", "tofu", "--data-dir", str(data),
                                      "--forget-split", "forget01", "--max-new-tokens", "4", "--out", str(out), "-q"],
                                env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    manifest = json.loads((out / "eval.json").read_text())["manifest"]
    assert manifest["packages"]["torch"] and manifest["packages"]["transformers"]
    assert "unlearnkit" in manifest["packages"]  # None when it runs from a source tree without being installed
    source = manifest["unlearnkit_source"]  # this checkout is a git repository
    assert source is None or (len(source["commit"]) == 40 and isinstance(source["dirty"], bool))
    assert manifest["device"]["model_device"] == "cpu" and manifest["dtype"]["weights"] == "float32"
    assert manifest["seeds"]["seed"] == 0
    weights = manifest["models"]["model"]
    assert weights["source"] == "local" and weights["files"] == {"model.safetensors": sha256(target / "model.safetensors")}
    read = {Path(k).name: v for k, v in manifest["data"].items()}
    assert read == {f.name: sha256(f) for f in data.iterdir() if f.name != "unused.json"}  # what it read, only


def test_a_run_records_the_world_build_and_its_model(env, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "world.size=small", "train.steps=1", "attacks.relearn.enabled=false",
                                      "method.name=rmu", "--out", str(out), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    manifest = json.loads((out / "report.json").read_text())["manifest"]
    assert manifest["models"]["model"]["name"] == "world:target"
    assert any(k.endswith("-seed0-small/info.json") for k in manifest["data"])  # the world build it used
    assert manifest["seeds"]["method.seed"] == 0  # RMU's random direction


def test_file_digest_is_remembered_until_the_file_changes(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = file_digest(path, tmp_path / "cache")
    assert first == sha256(path)
    assert file_digest(path, tmp_path / "cache") == first
    path.write_bytes(b"b" * 1000)  # same size, new content and modification time
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert file_digest(path, tmp_path / "cache") == sha256(path) != first


def test_a_hub_cache_blob_is_named_by_its_digest_and_not_read(tmp_path):
    name = "ab" * 32
    blob = tmp_path / "models--org--m" / "blobs" / name
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"whatever: the hub named it by its SHA-256")
    snapshot = tmp_path / "models--org--m" / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    assert file_digest(snapshot / "model.safetensors", tmp_path / "cache") == f"sha256:{name}"


def test_a_hub_dataset_is_recorded_by_the_content_it_served(monkeypatch):
    """Id and revision say what was asked for; the rows' SHA-256 says what came back (a hub dataset can change
    under the same revision name, e.g. `main`)."""
    import datasets

    from unlearnkit.data.tofu import load_split
    from unlearnkit.manifest import recording_reads

    served = [{"question": "Q?", "answer": "A."}]

    class Split:
        def to_list(self):
            return [dict(row) for row in served]

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Split())
    with recording_reads() as first:
        load_split("forget01")
    served[0]["answer"] = "B."
    with recording_reads() as second:
        load_split("forget01")
    (key, record), = first.items()
    assert key == "hub:locuslab/TOFU/forget01" and record["revision"] == "default" and record["rows"] == 1
    assert record["sha256"] == hashlib.sha256(json.dumps([{"answer": "A.", "question": "Q?"}], sort_keys=True)
                                              .encode()).hexdigest()
    assert second[key]["sha256"] != record["sha256"]
