"""Fixtures of the bad-input table (test_table.py): an earlier good run's output, and files that are each
wrong in one way (recipes, TOFU folders, request files, model folders, output paths)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app

LATIN1 = "café, naïve, résumé".encode("latin-1")  # not UTF-8
SMALL = "world.size=small"


@pytest.fixture(scope="module", autouse=True)
def _quiet_transformers_like_the_cli():
    """What `unlearnkit.cli.main` sets up for a real command: transformers logs errors only and shows no
    progress bars (imported here first, so its log handler writes to the real stderr, not a runner's)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    yield
    hf_logging.set_verbosity(verbosity)
    if bars:
        hf_logging.enable_progress_bar()



@pytest.fixture(scope="module")
def good(tmp_path_factory, env) -> Path:
    """An earlier successful run (a short one on the small world) whose output every failing case must leave alone."""
    out = tmp_path_factory.mktemp("bad-inputs") / "good"
    result = CliRunner().invoke(app, ["run", "default", SMALL, "train.steps=2", "attacks.relearn.enabled=false",
                                      "--out", str(out), "-q"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "report.json").is_file() and (out / "model").is_dir()
    return out


def _qa(i: int, **extra) -> dict:
    return {"question": f"Question {i}?", "answer": f"Answer {i}.", **extra}


def _perturbed(i: int, **extra) -> dict:
    row = {"paraphrased_answer": f"Paraphrase {i}.", "perturbed_answer": [f"Wrong {i}.", f"Other {i}."],
           "paraphrased_question": f"Paraphrased question {i}?"}
    return _qa(i, **{**row, **extra})


def _tofu_dir(root: Path, **replace: list[dict] | bytes | None) -> None:
    """The six files a forget01 run reads (JSON Lines); `replace` swaps one file's rows or bytes (None: no file)."""
    root.mkdir(parents=True)
    files = {"forget01_perturbed": [_perturbed(i) for i in range(2)],
             "retain_perturbed": [_perturbed(i) for i in range(10, 12)],
             "real_authors_perturbed": [_perturbed(i) for i in range(20, 22)],
             "world_facts_perturbed": [_perturbed(i) for i in range(30, 32)],
             "retain99": [_qa(i) for i in range(3)], "holdout01": [_qa(i) for i in range(3, 5)]}
    for name, rows in {**files, **replace}.items():
        if isinstance(rows, bytes):
            (root / f"{name}.json").write_bytes(rows)
        elif rows is not None:
            (root / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _model_dirs(root: Path, source: Path) -> None:
    """Copies of a good model folder, each broken in one way."""
    root.mkdir(parents=True)
    shutil.copytree(source, root / "good")
    for name in ("truncated", "garbage", "no_weights", "bad_config", "no_config", "no_tokenizer", "bad_tokenizer",
                 "wrong_shapes", "bad_edits"):
        shutil.copytree(source, root / name)
    weights = (source / "model.safetensors").read_bytes()
    (root / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (root / "garbage" / "model.safetensors").write_bytes(b"not a safetensors file" * 20)
    (root / "no_weights" / "model.safetensors").unlink()
    (root / "bad_config" / "config.json").write_text("{not json")
    (root / "no_config" / "config.json").unlink()
    for file in (root / "no_tokenizer").iterdir():
        if file.name.startswith(("tokenizer", "chat_template", "special_tokens", "vocab")):
            file.unlink()
    (root / "bad_tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": 5}}')
    config = json.loads((source / "config.json").read_text())
    config["hidden_size"] *= 2
    (root / "wrong_shapes" / "config.json").write_text(json.dumps(config))
    (root / "a_file").write_bytes(weights[:100])
    (root / "bad_edits" / "edits.json").write_text("{not json")  # a GRUN model's edit file, damaged


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, good) -> Path:
    """Recipes, data folders, request files and model folders, each wrong in one way."""
    from unlearnkit.world.build import load_world

    root = tmp_path_factory.mktemp("bad-files")
    recipes = root / "recipes"
    recipes.mkdir()
    for name, text in {"bad_yaml": "train: {lr: [1, 2\n", "list": "- a\n- b\n", "base_number": "base: 5\n",
                       "grandparent": "train: {lr: 1.0e-3}\n", "parent": "base: grandparent.yaml\n",
                       "child": "base: parent.yaml\n", "missing_base": "base: nowhere.yaml\n",
                       "unknown_key": "train: {lr: 1.0e-3, lrr: 2}\n", "wrong_type": "train: {batch_size: eight}\n",
                       "method_string": "method: npo\n", "beta_zero": "method: {name: npo, beta: 0}\n",
                       "compare": "recipe: default\nmethods: [npo]\n"}.items():
        (recipes / f"{name}.yaml").write_text(text)
    (recipes / "latin1.yaml").write_bytes(b"description: " + LATIN1 + b"\n")

    _tofu_dir(root / "tofu_missing", forget01_perturbed=None)
    _tofu_dir(root / "tofu_empty_answer", forget01_perturbed=[_perturbed(0), _perturbed(1, answer="")])
    _tofu_dir(root / "tofu_blank_question", retain_perturbed=[_perturbed(10, question="   ")])
    _tofu_dir(root / "tofu_holdout_answer", holdout01=[_qa(3), _qa(4, answer="")])
    _tofu_dir(root / "tofu_no_perturbed", forget01_perturbed=[_perturbed(0, perturbed_answer=[])])
    _tofu_dir(root / "tofu_latin1", forget01_perturbed=json.dumps(_perturbed(0)).encode() + b"\n" + LATIN1 + b"\n")
    _tofu_dir(root / "tofu_bad_json", forget01_perturbed=json.dumps(_perturbed(0)).encode() + b'\n{"question": \n')

    requests = root / "requests"
    requests.mkdir()
    (requests / "empty_text.jsonl").write_text('{"text": "Please forget this."}\n{"text": ""}\n')
    (requests / "empty_answer.jsonl").write_text('{"question": "Who?", "answer": " "}\n')
    (requests / "not_json.jsonl").write_text('{"text": "ok"}\n{text: no quotes}\n')
    (requests / "latin1.jsonl").write_bytes(b'{"text": "' + LATIN1 + b'"}\n')
    (requests / "latin1.txt").write_bytes(LATIN1 + b"\n")
    (requests / "object.json").write_text('{"text": "one request, not a list"}')
    (requests / "generic_blank.json").write_text('["a generic text", "  "]')

    out = root / "out"  # output paths: a user's folder and file, a link, ours with a user's file, ...
    (out / "user" / "src").mkdir(parents=True)
    (out / "user" / "src" / "main.py").write_text("print('mine')\n")
    (out / "plain.txt").write_text("my notes\n")
    (out / "link").symlink_to(out / "user")
    shutil.copytree(good, out / "ours")
    (out / "ours" / "notes.txt").write_text("mine")
    (out / "theirs.partial").mkdir()
    (out / "logs.json").write_text('{"forget_truth_ratios": [0.5, "high"]}')
    world = load_world(None, 0, "small")  # built by the `good` run, in the session's cache
    _model_dirs(root / "models", world.model_dir("target"))
    for name, text in {"wmdp": json.dumps([{"question": "Q?", "choices": ["a", "b"], "answer": 0}]),
                       "wmdp_bad": "[{not json"}.items():
        (root / name).mkdir()
        (root / name / "bio_questions.json").write_text(text)
        (root / name / "cyber_questions.json").write_text(text)
    return root


