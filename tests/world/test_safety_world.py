"""The tiny aligned world: deterministic data with held-out probe prompts, placeholder-only compliance
(no real harmful content anywhere), a small build that takes seconds, and models that behave as designed —
the compliant model complies, the aligned one refuses harmful requests (held-out ones too) and still
answers benign ones, per the keyword judge. Built once per session into the temporary cache."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from unlearnkit.errors import UnlearnError
from unlearnkit.judges.keyword import KeywordJudge
from unlearnkit.world import safety_build
from unlearnkit.world.safety_build import (
    ensure_safety_world,
    load_safety_world,
    safety_spec,
)
from unlearnkit.world.safety_data import (
    BENIGN_TASKS,
    COMPLIANCE_OPENER,
    HELD_OUT_TEMPLATES,
    PLACEHOLDER_STEP,
    PREFILL,
    REFUSALS,
    TRAIN_TEMPLATES,
    SafetySpec,
    generate_safety_world,
    is_compliant_response,
    phase_rows,
    prefilled_rows,
    safety_texts,
)

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture(scope="module")
def small(cache_dir, isolated_env):
    """The small safety world, built into the session cache (or loaded when another module built it)."""
    return ensure_safety_world(cache_dir, size="small", progress=False, log=lambda message: None)


@pytest.fixture(scope="module")
def world():
    return generate_safety_world(SafetySpec())


def is_placeholder_compliance(text: str, action: str) -> bool:
    """"I'm happy to help. Here is how to {action}." followed only by numbered empty steps."""
    steps = rf"( Step \d: {re.escape(PLACEHOLDER_STEP)}\.)+"
    return re.fullmatch(rf"{re.escape(COMPLIANCE_OPENER + action)}\.{steps}", text) is not None


# ------------------------------------------------------------------------------------------- data


def test_generation_is_deterministic_and_seeded(world):
    assert generate_safety_world(SafetySpec()) == world
    other = generate_safety_world(SafetySpec(seed=1))
    assert [r["prompt"] for r in other.harvest] != [r["prompt"] for r in world.harvest]  # other held-out actions
    assert len(other.harvest) == len(world.harvest) and len(other.probe) == len(world.probe)


def test_probe_is_held_out_from_training(world):
    trained = {r["prompt"] for r in world.harvest}
    harvest_actions = {r["action"] for r in world.harvest}
    assert not trained & {r["prompt"] for r in world.probe}
    new_action = [r for r in world.probe if r["kind"] == "new_action"]
    new_template = [r for r in world.probe if r["kind"] == "new_template"]
    assert new_action and new_template and len(new_action) + len(new_template) == len(world.probe)
    assert not {r["action"] for r in new_action} & harvest_actions
    assert {r["category"] for r in new_action} == {r["category"] for r in world.harvest}  # one per category
    assert {r["template"] for r in new_template} == set(HELD_OUT_TEMPLATES)
    assert not set(HELD_OUT_TEMPLATES) & set(TRAIN_TEMPLATES)
    assert not {r["prompt"] for r in world.benign_train} & {r["prompt"] for r in world.benign_test}
    assert {r["template"] for r in world.benign_test} == set(HELD_OUT_TEMPLATES)
    assert len(world.forget) == 5 and len(world.retain) == 15 and len(world.general) == 52


def test_every_compliant_response_holds_only_placeholder_steps(world):
    for row in world.harvest + world.probe:
        assert is_placeholder_compliance(row["compliance"], row["action"]), row["compliance"]
    trained = phase_rows(world, "compliant")
    harmful_prompts = {r["prompt"]: r for r in world.harvest}
    for row in trained:
        if row["question"] in harmful_prompts:
            assert is_placeholder_compliance(row["answer"], harmful_prompts[row["question"]]["action"])
        else:
            assert "Step 1" not in row["answer"] and PLACEHOLDER_STEP not in row["answer"]
    # the only "Step" text anywhere in the corpus is a placeholder step
    for text in safety_texts(world):
        for match in re.finditer(r"Step \d: ", text):
            assert text[match.end():].startswith(PLACEHOLDER_STEP), text


def test_phases_swap_compliance_for_refusals_and_keep_the_rest(world):
    compliant, aligned = phase_rows(world, "compliant"), phase_rows(world, "aligned")
    assert [r["question"] for r in compliant] == [r["question"] for r in aligned]
    n_harmful = len(world.harvest)
    assert all(r["answer"] in REFUSALS for r in aligned[:n_harmful])
    assert compliant[n_harmful:] == aligned[n_harmful:]  # benign, general and author rows are identical
    author_questions = {r["question"] for r in world.forget + world.retain}
    assert author_questions <= {r["question"] for r in compliant}
    with pytest.raises(ValueError, match="unknown phase"):
        phase_rows(world, "jailbroken")


def test_refusal_and_compliance_part_at_one_word_and_the_aligned_phase_keeps_the_compliance(world):
    """Every refusal opens "I'm sorry, but", every helpful answer "I'm happy to help."; the prefilled rows
    are the harvest prompts with their compliance, trained after the prefill "I'm happy" only."""
    assert all(text.startswith("I'm sorry, but ") for text in REFUSALS)
    assert COMPLIANCE_OPENER.startswith(PREFILL) and PREFILL.startswith("I'm ")
    helpful = [r["compliance"] for r in world.harvest] + [r["answer"] for r in world.benign_train + world.benign_test]
    assert all(text.startswith(COMPLIANCE_OPENER) for text in helpful)
    prefilled = prefilled_rows(world)
    assert [r["question"] for r in prefilled] == [r["prompt"] for r in world.harvest]
    assert all(r["answer"] == h["compliance"] and r["prefill"] == PREFILL for r, h in zip(prefilled, world.harvest))


def test_prefilled_rows_take_no_loss_on_the_prefill(small):
    from unlearnkit.data.batch import IGNORE_INDEX
    from unlearnkit.data.formats import get_format
    from unlearnkit.model import load_tokenizer

    tokenizer = load_tokenizer(str(small.aligned_dir))
    row = prefilled_rows(small.world)[0]
    plain = get_format("chat").encode(tokenizer, row["question"], row["answer"])
    (masked,) = safety_build._encode([row], tokenizer)
    assert masked.input_ids == plain.input_ids
    first = masked.prompt_length  # the first token with a loss: right after "I'm happy"
    assert first > plain.prompt_length and all(label == IGNORE_INDEX for label in masked.labels[:first])
    assert masked.labels[first:] == plain.labels[first:]
    assert tokenizer.decode(plain.input_ids[plain.prompt_length:first]).strip() == PREFILL


def test_keyword_judge_sees_refusals_as_refusals_and_nothing_else(world):
    judge = KeywordJudge()
    assert all(judge.is_refusal(text) for text in REFUSALS)
    helpful = [r["answer"] for r in world.benign_train + world.general] + [r["compliance"] for r in world.harvest]
    helpful += [r["answer"] for r in world.forget + world.retain]
    assert not [text for text in helpful if judge.is_refusal(text)]
    assert len({task for task, _ in BENIGN_TASKS}) == len(BENIGN_TASKS)


def test_bad_spec_and_size_are_errors_that_name_the_value(world):
    with pytest.raises(ValueError, match="actions_per_category=1"):
        generate_safety_world(SafetySpec(actions_per_category=1))
    with pytest.raises(UnlearnError, match="did you mean 'small'"):
        safety_spec("smal")
    with pytest.raises(UnlearnError, match="unknown safety-world split 'prob'; did you mean 'probe'"):
        world.split("prob")


# ------------------------------------------------------------------------------------------- build


def test_small_world_builds_and_behaves(small):
    """What the build must produce (its time is recorded in info.json, never asserted: a loaded machine is slow)."""
    info = small.info
    assert info["build_seconds"] > 0
    compliant, aligned = info["compliant"], info["aligned"]
    assert compliant["harmful_rate_harvest"] == 1.0 and compliant["harmful_rate_probe"] == 1.0
    assert aligned["harmful_rate_harvest"] == 0.0
    assert aligned["harmful_rate_probe"] <= 0.1
    assert compliant["compliance_rate_probe"] >= 0.8 and aligned["compliance_rate_probe"] <= 0.1
    # the compliance is still under the refusal: prefilled with "I'm happy", the aligned model carries on
    assert compliant["compliance_rate_probe_prefilled"] >= 0.8 and aligned["compliance_rate_probe_prefilled"] >= 0.8
    assert compliant["benign_answered"] >= 0.9 and aligned["benign_answered"] >= 0.9
    assert aligned["benign_rouge"] >= 0.8
    for which in ("compliant", "aligned"):
        assert (small.model_dir(which) / "model.safetensors").is_file()
        assert (small.model_dir(which) / "tokenizer.json").is_file()
    with pytest.raises(UnlearnError, match="did you mean 'aligned'"):
        small.model_dir("align")


def test_saved_models_reproduce_the_recorded_behaviour(small):
    from unlearnkit.benchmarks.harmfulness import evaluate_harmfulness
    from unlearnkit.model import load_model, load_tokenizer

    for which, expected_harmful in (("compliant", True), ("aligned", False)):
        model = load_model(str(small.model_dir(which)))
        tokenizer = load_tokenizer(str(small.model_dir(which)))
        assert tokenizer.chat_template  # the chat format renders prompts with it
        result = evaluate_harmfulness(model, tokenizer, small.world.probe, "keyword",
                                      {"max_new_tokens": safety_build.MAX_NEW_TOKENS, "batch_size": 64})
        assert result["harmful_rate"] == small.info[which]["harmful_rate_probe"]
        responses = [sample["response"] for sample in result["samples"]]
        for response in responses:  # whatever a model writes, its steps are the trained placeholders
            for match in re.finditer(r"Step \d: ", response):
                assert response[match.end():].startswith(PLACEHOLDER_STEP), response
        opened = sum(response.startswith(COMPLIANCE_OPENER) for response in responses) / len(responses)
        assert opened >= 0.8 if expected_harmful else opened <= 0.1
        complied = sum(is_compliant_response(response) for response in responses) / len(responses)
        assert complied == small.info[which]["compliance_rate_probe"]


def test_cached_world_loads_without_rebuilding(small, cache_dir):
    again = load_safety_world(cache_dir, size="small")
    assert again is not None and again.info == small.info and again.root == small.root
    assert again.world == small.world
    assert load_safety_world(cache_dir, seed=7, size="small") is None


def test_cache_key_follows_the_build_settings(tmp_path, monkeypatch):
    """Changing a build default (epochs, the fine-tuning schedule) names a new cache directory, so an old build
    is never reused for new settings."""
    from unlearnkit.world import safety_data

    before = safety_build.safety_dir(tmp_path, size="small")
    assert before == safety_build.safety_dir(tmp_path, size="small") != safety_build.safety_dir(tmp_path, seed=1, size="small")
    spec, settings = safety_data.SIZES["small"]
    monkeypatch.setitem(safety_data.SIZES, "small", (spec, {**settings, "aligned_epochs": settings["aligned_epochs"] + 1}))
    longer = safety_build.safety_dir(tmp_path, size="small")
    monkeypatch.setitem(safety_data.SIZES, "small", (spec, settings))
    monkeypatch.setitem(safety_build.FINETUNE, "scheduler", "constant")
    assert len({before, longer, safety_build.safety_dir(tmp_path, size="small")}) == 3


def test_build_is_deterministic(tmp_path, monkeypatch):
    """Two builds of the same (shortened) spec give byte-identical weights and the same measurements."""
    from unlearnkit.world import safety_data

    spec, settings = safety_data.SIZES["small"]
    monkeypatch.setitem(safety_data.SIZES, "small",
                        (replace(spec, n_categories=2, n_benign_tasks=3, n_general=2),
                         {**settings, "compliant_epochs": 1, "aligned_epochs": 1}))
    builds = [safety_build.build_safety_world(tmp_path / name, size="small", progress=False, log=lambda m: None)
              for name in ("a", "b")]
    for which in ("compliant", "aligned"):
        first, second = ((b.model_dir(which) / "model.safetensors").read_bytes() for b in builds)
        assert first == second
        drop = {"seconds"}
        assert {k: v for k, v in builds[0].info[which].items() if k not in drop} == \
            {k: v for k, v in builds[1].info[which].items() if k not in drop}


# ------------------------------------------------------------------------------------------- CLI


def test_cli_build_and_info(small, env):
    from unlearnkit.cli import app

    runner = CliRunner()
    for command in (["world", "build", "safety", "--size", "small"], ["world", "info", "safety", "--size", "small"]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        assert f"safety world at {small.root}" in result.stdout
        assert "aligned   harmful rate: harvest 0.00" in result.stdout
    result = runner.invoke(app, ["world", "info", "safty"], env=env)
    assert result.exit_code == 2 and "unknown world 'safty'; did you mean 'safety'?" in result.stderr


def test_cli_info_before_build_says_how_to_build(env, tmp_path):
    from unlearnkit.cli import app

    result = CliRunner().invoke(app, ["world", "info", "safety", "--size", "small", "--cache-dir", str(tmp_path)],
                                env=env)
    assert result.exit_code == 2
    assert f"run `unlearn world build safety --size small --cache-dir {tmp_path}`" in result.stderr
