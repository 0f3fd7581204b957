"""`data.benchmark: muse` end to end on the tiny world in MUSE's layout (`data.data_dir=world:tiny`):
raw-text training in max_length chunks, verbmem / knowmem / privleak before and after, relearning on
MUSE's forget metrics, `unlearn eval --recipe` reproducing the run; plus the loaders and the refusals."""

from __future__ import annotations

import json

import pytest

from unlearnkit.errors import UnlearnError
from unlearnkit.pipeline import run
from unlearnkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("isolated_env")

SMALL = ["world.size=small", "train.steps=30"]
MUSE_KEYS = {"forget_verbmem_rouge", "forget_knowmem_rouge", "retain_knowmem_rouge", "mia_min_k", "privleak"}


def quiet(overrides: list[str], out) -> dict:
    return run(load_recipe("muse/world", [*SMALL, *overrides]), out, progress=False, log=lambda message: None)


@pytest.fixture(scope="module")
def muse_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("muse") / "run"
    return out, quiet([], out)


def bench_and_tokenizer():
    from unlearnkit.benchmarks.suite import load_benchmark
    from unlearnkit.model import load_tokenizer

    recipe = load_recipe("muse/world", SMALL)
    bench = load_benchmark(recipe.data, recipe.world, log=lambda m: None, progress=False)
    return recipe, bench, load_tokenizer(str(bench.world.tokenizer_dir))


def test_muse_run_reports_muse_metrics_before_and_after(muse_run):
    out, report = muse_run
    assert report["benchmark"] == "muse"
    assert MUSE_KEYS <= set(report["before"]) and MUSE_KEYS <= set(report["after"])
    before, after = report["before"], report["after"]
    assert before["forget_verbmem_rouge"] > 0.9  # the target model reproduces its training text
    assert after["forget_verbmem_rouge"] < before["forget_verbmem_rouge"] - 0.1
    assert after["forget_knowmem_rouge"] < before["forget_knowmem_rouge"]
    assert before["mia_min_k"] > 0.5 > after["mia_min_k"]  # seen before; NPO over-unlearns the tiny world
    assert before["privleak"] < 0 < after["privleak"]
    samples = report["per_sample"]["after"]
    assert set(samples) >= {"verbmem_forget", "knowmem_forget", "knowmem_retain"}
    text = (out / "report.md").read_text()
    assert "MUSE verbatim memorization" in text and "privleak" in text
    assert (out / "report.html").is_file() and (out / "model" / "config.json").is_file()


def test_privleak_uses_the_retain_models_auc_on_the_privleak_texts(muse_run):
    from unlearnkit.benchmarks.privacy import text_min_k_auc
    from unlearnkit.metrics.mia import privleak
    from unlearnkit.model import load_model

    _, report = muse_run
    _, bench, tokenizer = bench_and_tokenizer()
    texts = bench.splits.privleak
    retain_auc = text_min_k_auc(load_model(str(bench.world.model_dir("retain"))), tokenizer,
                                list(texts["forget"]), list(texts["holdout"]))
    for side in ("before", "after"):
        assert report[side]["privleak"] == pytest.approx(privleak(report[side]["mia_min_k"], retain_auc), abs=1e-9)


def test_training_data_is_max_length_chunks_of_the_raw_forget_texts():
    from unlearnkit.data.texts import pretraining_chunks, text_of
    from unlearnkit.pipeline import build_training_data

    recipe, bench, tokenizer = bench_and_tokenizer()
    method = recipe.build_method()
    data = build_training_data(recipe, method, bench, tokenizer, None)
    chunks = pretraining_chunks([text_of(r) for r in bench.train_forget], tokenizer, recipe.data.max_length)
    assert len(data.forget) == len(chunks) >= 2
    joined = list(tokenizer("\n\n".join(text_of(r) for r in bench.train_forget), add_special_tokens=False, verbose=False)["input_ids"])
    assert len(chunks) == -(-len(joined) // recipe.data.max_length)  # ceil: every token lands in one chunk
    for example in data.forget:  # bare text: every token after BOS is supervised
        assert len(example.input_ids) <= recipe.data.max_length + 1
        assert all(label == token for label, token in zip(example.labels[1:], example.input_ids[1:]))
    assert data.retain is not None and len(data.retain) > len(data.forget)


def test_relearning_reports_the_share_of_muse_forgetting_kept(muse_run):
    out, report = muse_run
    (relearn,) = [row for row in report["robustness"]["rows"] if row["attack"] == "relearn"]
    kept = relearn["forgetting_kept"]
    assert set(kept) == {"forget_verbmem_rouge", "forget_knowmem_rouge"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in kept.values())
    assert "kept (forget_verbmem_rouge)" in (out / "report.md").read_text()


def test_unlearn_eval_recipe_reproduces_the_runs_after_metrics(muse_run, tmp_path, env):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    out, report = muse_run
    result = CliRunner().invoke(app, ["eval", "--recipe", "muse/world", *SMALL, f"model.name={out / 'model'}",
                                      "--out", str(tmp_path / "eval")], env=env)
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    for key in MUSE_KEYS:
        assert evaluated[key] == pytest.approx(report["after"][key], abs=1e-6)


def test_world_view_layout():
    from unlearnkit.world.muse_view import muse_files

    _, bench, _ = bench_and_tokenizer()
    world = bench.world.world
    files = muse_files(world)
    first = world.forget[0]
    assert files["verbmem/forget"][0] == {"prompt": f"Question: {first['question']}\nAnswer: ", "gt": first["answer"]}
    assert files["raw/forget"][0] == f"Question: {first['question']}\nAnswer: {first['answer']}"
    assert files["knowmem/forget_qa"][0] == {"question": first["paraphrased_question"], "answer": first["answer"]}
    assert len(files["privleak/holdout"]) == len(world.holdout) and files["knowmem/forget_qa_icl"] == []


def test_pretraining_chunks_cut_the_joined_corpus():
    from unlearnkit.data.texts import pretraining_chunks

    _, _, tokenizer = bench_and_tokenizer()
    texts = ["Question: Where was Ana born?\nAnswer: Ana was born in Lima.", "Question: Who is Ana?\nAnswer: A poet."]
    ids = list(tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    chunks = pretraining_chunks(texts, tokenizer, 5)
    assert len(chunks) == -(-len(ids) // 5)
    assert [c["text"] for c in chunks] == [tokenizer.decode(ids[i:i + 5]) for i in range(0, len(ids), 5)]
    assert pretraining_chunks(texts, tokenizer, 10_000) == [{"text": tokenizer.decode(ids)}]
    with pytest.raises(UnlearnError, match="max_length must be >= 1"):
        pretraining_chunks(texts, tokenizer, 0)


def test_local_raw_texts_and_their_errors(tmp_path):
    from unlearnkit.benchmarks.muse import load_muse_raw

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.json").write_text(json.dumps(["one text", {"text": "another"}]))
    (tmp_path / "raw" / "retain1.jsonl").write_text('{"text": "kept"}\n')
    assert load_muse_raw("news", tmp_path) == {"forget": ["one text", "another"], "retain1": ["kept"]}
    with pytest.raises(UnlearnError, match="retain2.json not found"):
        load_muse_raw("news", tmp_path, ("retain2",))
    with pytest.raises(UnlearnError, match="valid: forget, retain1, retain2, holdout"):
        load_muse_raw("news", tmp_path, ("retain",))
    (tmp_path / "raw" / "forget.json").write_text(json.dumps([{"body": "x"}]))
    with pytest.raises(UnlearnError, match="a MUSE raw item is a string"):
        load_muse_raw("news", tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (["attacks.paraphrase=true"], "attacks.paraphrase rewrites forget questions; muse has none"),
    (["data.sequential=[forget]"], "data.sequential is not available for MUSE"),
    (["eval.retain_logs=x.json"], "eval.retain_logs holds TOFU truth ratios"),
    (["data.forget_split=forget01"], "'forget01' is not a forget split of muse; valid: forget"),
])
def test_what_muse_cannot_do_is_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(UnlearnError, match=message):
        quiet(overrides, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_unlearn_eval_benchmark_muse_matches_the_runs_before(muse_run, tmp_path, env):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    _, report = muse_run
    result = CliRunner().invoke(app, ["eval", "--model", "world:target", "-b", "muse", "--data-dir", "world:tiny",
                                      "--retain-model", "world:retain", "--world-size", "small",
                                      "--out", str(tmp_path / "eval"), "-q"], env=env)
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    for key in MUSE_KEYS:
        assert evaluated[key] == pytest.approx(report["before"][key], abs=1e-6)


@pytest.mark.parametrize("overrides", [
    ["eval.select.metrics=full", "eval.select.rule=first_at_or_below", "eval.select.metric=forget_knowmem_rouge",
     "eval.select.target=0.3"],
    ["eval.select.metrics=cheap"],  # forget_prob / retain_prob on the knowmem forget / retain QA rows
])
def test_checkpoint_selection_on_muse(tmp_path, overrides):
    report = quiet(["train.steps=20", "eval.select.every=5", "attacks.relearn.enabled=false", *overrides], tmp_path / "sel")
    selection = report["selection"]
    assert [h["step"] for h in selection["history"]] == [5, 10, 15, 20]
    key = "forget_knowmem_rouge" if "eval.select.metrics=full" in overrides else "forget_prob"
    assert all(key in h for h in selection["history"]) and key in selection["start"]
    if key == "forget_knowmem_rouge":  # the first scored step at or below the target, else the last
        hits = [h["step"] for h in selection["history"] if h[key] <= 0.3]
        assert selection["selected_step"] == (hits[0] if hits else 20)
