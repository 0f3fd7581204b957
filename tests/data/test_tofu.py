"""TOFU loader: real files from ../shared/data/tofu (skipped when absent) and error messages on bad
data written to temporary folders. Offline: nothing here touches the Hugging Face hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unlearnkit.data.tofu import (  # noqa: E402  (HF_HUB_OFFLINE must be set before any HF import)
    BUILTIN_IDK_ANSWERS,
    TofuSplits,
    load_idk,
    load_split,
    load_tofu,
    required_keys,
    shared_tofu_dir,
)
from unlearnkit.errors import UnlearnError  # noqa: E402

PERTURBED_KEYS = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"}


@pytest.fixture(scope="module")
def tofu_dir() -> Path:
    directory = shared_tofu_dir()
    if directory is None:
        pytest.skip("shared/data/tofu not found next to the checkout")
    return directory


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


QA_ROW = json.dumps({"question": "Who wrote X?", "answer": "Y."})


# --- real files ---------------------------------------------------------------------------------


def test_forget01_perturbed_schema(tofu_dir: Path) -> None:
    rows = load_split("forget01_perturbed", tofu_dir)
    assert len(rows) == 40
    for row in rows:
        assert PERTURBED_KEYS <= set(row)
        assert isinstance(row["perturbed_answer"], list) and len(row["perturbed_answer"]) == 5


def test_forget10_size(tofu_dir: Path) -> None:
    assert len(load_split("forget10", tofu_dir)) == 400


def test_load_tofu_forget01_sizes(tofu_dir: Path) -> None:
    splits = load_tofu("forget01", tofu_dir)
    assert isinstance(splits, TofuSplits) and splits.name == "forget01"
    sizes = (len(splits.forget), len(splits.retain), len(splits.real_authors), len(splits.world_facts))
    assert sizes == (40, 400, 100, 117)
    assert splits.holdout is not None and len(splits.holdout) == 40
    assert splits.retain_train is not None and len(splits.retain_train) == 3960
    assert "forget=40" in repr(splits) and "retain_train=3960" in repr(splits)
    assert load_tofu("forget01", tofu_dir, with_train_retain=False).retain_train is None


def test_full_is_retain99_then_forget01(tofu_dir: Path) -> None:
    questions = lambda name: [row["question"] for row in load_split(name, tofu_dir)]  # noqa: E731
    assert questions("full") == questions("retain99") + questions("forget01")


def test_multiple_choice_schema(tofu_dir: Path) -> None:
    rows = load_split("world_facts", tofu_dir)
    assert len(rows) == 117
    assert all(row["answer"] in [row[f"option{i}"] for i in range(1, 5)] for row in rows)


def test_idontknow_is_plain_text(tofu_dir: Path) -> None:
    answers = load_idk(tofu_dir / "idontknow.jsonl")
    assert len(answers) == 100
    assert all(answer and answer == answer.strip() for answer in answers)


def test_builtin_idk_answers() -> None:
    answers = load_idk()
    assert answers == list(BUILTIN_IDK_ANSWERS) and len(answers) >= 15
    assert len(set(answers)) == len(answers)


def test_missing_holdout_is_none(tofu_dir: Path, tmp_path: Path) -> None:
    for name in ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        (tmp_path / f"{name}.json").symlink_to(tofu_dir / f"{name}.json")
    splits = load_tofu("forget01", tmp_path, with_train_retain=False)
    assert splits.holdout is None and len(splits.forget) == 40


# --- formats ------------------------------------------------------------------------------------


def test_json_array_and_jsonl_accepted(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    (tmp_path / "forget01.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    assert load_split("forget01", tmp_path) == rows
    write_lines(tmp_path / "retain99.jsonl", [json.dumps(row) for row in rows] + [""])
    assert load_split("retain99", tmp_path) == rows


def test_required_keys_by_split_kind() -> None:
    assert required_keys("full") == required_keys("holdout10") == ("question", "answer")
    assert set(required_keys("retain_perturbed")) == PERTURBED_KEYS
    assert required_keys("world_facts_perturbed") == ("question", "answer", "perturbed_answer")
    assert "option4" in required_keys("real_authors")


# --- errors -------------------------------------------------------------------------------------


def test_unknown_forget_split_suggests_near_miss() -> None:
    with pytest.raises(UnlearnError) as caught:
        load_tofu("forget1", "/nonexistent")
    message = str(caught.value)
    assert "'forget1'" in message and "did you mean 'forget01'" in message
    assert "forget01, forget05, forget10" in message


def test_malformed_line_gives_file_and_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "file.json", [QA_ROW, '{"question": "q", "answer" "a"}', QA_ROW])
    with pytest.raises(UnlearnError) as caught:
        load_split("file", tmp_path)
    message = str(caught.value)
    assert "file.json:2: not valid JSON" in message and "Expecting ':'" in message


def test_malformed_json_array_gives_line(tmp_path: Path) -> None:
    (tmp_path / "full.json").write_text('[\n{"question": "q", "answer": "a"},\n{"question": }\n]')
    with pytest.raises(UnlearnError, match=r"full\.json:3: not valid JSON"):
        load_split("full", tmp_path)


def test_missing_file_lists_present_splits(tmp_path: Path) -> None:
    write_lines(tmp_path / "forget01.json", [QA_ROW])
    write_lines(tmp_path / "retain99.json", [QA_ROW])
    (tmp_path / "idontknow.jsonl").write_text("I don't know.\n")
    with pytest.raises(UnlearnError) as caught:
        load_split("forget10", tmp_path)
    message = str(caught.value)
    assert "'forget10' not found" in message and "present: forget01, retain99;" in message
    assert "idontknow" not in message and "--data-dir" in message


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UnlearnError, match="does not exist; pass --data-dir"):
        load_split("full", tmp_path / "nowhere")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "forget05.json").write_text("\n\n")
    with pytest.raises(UnlearnError, match=r"forget05\.json has no rows"):
        load_split("forget05", tmp_path)


def test_missing_keys_name_keys_and_row(tmp_path: Path) -> None:
    partial = {"question": "q", "answer": "a", "perturbed_answer": ["b"]}
    complete = partial | {"paraphrased_answer": "p", "paraphrased_question": "pq"}
    write_lines(tmp_path / "forget01_perturbed.json", [json.dumps(complete), json.dumps(partial)])
    with pytest.raises(UnlearnError) as caught:
        load_split("forget01_perturbed", tmp_path)
    message = str(caught.value)
    assert "forget01_perturbed.json:2: row 2 is missing paraphrased_answer, paraphrased_question" in message


def test_perturbed_answer_must_be_list(tmp_path: Path) -> None:
    write_lines(tmp_path / "world_facts_perturbed.json", [json.dumps({"question": "q", "answer": "a",
                                                                      "perturbed_answer": "b"})])
    with pytest.raises(UnlearnError, match="perturbed_answer of type str; it must be a list"):
        load_split("world_facts_perturbed", tmp_path)


def test_non_object_row(tmp_path: Path) -> None:
    write_lines(tmp_path / "full.json", [QA_ROW, '["q", "a"]'])
    with pytest.raises(UnlearnError, match=r"full\.json:2: row 2 is a list, not a JSON object"):
        load_split("full", tmp_path)


def test_missing_idk_file(tmp_path: Path) -> None:
    with pytest.raises(UnlearnError, match="not found; pass a plain-text file"):
        load_idk(tmp_path / "idk.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(UnlearnError, match="has no non-empty lines"):
        load_idk(tmp_path / "blank.txt")


def test_hub_failure_suggests_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(UnlearnError) as caught:
        load_split("forget10")
    message = str(caught.value)
    assert "from the Hugging Face hub (locuslab/TOFU)" in message and "OfflineModeIsEnabled" in message
    assert "--data-dir" in message
