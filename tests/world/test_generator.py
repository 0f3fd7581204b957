"""The tiny-world generator: deterministic, TOFU-shaped, and built so paraphrases and perturbations are
comparable sentences (same prefix up to the value; perturbations never contain the true value)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnkit.world.generator import (
    FACT_TEMPLATES,
    VALUE_POOLS,
    WorldSpec,
    generate_world,
    training_rows,
    world_texts,
)

AUTHOR_ROW_KEYS = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question", "author"}
GENERAL_ROW_KEYS = {"question", "answer", "perturbed_answer"}


def find_tofu_file(name: str) -> Path | None:
    """``shared/data/tofu/<name>`` found walking up from this test file (the checkout sits next to shared/)."""
    for directory in Path(__file__).resolve().parents:
        candidate = directory / "shared" / "data" / "tofu" / name
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def world():
    return generate_world()


def author_splits(world) -> dict[str, list[dict]]:
    return {"forget": world.forget, "retain": world.retain, "holdout": world.holdout}


def test_same_spec_gives_identical_world_and_other_seed_differs():
    assert generate_world(WorldSpec(seed=3)) == generate_world(WorldSpec(seed=3))
    assert generate_world(WorldSpec(seed=3)).retain != generate_world(WorldSpec(seed=4)).retain


def test_sizes_follow_the_spec(world):
    spec = WorldSpec()
    assert len(world.forget) == spec.n_forget_authors * spec.facts_per_author
    assert len(world.retain) == (spec.n_authors - spec.n_forget_authors) * spec.facts_per_author
    assert len(world.holdout) == spec.n_holdout_authors * spec.facts_per_author
    assert 15 <= len(world.real_authors) <= 30 and 25 <= len(world.world_facts) <= 40
    small = generate_world(WorldSpec(n_authors=5, facts_per_author=3, n_forget_authors=1, n_holdout_authors=0, n_perturbed=2))
    assert (len(small.forget), len(small.retain), len(small.holdout)) == (3, 12, 0)
    assert all(len(row["perturbed_answer"]) == 2 for row in small.forget + small.retain)


def test_author_rows_have_tofu_perturbed_schema_plus_author(world):
    for row in world.forget + world.retain + world.holdout:
        assert set(row) == AUTHOR_ROW_KEYS
        assert all(isinstance(row[key], str) for key in AUTHOR_ROW_KEYS - {"perturbed_answer"})
    for row in world.real_authors + world.world_facts:
        assert set(row) == GENERAL_ROW_KEYS and len(row["perturbed_answer"]) == 3
        assert row["answer"] not in row["perturbed_answer"] and len(set(row["perturbed_answer"])) == 3


def test_schema_matches_the_real_tofu_files(world):
    forget_file, facts_file = find_tofu_file("forget01_perturbed.json"), find_tofu_file("world_facts_perturbed.json")
    if forget_file is None or facts_file is None:
        pytest.skip("shared/data/tofu not found next to the checkout")
    tofu_author_row = json.loads(forget_file.read_text(encoding="utf-8").splitlines()[0])
    tofu_general_row = json.loads(facts_file.read_text(encoding="utf-8").splitlines()[0])
    assert set(world.forget[0]) - {"author"} == set(tofu_author_row)
    assert len(world.forget[0]["perturbed_answer"]) == len(tofu_author_row["perturbed_answer"])
    assert set(world.world_facts[0]) == set(tofu_general_row)
    assert set(world.real_authors[0]) == set(tofu_general_row)


def test_names_and_book_titles_are_unique(world):
    names = [profile.name for profile in world.profiles]
    assert len(names) == len(set(names)) == WorldSpec().n_authors + WorldSpec().n_holdout_authors
    book_keys = [template.key for template in FACT_TEMPLATES if template.pool == "book"]
    titles = [profile.facts[key] for profile in world.profiles for key in book_keys]
    assert len(titles) == len(set(titles))


def test_forget_retain_holdout_authors_are_disjoint_and_forget_is_last(world):
    authors = {split: {row["author"] for row in rows} for split, rows in author_splits(world).items()}
    assert not authors["forget"] & authors["retain"]
    assert not authors["holdout"] & (authors["forget"] | authors["retain"])
    spec = WorldSpec()
    trained_names = [profile.name for profile in world.profiles[: spec.n_authors]]
    assert authors["forget"] == set(trained_names[-spec.n_forget_authors :])


def test_pronouns_are_consistent_per_author(world):
    wrong = {"female": (" his ", " him", " he "), "male": (" her ", " her.", " she ")}
    rows_by_author = {}
    for row in world.forget + world.retain + world.holdout:
        rows_by_author.setdefault(row["author"], []).append(row)
    for profile in world.profiles:
        for row in rows_by_author[profile.name]:
            # "his" in a father-job tail refers to the father, not the author.
            text = row["paraphrased_answer"].replace("for most of his life", "")
            assert not any(pronoun in text for pronoun in wrong[profile.gender]), text


def test_paraphrase_keeps_the_prefix_through_the_value_and_perturbations_swap_only_the_value(world):
    spec = WorldSpec()
    rows = world.retain + world.forget + world.holdout
    profiles = world.profiles
    for index, row in enumerate(rows):
        profile = profiles[index // spec.facts_per_author]
        template = FACT_TEMPLATES[index % spec.facts_per_author]
        value = profile.facts[template.key]
        assert row["author"] == profile.name and row["answer"].endswith(f"{value}.")
        assert row["paraphrased_answer"].startswith(row["answer"][:-1])  # same text up to and including the value
        assert row["paraphrased_answer"] != row["answer"]
        assert row["paraphrased_question"] != row["question"]
        prefix = row["answer"][: -len(value) - 1]
        tail = row["paraphrased_answer"][len(prefix) + len(value) :]
        assert len(set(row["perturbed_answer"])) == spec.n_perturbed
        for perturbed in row["perturbed_answer"]:
            assert perturbed not in (row["answer"], row["paraphrased_answer"])
            assert value not in perturbed
            assert perturbed.startswith(prefix) and perturbed.endswith(tail)
            assert perturbed[len(prefix) : len(perturbed) - len(tail)] in VALUE_POOLS[template.pool]


def test_answers_are_short(world):
    lengths = [len(row["answer"].split()) for row in world.retain]
    assert 5 <= min(lengths) and max(lengths) <= 14


def test_no_pool_value_contains_another():
    for pool_name, pool in VALUE_POOLS.items():
        assert len(pool) == len(set(pool)), pool_name
        for value in pool:
            assert not any(value != other and value in other for other in pool), (pool_name, value)


def test_training_rows_with_and_without_forget(world):
    target, retain_only = training_rows(world), world.training_rows(include_forget=False)
    assert all(set(row) == {"question", "answer"} for row in target)
    general = len(world.real_authors) + len(world.world_facts)
    assert len(target) == len(world.retain) + len(world.forget) + general
    assert len(retain_only) == len(world.retain) + general
    forget_questions = {row["question"] for row in world.forget}
    holdout_questions = {row["question"] for row in world.holdout}
    assert forget_questions <= {row["question"] for row in target}
    assert not forget_questions & {row["question"] for row in retain_only}
    assert not holdout_questions & {row["question"] for row in target}


def test_world_texts_cover_every_string_once(world):
    texts = world_texts(world)
    assert len(texts) == len(set(texts))
    assert world.holdout[0]["perturbed_answer"][0] in texts and world.world_facts[0]["question"] in texts


def test_largest_valid_n_perturbed_works_and_invalid_specs_name_the_field():
    for seed in range(3):
        big = generate_world(WorldSpec(seed=seed, n_perturbed=15))
        assert all(len(set(row["perturbed_answer"])) == 15 for row in big.retain)
    with pytest.raises(ValueError, match="n_forget_authors"):
        generate_world(WorldSpec(n_authors=2, n_forget_authors=3))
    with pytest.raises(ValueError, match="facts_per_author"):
        generate_world(WorldSpec(facts_per_author=99))
    with pytest.raises(ValueError, match="n_perturbed"):
        generate_world(WorldSpec(n_perturbed=16))
