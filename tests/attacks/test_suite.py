"""Contract tests over every registered attack (`registry.ATTACKS`) on the small tiny world, and the identities of
the individual attacks: an attack never changes the model it was given (weights and hooks); a zero ablation
direction changes nothing; the worst case is the maximum; few-shot never shows the asked question's answer."""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.attacks.base import AttackTarget
from unlearnkit.attacks.latent import DirectionAblation, LatentAttack
from unlearnkit.attacks.prompts import FewShot, Jailbreak
from unlearnkit.attacks.quantize import nf4_levels, nf4_tensor, quantize_model
from unlearnkit.attacks.robustness import worst_case
from unlearnkit.data.batch import collate
from unlearnkit.data.formats import get_format
from unlearnkit.data.pairing import encode_rows
from unlearnkit.losses import sequence_logprob
from unlearnkit.model.hooks import ablate_directions
from unlearnkit.pipeline.stages import forget_measure
from unlearnkit.recipe import validate_recipe
from unlearnkit.registry import ATTACKS

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture(scope="module")
def world(cache_dir):
    from unlearnkit.benchmarks.suite import load_benchmark
    from unlearnkit.model import load_model, load_tokenizer
    from unlearnkit.world.build import ensure_world

    recipe = validate_recipe({"eval": {"max_new_tokens": 8}, "world": {"size": "small", "cache_dir": str(cache_dir)}})
    bench = load_benchmark(recipe.data, recipe.world, log=lambda m: None, progress=False)
    target_dir = ensure_world(cache_dir, size="small", progress=False, log=lambda m: None).target_dir
    return recipe, bench, load_model(str(target_dir), device="cpu"), load_tokenizer(str(target_dir))


@pytest.fixture
def target(world):
    recipe, bench, model, tokenizer = world
    fmt = get_format(recipe.data.format)
    return AttackTarget(model, tokenizer, bench, fmt, forget_measure(tokenizer, fmt, recipe.eval), seed=0)


def probe_logits(target) -> torch.Tensor:
    rows = target.bench.splits.forget[:4]
    batch = collate(encode_rows(rows, target.tokenizer, target.fmt), target.tokenizer.pad_token_id)
    with torch.no_grad():
        return target.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_measures_the_forget_metrics_and_leaves_the_model_unchanged(name, target):
    attack = ATTACKS.build(name, enabled=True)
    attack.check(target.bench)
    weights = {k: v.clone() for k, v in target.model.state_dict().items()}
    logits = probe_logits(target)
    rows = attack.run(target)
    assert rows and all(row.label for row in rows)
    for row in rows:
        assert list(row.metrics) == list(target.bench.component.forget_metrics)
        assert all(isinstance(v, float) and math.isfinite(v) for v in row.metrics.values()), row
    for key, value in target.model.state_dict().items():
        assert torch.equal(value, weights[key]), f"{name} changed {key}"
    torch.testing.assert_close(probe_logits(target), logits, rtol=0, atol=0)  # no hook left behind


def test_every_attack_is_listed_with_one_line(world):
    assert {"relearn", "quantize", "paraphrase", "few_shot", "jailbreak", "ablation", "latent"} <= set(ATTACKS.names())
    assert all(ATTACKS.describe(name) for name in ATTACKS.names())


def test_zero_direction_ablation_changes_nothing(target):
    clean = target.measure(target.model, target.bench)
    zeros = {layer: torch.zeros(target.model.config.hidden_size) for layer in (0, 1)}
    with ablate_directions(target.model, zeros):
        assert target.measure(target.model, target.bench) == clean
    directions = DirectionAblation().directions(target)
    assert all(abs(float(d.norm()) - 1.0) < 1e-5 for d in directions.values())  # unit forget-minus-retain directions


def test_latent_attack_stays_in_its_ball_and_raises_the_answer_likelihood(target):
    attack = LatentAttack(steps=8)
    layer, delta = attack.fit(target)
    rows = target.bench.train_forget[:32]
    batch = collate(encode_rows(rows, target.tokenizer, target.fmt), target.tokenizer.pad_token_id)
    from unlearnkit.model.hooks import add_to_outputs, capture_outputs

    with torch.no_grad(), capture_outputs(target.model, [layer]) as captured:
        clean = sequence_logprob(target.model, batch, mean=True).mean()
    radius = attack.epsilon * float(captured[layer].float().norm(dim=-1)[batch.attention_mask.bool()].mean())
    assert float(delta.norm()) <= radius * (1 + 1e-5)
    with torch.no_grad(), add_to_outputs(target.model, {layer: delta}):
        attacked = sequence_logprob(target.model, batch, mean=True).mean()
    assert attacked > clean


def test_quantize_nf4_uses_the_qlora_codebook(target):
    expected = [-1.0, -0.696193, -0.525073, -0.394917, -0.284441, -0.184773, -0.09105, 0.0, 0.07958, 0.16093,
                0.246112, 0.337915, 0.44071, 0.562617, 0.722957, 1.0]
    assert nf4_levels().tolist() == pytest.approx(expected, abs=1e-6)
    weight = torch.randn(3, 128, generator=torch.Generator().manual_seed(0))
    rounded = nf4_tensor(weight)
    for block, original in zip(rounded.reshape(-1, 64), weight.reshape(-1, 64)):
        scale = original.abs().max()
        assert ((block / scale).unsqueeze(-1) - nf4_levels()).abs().min(-1).values.max() < 1e-5  # on the codebook
        assert (block - original).abs().max() <= scale * 0.17  # within half the widest gap of the codebook
    with pytest.raises(ValueError, match="4 bits"):
        quantize_model(target.model, 8, scheme="nf4")


def test_few_shot_never_shows_the_asked_question(target):
    seen = []
    original = target.measure

    def spy(model, bench):
        seen.extend(bench.splits.forget)
        return original(model, bench)

    target.measure = spy
    FewShot(k=3, source="forget").run(target)
    asked = [row["question"] for row in target.bench.splits.forget]
    assert len(seen) == len(asked)
    for row, question in zip(seen, asked):
        prompt = row["question"]
        assert prompt.endswith(question) and question not in prompt[: -len(question)]


def test_jailbreak_templates_rewrite_each_question(target):
    seen = {}
    original = target.measure

    def spy(model, bench):
        seen[len(seen)] = [r["question"] for r in bench.splits.forget]
        return original(model, bench)

    target.measure = spy
    rows = Jailbreak(templates=["prefix_injection", "reverse_query"]).run(target)
    assert [r.label for r in rows] == ["jailbreak: prefix injection", "jailbreak: reverse query"]
    first = target.bench.splits.forget[0]
    assert seen[0][0].startswith(first["question"]) and "Sure, here is the answer" in seen[0][0]
    assert first["answer"] in seen[1][0]


def test_worst_case_is_the_highest_value_including_no_attack():
    after, before = {"forget_prob": 0.2}, {"forget_prob": 0.9}
    rows = [{"label": "a", "metrics": {"forget_prob": 0.1}}, {"label": "b", "metrics": {"forget_prob": 0.55}}]
    worst = worst_case(after, rows, ["forget_prob"], before)
    assert worst["metrics"] == {"forget_prob": 0.55} and worst["attack"] == {"forget_prob": "b"}
    assert worst["forgetting_kept"]["forget_prob"] == pytest.approx((0.55 - 0.9) / (0.2 - 0.9))
    calm = worst_case(after, rows[:1], ["forget_prob"], before)
    assert calm["attack"] == {"forget_prob": "none (unlearned model)"} and calm["forgetting_kept"]["forget_prob"] == 1.0


def test_prompt_attacks_rewrite_wmdp_items_and_mmlu_is_refused(world, tmp_path):
    import json

    from unlearnkit.benchmarks.suite import load_benchmark
    from unlearnkit.errors import UnlearnError

    _, _, model, tokenizer = world
    root = tmp_path / "wmdp"
    root.mkdir()
    rows = [{"question": f"Which is {i}?", "choices": ["one", "two", "three", "four"], "answer": i % 4} for i in range(3)]
    for name in ("bio_questions.json", "cyber_questions.json"):
        (root / name).write_text(json.dumps(rows))
    recipe = validate_recipe({"data": {"benchmark": "wmdp", "data_dir": str(root)}})
    bench = load_benchmark(recipe.data, recipe.world, log=lambda m: None, progress=False)
    fmt = get_format(recipe.data.format)
    seen = []

    def measure(m, b):
        seen.append([r["question"] for rows in b.splits.values() for r in rows])
        return forget_measure(tokenizer, fmt, recipe.eval)(m, b)

    target = AttackTarget(model, tokenizer, bench, fmt, measure)
    few = FewShot(source="forget", k=2).run(target)
    jail = Jailbreak().run(target)
    assert [list(r.metrics) for r in few] == [["accuracy"]]
    assert "jailbreak: reverse query" not in [r.label for r in jail] and len(jail) == 4  # no reverse form for MCQ
    assert all(q.endswith(f"Which is {i % 3}?") for i, q in enumerate(seen[0]))
    assert "Sure, here is the answer" in seen[1][0] and bench.splits["bio"][0]["question"] == "Which is 0?"
    from types import SimpleNamespace

    from unlearnkit.registry import BENCHMARKS

    mmlu = SimpleNamespace(name="mmlu", component=BENCHMARKS.get("mmlu")())  # what must be kept: nothing to attack
    with pytest.raises(UnlearnError, match="mmlu has none"):
        ATTACKS.build("quantize").check(mmlu)
