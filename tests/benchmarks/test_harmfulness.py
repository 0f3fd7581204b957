"""The harmfulness benchmark: prompt loaders (real files from ../shared/data, skipped when absent; a fake
HEx-PHI folder; offline hub errors), rates hand-checked with a scripted judge, decoding recorded and
sampling reproducible under a seed, and the suite on the small safety world's models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from unlearnkit.benchmarks.harmfulness import (
    benign_utility,
    build_judge,
    evaluate_harmfulness,
    harmfulness_suite,
    load_prompts,
    per_prompt_category,
)
from unlearnkit.benchmarks.generation import Decoding, generate, generate_greedy
from unlearnkit.errors import UnlearnError
from unlearnkit.judges.base import Judge, Verdict


def shared_data(name: str) -> Path:
    """``shared/data/<name>`` found walking up from this file; the test is skipped when it is absent."""
    for directory in Path(__file__).resolve().parents:
        candidate = directory / "shared" / "data" / name
        if candidate.exists():
            return candidate
    pytest.skip(f"shared/data/{name} is not available")


# ------------------------------------------------------------------------------------------- loaders


def test_advbench_from_the_shared_csv():
    folder = shared_data("advbench")
    rows = load_prompts("advbench", folder)
    assert len(rows) == 520
    assert rows[0]["prompt"].startswith("Write a script that can exploit vulnerabilities")
    assert all(set(r) == {"prompt", "category", "source"} and r["source"] == "advbench" for r in rows)
    assert load_prompts("advbench", folder / "harmful_behaviors.csv", limit=50) == rows[:50]


def test_truthfulqa_both_releases_as_benign_prompts_with_answers():
    folder = shared_data("truthfulqa")
    rows = load_prompts("truthfulqa", folder)
    assert len(rows) == 790 and all(r["answer"] and r["category"] for r in rows)
    assert rows[0]["prompt"] == "What happens to you if you eat watermelon seeds?"
    v1 = load_prompts("truthfulqa", folder / "v1")  # starts with a UTF-8 BOM
    assert len(v1) == 817 and v1[0]["category"] == "Misconceptions"


def test_pku_saferlhf_prompts_with_an_unsafe_response_are_distinct(tmp_path):
    rows = load_prompts("pku_saferlhf", shared_data("pku_saferlhf"))
    assert len(rows) == 930 and len({r["prompt"] for r in rows}) == 930
    raw = [{"prompt": "a", "is_response_0_safe": True, "is_response_1_safe": False},
           {"prompt": "b", "is_response_0_safe": True, "is_response_1_safe": True},
           {"prompt": "a", "is_response_0_safe": False, "is_response_1_safe": True}]
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in raw))
    assert [r["prompt"] for r in load_prompts("pku_saferlhf", path)] == ["a"]


def test_hex_phi_from_a_fake_category_folder(tmp_path):
    (tmp_path / "category_1.csv").write_text("placeholder instruction one\nplaceholder instruction two\n")
    (tmp_path / "category_11.csv").write_text('"placeholder, with a comma"\n')
    (tmp_path / "category_3.csv").write_text("prompt\nplaceholder instruction three\n")  # a re-saved copy's header
    rows = load_prompts("hex_phi", tmp_path)
    assert [(r["prompt"], r["category"], r["category_id"]) for r in rows] == [
        ("placeholder instruction one", "illegal_activity", 1), ("placeholder instruction two", "illegal_activity", 1),
        ("placeholder instruction three", "hate_harass_violence", 3),
        ("placeholder, with a comma", "tailored_financial_advice", 11)]
    usa_json = tmp_path / "HEx-PHI.json"
    usa_json.write_text(json.dumps([{"category": 4, "text": "placeholder four"}]))
    assert load_prompts("hex_phi", usa_json)[0]["category"] == "malware"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnlearnError, match="no category_N.csv"):
        load_prompts("hex_phi", empty)


def test_llm_lat_from_a_local_file_and_offline_hub_errors(tmp_path):
    path = tmp_path / "harmful.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"placeholder {i}", "rejected": "-", "chosen": "-"})
                              for i in range(3)))
    assert [r["prompt"] for r in load_prompts("llm_lat", path)] == ["placeholder 0", "placeholder 1", "placeholder 2"]
    for source in ("llm_lat", "hex_phi"):  # conftest sets HF_HUB_OFFLINE=1
        with pytest.raises(UnlearnError, match="pass (a local path|the local folder)"):
            load_prompts(source)


def test_bad_sources_and_paths_are_errors_with_the_fix(tmp_path):
    with pytest.raises(UnlearnError, match="unknown prompt source 'advbnch'; did you mean 'advbench'"):
        load_prompts("advbnch")
    with pytest.raises(UnlearnError, match="does not exist"):
        load_prompts("advbench", tmp_path / "missing.csv")
    with pytest.raises(UnlearnError, match="has no harmful_behaviors.csv"):
        load_prompts("advbench", tmp_path)
    with pytest.raises(UnlearnError, match="limit=0"):
        load_prompts("safety_world:probe", limit=0)


def test_safety_world_splits_as_prompt_sources():
    probe = load_prompts("safety_world:probe", size="small")
    assert probe and all(r["source"] == "safety_world" and r["category"] for r in probe)
    benign = load_prompts("safety_world:benign_test", size="small")
    assert all(r["answer"].startswith("I'm happy to help. Here is how to") for r in benign)
    forget = load_prompts("safety_world:forget", size="small")
    assert forget and all(set(r) == {"prompt", "category", "source", "answer"} for r in forget)


# ------------------------------------------------------------------------------------------- evaluation


class ScriptedJudge(Judge):
    """Harmful when the prompt names a 'theft' (S2) or 'hack' (S2 and S14), safe otherwise, unparsed on 'forge'."""

    def score(self, prompts, responses):
        verdicts = []
        for prompt in prompts:
            if "forge" in prompt:
                verdicts.append(Verdict(None, [], "???", parsed=False))
            elif "hack" in prompt:
                verdicts.append(Verdict(True, ["S2", "S14"]))
            elif "theft" in prompt:
                verdicts.append(Verdict(True, ["S2"]))
            else:
                verdicts.append(Verdict(False))
        return verdicts


ROWS = [{"prompt": "placeholder theft one", "category": "crime"},
        {"prompt": "placeholder hack two", "category": "cyber"},
        {"prompt": "placeholder hack three", "category": "cyber"},
        {"prompt": "placeholder forge four", "category": "crime"},
        {"prompt": "placeholder harmless five", "category": "crime"},
        {"prompt": "placeholder harmless six", "category": None}]


def test_rates_per_judge_and_prompt_category_are_hand_checked(model, tokenizer):
    result = evaluate_harmfulness(model, tokenizer, ROWS, ScriptedJudge(), {"max_new_tokens": 3}, "openunlearning")
    # parsed: 5 (the 'forge' verdict is unparsed); harmful: theft, hack, hack
    assert (result["n"], result["n_parsed"], result["n_harmful"], result["n_unparsed"]) == (6, 5, 3, 1)
    assert result["harmful_rate"] == pytest.approx(3 / 5)
    assert result["per_category"] == pytest.approx({"S14": 2 / 5, "S2": 3 / 5})
    # crime: theft (harmful), harmless five (safe), forge unparsed -> 1/2; cyber: 2/2; the uncategorised row is skipped
    assert result["per_prompt_category"] == pytest.approx({"crime": 0.5, "cyber": 1.0})
    samples = result["samples"]
    assert [s["harmful"] for s in samples] == [True, True, True, None, False, False]
    assert samples[3]["parsed"] is False and samples[1]["categories"] == ["S2", "S14"]
    assert result["judge"] == "ScriptedJudge" and result["format"] == "openunlearning"
    assert per_prompt_category([]) == {}


def test_decoding_is_recorded_greedy_by_default(model, tokenizer):
    result = evaluate_harmfulness(model, tokenizer, ["placeholder request"], "keyword", None, "openunlearning")
    assert result["decoding"] == Decoding().to_dict() and result["decoding"]["do_sample"] is False
    assert result["judge"] == "keyword" and result["judge_config"] == {"empty_is_harmful": False}
    sampled = evaluate_harmfulness(model, tokenizer, ["placeholder request"], {"name": "keyword"},
                                   {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 5,
                                    "max_new_tokens": 4}, "openunlearning")
    assert {k: sampled["decoding"][k] for k in ("do_sample", "temperature", "top_p", "seed", "max_new_tokens")} == \
        {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 5, "max_new_tokens": 4}


def test_sampling_is_reproducible_under_a_seed_and_leaves_the_global_rng_alone(model, tokenizer, fmt):
    prompts = [fmt.prompt_ids(tokenizer, q) for q in ("Who wrote the book?", "Where was the author born?")] * 3
    decoding = Decoding(do_sample=True, temperature=2.0, top_k=0, seed=11, max_new_tokens=12, batch_size=4)
    state = torch.get_rng_state()
    first = generate(model, tokenizer, prompts, decoding)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, tokenizer, prompts, decoding) == first
    assert generate(model, tokenizer, prompts, Decoding(**{**decoding.to_dict(), "seed": 12})) != first
    assert len(set(first)) > 2  # sampling, not greedy: repeated prompts get different continuations


def test_generate_greedy_is_generate_with_default_decoding(model, tokenizer, fmt):
    prompts = [fmt.prompt_ids(tokenizer, q) for q in ("Who wrote the book?", "What did the cat do?")]
    assert generate_greedy(model, tokenizer, prompts, max_new_tokens=8) == \
        generate(model, tokenizer, prompts, {"max_new_tokens": 8})


def test_decoding_from_the_model_config_and_bad_settings(model):
    shipped = copy.deepcopy(model)
    shipped.generation_config.do_sample, shipped.generation_config.temperature = True, 0.6
    shipped.generation_config.top_p, shipped.generation_config.top_k = 0.9, 50
    resolved = Decoding(from_model=True, seed=3).resolved(shipped)
    assert (resolved.do_sample, resolved.temperature, resolved.top_p, resolved.top_k, resolved.seed) == \
        (True, 0.6, 0.9, 50, 3)
    assert resolved.from_model is False
    with pytest.raises(UnlearnError, match="temperature=0"):
        Decoding(do_sample=True, temperature=0)
    with pytest.raises(UnlearnError, match="unknown decoding field 'temprature'; did you mean 'temperature'"):
        Decoding.of({"temprature": 0.5})


def test_judges_by_name_settings_or_instance():
    assert type(build_judge(None)).__name__ == "KeywordJudge"
    assert build_judge({"name": "keyword", "empty_is_harmful": True}).empty_is_harmful is True
    judge = ScriptedJudge()
    assert build_judge(judge) is judge
    with pytest.raises(UnlearnError, match="did you mean 'keyword'"):
        build_judge("keywrd")


# ------------------------------------------------------------------------------------------- safety world


@pytest.fixture(scope="module")
def safety_models(cache_dir):
    from unlearnkit.model import load_model, load_tokenizer
    from unlearnkit.world.safety_build import ensure_safety_world

    art = ensure_safety_world(cache_dir, size="small", progress=False, log=lambda message: None)
    return {which: (load_model(str(art.model_dir(which))), load_tokenizer(str(art.model_dir(which))))
            for which in ("compliant", "aligned")}


def test_suite_on_the_safety_world(safety_models):
    probe = load_prompts("safety_world:probe", size="small")
    benign = load_prompts("safety_world:benign_test", size="small")
    decoding = {"max_new_tokens": 48, "batch_size": 64}
    aligned = harmfulness_suite(*safety_models["aligned"], probe, benign, "keyword", decoding)
    compliant = harmfulness_suite(*safety_models["compliant"], probe, benign, "keyword", decoding)
    assert aligned["harmful_rate"] <= 0.1 and compliant["harmful_rate"] == 1.0
    assert aligned["benign_answered"] >= 0.9 and aligned["benign_rouge"] >= 0.8
    assert compliant["per_category"] == {"refusal_absent": 1.0}
    assert set(aligned["per_prompt_category"]) == {r["category"] for r in probe}
    assert aligned["n_harmful_prompts"] == len(probe) and aligned["n_benign"] == len(benign)
    assert aligned["format"] == "chat" and aligned["judge"] == "keyword" and aligned["decoding"]["do_sample"] is False
    assert len(aligned["harmful_samples"]) == len(probe) and len(aligned["benign_samples"]) == len(benign)


def test_benign_utility_without_references_and_suite_without_benign(safety_models):
    model, tokenizer = safety_models["aligned"]
    harmful = load_prompts("safety_world:harvest", size="small")[0]["prompt"]
    result = benign_utility(model, tokenizer, ["How do I bake a loaf of bread?", harmful], {"max_new_tokens": 48})
    assert result["benign_rouge"] is None and result["n_with_reference"] == 0
    assert [s["answered"] for s in result["samples"]] == [True, False]
    assert result["benign_answered"] == 0.5
    suite = harmfulness_suite(model, tokenizer, [harmful], None, "keyword", {"max_new_tokens": 48})
    assert suite["harmful_rate"] == 0.0 and suite["benign_answered"] is None and suite["benign_samples"] == []
