"""Bad input never ends in a traceback or `internal error`: one table of user mistakes, each one `error:` line.

Every case runs the `unlearn` CLI in-process and checks: a non-zero exit (2, a user error), exactly one
output line starting with `error: ` that names the problem (a distinctive substring per case), no
"Traceback" and no "internal error" anywhere, and — for `run` / `eval`, which get `--out` pointing at an
earlier good run's output — that output left byte-identical.

The cases cover recipe files, overrides of every section, method fields, data files, model folders and
CLI flags. Add a case by appending a `Case` to `CASES`; `{good}` in argv is the earlier good run's output
directory and `{files}` the folder of prepared bad files (`bad_files`, in conftest.py). Almost every case fails while the
recipe is validated (milliseconds); none trains.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app

pytestmark = pytest.mark.usefixtures("isolated_env")

SMALL = "world.size=small"
TOFU = ("data.benchmark=tofu", "data.forget_split=forget01")
LATIN1 = "café, naïve, résumé".encode("latin-1")  # not UTF-8


@dataclass(frozen=True)
class Case:
    """`unlearn ARGV` must fail with one `error:` line containing `expect`.

    `out`: append `--out {good}` and check the earlier good output is untouched (default: for run and
    eval). `only_line`: the error line is the whole output (the command fails before logging anything)."""

    id: str
    argv: tuple[str, ...]
    expect: str
    out: bool | None = None
    only_line: bool = True

    def command(self, good: Path, files: Path) -> list[str]:
        argv = [a.replace("{good}", str(good)).replace("{files}", str(files)) for a in self.argv]
        if self.out if self.out is not None else argv[0] in ("run", "eval"):
            argv += ["--out", str(good), "-q"]
        return argv


def run(*overrides: str, expect: str, id: str, **kw) -> Case:
    """`unlearn run default OVERRIDES` on the small world."""
    return Case(id, ("run", "default", SMALL, *overrides), expect, **kw)


def method(name: str, *fields: str, expect: str, id: str | None = None) -> Case:
    return run(f"method.name={name}", *(f"method.{f}" for f in fields), expect=expect,
               id=id or f"method-{name}-{'-'.join(fields)}")


CASES: list[Case] = [
    # ---------------------------------------------------------------- recipe files and names
    Case("recipe-unknown-name", ("run", "defualt"), "recipe 'defualt' not found; did you mean 'default'"),
    Case("recipe-bad-yaml", ("run", "{files}/recipes/bad_yaml.yaml"), "not valid YAML"),
    Case("recipe-not-a-mapping", ("run", "{files}/recipes/list.yaml"), "a recipe must be a mapping"),
    Case("recipe-not-utf8", ("run", "{files}/recipes/latin1.yaml"), "latin1.yaml: not UTF-8 text"),
    Case("recipe-base-not-a-path", ("run", "{files}/recipes/base_number.yaml"), "'base:' must be the path"),
    Case("recipe-base-two-levels", ("run", "{files}/recipes/child.yaml"), "only one level of 'base:'"),
    Case("recipe-base-missing", ("run", "{files}/recipes/missing_base.yaml"), "nowhere.yaml does not exist"),
    Case("recipe-unknown-field", ("run", "{files}/recipes/unknown_key.yaml"), "unknown field 'train.lrr'"),
    Case("recipe-wrong-type", ("run", "{files}/recipes/wrong_type.yaml"), "field 'train.batch_size' must be a valid integer"),
    Case("recipe-method-not-a-mapping", ("run", "{files}/recipes/method_string.yaml"), "field 'method' must be a valid dictionary"),
    Case("recipe-file-beta-zero", ("run", "{files}/recipes/beta_zero.yaml"), "field 'beta' must be greater than 0 (got 0)"),
    Case("recipe-compare-as-run", ("run", "{files}/recipes/compare.yaml"), "is a compare recipe"),
    Case("show-bad-override", ("show", "default", "method.betta=0.2"), "did you mean 'beta'"),
    Case("override-without-equals", ("show", "default", "train.lr"), "must look like section.field=value"),
    Case("show-bad-file", ("show", "{files}/recipes/wrong_type.yaml"), "field 'train.batch_size' must be a valid integer"),
    # ---------------------------------------------------------------- overrides, section by section
    run("trian.lr=1", expect="unknown field 'trian'; did you mean 'train'", id="unknown-section"),
    run("train.lrr=1", expect="unknown field 'train.lrr'; did you mean 'lr'", id="unknown-train-field"),
    run("model.name=", expect="field 'model.name' must not be empty", id="model-name-empty"),
    run("model.dtype=float64", expect="field 'model.dtype' must be 'float32', 'bfloat16' or 'float16'", id="model-dtype"),
    run("model.lora.r=0", expect="field 'model.lora.r' must be at least 1 (got 0)", id="lora-r-zero"),
    run("model.lora.dropout=1.5", expect="field 'model.lora.dropout' must be less than 1", id="lora-dropout"),
    run("model.lora.target_modules=[]", expect="field 'model.lora.target_modules' must not be empty", id="lora-modules"),
    run("data.max_length=0", expect="field 'data.max_length' must be at least 1 (got 0); e.g. data.max_length=512",
        id="max-length-zero"),
    run("data.format=chatt", expect="unknown prompt format 'chatt'; did you mean 'chat'", id="format"),
    run("data.benchmark=bogus", expect="unknown benchmark 'bogus'; valid: mmlu, muse, safety, tofu, wmdp, world", id="benchmark"),
    run("data.forget_source=file", expect="data.forget_source=file needs data.forget_file", id="forget-source-no-file"),
    run("data.forget_file=x.jsonl", expect="data.forget_file is only read with data.forget_source=file",
        id="forget-file-without-source"),
    run("data.sequential=[forget_0]", expect="data.sequential: 'forget_0' is not a forget request", id="sequential-name"),
    run("data.sequential=[forget_1]", "data.forget_source=file", "data.forget_file=x.jsonl",
        expect="data.sequential takes forget splits", id="sequential-with-file"),
    run("data.forget_split=forget01", expect="'forget01' is not a forget split of world; valid: forget", id="world-forget-split"),
    run("data.data_dir=/tmp", expect="world is generated: remove data.data_dir", id="world-data-dir"),
    run("data.benchmark=tofu", expect="data.forget_split: 'forget' is not a forget split of tofu", id="tofu-split"),
    run("train.lr=0", expect="field 'train.lr' must be greater than 0 (got 0); e.g. train.lr=1e-05", id="lr-zero"),
    run("train.lr=-1", expect="field 'train.lr' must be greater than 0 (got -1)", id="lr-negative"),
    run("train.lr=nan", expect="field 'train.lr' must be a finite number", id="lr-nan"),
    run("train.lr=.inf", expect="field 'train.lr' must be a finite number", id="lr-inf"),
    run("train.batch_size=0", expect="field 'train.batch_size' must be at least 1 (got 0)", id="batch-zero"),
    run("train.batch_size=-2", expect="field 'train.batch_size' must be at least 1 (got -2)", id="batch-negative"),
    run("train.batch_size=eight", expect="field 'train.batch_size' must be a valid integer", id="batch-word"),
    run("train.grad_accum=0", expect="field 'train.grad_accum' must be at least 1", id="grad-accum-zero"),
    run("train.steps=0", expect="field 'train.steps' must be at least 1 (got 0)", id="steps-zero"),
    run("train.steps=-5", expect="field 'train.steps' must be at least 1 (got -5)", id="steps-negative"),
    run("train.steps=2.5", expect="field 'train.steps' must be a valid integer", id="steps-fraction"),
    run("train.lr=true", expect="field 'train.lr' must be a number, not true or false", id="lr-bool"),
    run("train.epochs=-1", expect="field 'train.epochs' must be greater than 0 (got -1)", id="epochs-negative"),
    run("train.epochs=0", expect="field 'train.epochs' must be greater than 0 (got 0)", id="epochs-zero"),
    run("train.warmup_steps=-1", expect="field 'train.warmup_steps' must be at least 0", id="warmup-negative"),
    run("train.weight_decay=-0.1", expect="field 'train.weight_decay' must be at least 0", id="weight-decay"),
    run("train.max_grad_norm=0", expect="field 'train.max_grad_norm' must be greater than 0", id="grad-norm-zero"),
    run("train.log_every=0", expect="field 'train.log_every' must be at least 1", id="log-every-zero"),
    run("train.save_every=-1", expect="field 'train.save_every' must be at least 0", id="save-every-negative"),
    run("train.scheduler=cosin", expect="field 'train.scheduler' must be 'constant', 'linear' or 'cosine'", id="scheduler"),
    run("train.mixed_precision=fp8", expect="field 'train.mixed_precision' must be 'no', 'bf16' or 'fp16'", id="precision"),
    run("eval.batch_size=0", expect="field 'eval.batch_size' must be at least 1", id="eval-batch-zero"),
    run("eval.max_new_tokens=0", expect="field 'eval.max_new_tokens' must be at least 1", id="eval-tokens-zero"),
    run("eval.select.every=-1", expect="field 'eval.select.every' must be at least 0", id="select-every"),
    run("eval.select.rule=first_at_or_below", expect="first_at_or_below needs a target", id="select-rule-no-target"),
    run("eval.select.target=0.1", expect="eval.select.target is used by eval.select.rule=first_at_or_below only",
        id="select-target-with-best"),
    run("eval.select.min_retain_ratio=1.5", expect="field 'eval.select.min_retain_ratio' must be at most 1", id="select-ratio"),
    run("eval.select.every=1", "eval.select.metric=model_utility",
        expect="eval.select.metric 'model_utility' is not measured with eval.select.metrics=cheap", id="select-metric-cheap"),
    run("eval.select.every=1", "data.sequential=[forget_1,forget_2]", expect="eval.select works on one unlearning request",
        id="select-sequential"),
    run("eval.retain_model=world:retain", *TOFU, expect="eval.retain_model 'world:retain' is a tiny-world model",
        id="retain-model-world-on-tofu"),
    run("safety.batch_size=0", expect="field 'safety.batch_size' must be at least 1", id="safety-batch"),
    run("safety.probe_limit=0", expect="field 'safety.probe_limit' must be at least 1", id="safety-probe-limit"),
    run("safety.probe_path=/tmp/x.csv", expect="safety.probe_path is read only for a prompt source", id="safety-path-world"),
    run("safety.decoding.temperature=0", expect="field 'safety.decoding.temperature' must be greater than 0", id="temperature"),
    run("safety.decoding.top_p=1.5", expect="field 'safety.decoding.top_p' must be at most 1", id="top-p"),
    run("safety.decoding.top_k=-1", expect="field 'safety.decoding.top_k' must be at least 0", id="top-k"),
    run("safety.decoding.max_new_tokens=0", expect="field 'safety.decoding.max_new_tokens' must be at least 1",
        id="decoding-tokens"),
    run("guard.max_flagged_fraction=1.5", expect="field 'guard.max_flagged_fraction' must be at most 1", id="guard-fraction"),
    run("guard.max_harmful_increase=-0.1", expect="field 'guard.max_harmful_increase' must be at least 0", id="guard-increase"),
    run("world.seed=-1", expect="field 'world.seed' must be at least 0", id="world-seed"),
    run("world.size=huge", expect="field 'world.size' must be 'default' or 'small'", id="world-size"),
    run("seed=-1", expect="field 'seed' must be at least 0", id="seed-negative"),
    run("output_dir=", expect="field 'output_dir' must not be empty", id="output-dir-empty"),
    run("attacks.relearn.lr=0", expect="attack 'relearn': field 'lr' must be greater than 0 (got 0); e.g. attacks.relearn.lr=0.0003", id="relearn-lr"),
    run("attacks.relearn.steps=0", expect="attack 'relearn': field 'steps' must be at least 1", id="relearn-steps"),
    run("attacks.quantize.bits=[9]", expect="attacks.quantize.bits must hold bit widths between 2 and 8",
        id="quantize-bits"),
    # ---------------------------------------------------------------- method fields
    run("method.name=npp", expect="unknown method 'npp'; did you mean 'npo'", id="method-unknown"),
    run("method.name=5", expect="unknown method '5'", id="method-name-number"),
    run("method.betta=0.05", expect="unknown field 'betta' for method 'npo'; did you mean 'beta'", id="method-field-typo"),
    method("npo", "beta=0", expect="method 'npo': field 'beta' must be greater than 0 (got 0); e.g. method.beta=0.1"),
    method("simnpo", "beta=0", expect="method 'simnpo': field 'beta' must be greater than 0 (got 0)"),
    method("dpo", "beta=0", expect="method 'dpo': field 'beta' must be greater than 0 (got 0)"),
    method("dpo_generic_preferred", "beta=0", expect="method 'dpo_generic_preferred': field 'beta' must be greater than 0"),
    method("eru", "beta=0", expect="method 'eru': field 'beta' must be greater than 0"),
    method("npo", "beta=nan", expect="field 'beta' must be a finite number"),
    method("npo", "retain_weight=-1", expect="field 'retain_weight' must be at least 0"),
    method("grad_diff", "retain_loss=mse", expect="retain_loss must be one of nll, kl"),
    method("grun", "rank=0", expect="method 'grun': field 'rank' must be at least 1"),
    method("grun", "layers=[1.5]", expect="field 'layers[0]' must be a block index"),
    method("grun", "layers=[]", expect="field 'layers' must not be empty"),
    method("rmu", "steering_coeff=0", expect="method 'rmu': field 'steering_coeff' must be greater than 0"),
    method("rmu", "train_layers=[]", expect="field 'train_layers' must not be empty"),
    method("rmu", "layer=true", expect="method 'rmu': field 'layer' must be a block index"),
    method("eru", "attack_prob=1.5", expect="field 'attack_prob' must be at most 1"),
    method("eru", "mix_steps=0", expect="field 'mix_steps' must be at least 1"),
    method("sku", "stage1_steps=0", expect="method 'sku': field 'stage1_steps' must be at least 1"),
    method("task_vector", "finetune_lr=0", expect="method 'task_vector': field 'finetune_lr' must be greater than 0"),
    method("task_vector", "alpha=.inf", expect="field 'alpha' must be a finite number"),
    run("method.name=grun", "model.lora.r=4", expect="grun does not train LoRA adapters", id="method-grun-lora"),
    run("method.name=sku", "eval.select.every=2", expect="nothing to select", id="method-edit-select"),
    # ---------------------------------------------------------------- data files
    run("data.max_length=4", expect="forget example 1 keeps no answer token after truncation to data.max_length",
        id="max-length-cuts-every-answer", only_line=False),
    run(*TOFU, "data.data_dir={files}/nowhere", expect="does not exist", id="tofu-dir-missing"),
    run(*TOFU, "data.data_dir={files}/tofu_missing", expect="TOFU split 'forget01_perturbed' not found", id="tofu-file-missing"),
    run(*TOFU, "data.data_dir={files}/tofu_empty_answer", expect="forget01_perturbed.json:2: row 2 has an empty answer",
        id="tofu-empty-answer"),
    run(*TOFU, "data.data_dir={files}/tofu_blank_question", expect="retain_perturbed.json:1: row 1 has an empty question",
        id="tofu-blank-question"),
    run(*TOFU, "data.data_dir={files}/tofu_holdout_answer", expect="holdout01.json:2: row 2 has an empty answer",
        id="tofu-holdout-empty-answer"),
    run(*TOFU, "data.data_dir={files}/tofu_no_perturbed", expect="row 1 has an empty perturbed_answer list",
        id="tofu-empty-perturbed"),
    run(*TOFU, "data.data_dir={files}/tofu_latin1", expect="forget01_perturbed.json: not UTF-8 text", id="tofu-not-utf8"),
    run(*TOFU, "data.data_dir={files}/tofu_bad_json", expect="forget01_perturbed.json:2: not valid JSON", id="tofu-bad-json"),
    run("data.forget_source=file", "data.forget_file={files}/requests/nowhere.jsonl", expect="nowhere.jsonl does not exist",
        id="forget-file-missing", only_line=False),
    run("data.forget_source=file", "data.forget_file={files}/requests/empty_text.jsonl",
        expect="empty_text.jsonl:2: row 2 has an empty text", id="forget-file-empty-text", only_line=False),
    run("data.forget_source=file", "data.forget_file={files}/requests/empty_answer.jsonl",
        expect="empty_answer.jsonl:1: row 1 has an empty answer", id="forget-file-empty-answer", only_line=False),
    run("data.forget_source=file", "data.forget_file={files}/requests/not_json.jsonl",
        expect="not_json.jsonl:2: not valid JSON", id="forget-file-bad-json", only_line=False),
    run("data.forget_source=file", "data.forget_file={files}/requests/latin1.jsonl",
        expect="latin1.jsonl: not UTF-8 text", id="forget-file-not-utf8", only_line=False),
    run("data.forget_source=file", "data.forget_file={files}/requests/object.json",
        expect="object.json: expected a JSON list of requests", id="forget-file-not-a-list", only_line=False),
    run("method.name=dpo_generic_preferred", "data.generic_file={files}/requests/generic_blank.json",
        expect="generic_blank.json: row 2 is an empty text", id="generic-file-blank", only_line=False),
    run("method.name=idk", "data.idk_file={files}/requests/latin1.txt", expect="latin1.txt: not UTF-8 text",
        id="idk-file-not-utf8", only_line=False),
    # ---------------------------------------------------------------- model folders
    *[Case(f"model-{name}", ("eval", "--model", f"{{files}}/models/{name}", "-b", "world", "--world-size", "small"), expect)
      for name, expect in [
          ("truncated", "truncated/model.safetensors is truncated or corrupt"),
          ("garbage", "garbage/model.safetensors is truncated or corrupt"),
          ("no_weights", "no_weights holds no model weights (model.safetensors)"),
          ("bad_config", "bad_config/config.json is not valid JSON"),
          ("no_config", "no_config has no config.json"),
          ("no_tokenizer", "no_tokenizer has no tokenizer files"),
          ("bad_tokenizer", "could not load the tokenizer from"),
          ("wrong_shapes", "its weights do not match the shapes in config.json"),
          ("a_file", "a_file is a file; give the model's folder"),
          ("bad_edits", "bad_edits: the GRUN edits (edits.json, edits.safetensors) cannot be loaded"),
          ("nowhere", "model folder"),
      ]],
    run("model.name={files}/models/truncated", expect="model.safetensors is truncated or corrupt", id="run-model-truncated"),
    # ---------------------------------------------------------------- CLI flags
    Case("eval-batch-size-zero", ("eval", "--model", "world:target", "-b", "world", "--world-size", "small",
                                  "--batch-size", "0"), "--batch-size must be at least 1 (got 0); e.g. --batch-size 32"),
    Case("eval-max-new-tokens-zero", ("eval", "--model", "world:target", "-b", "world", "--world-size", "small",
                                      "--max-new-tokens", "0"), "--max-new-tokens must be at least 1"),
    Case("eval-dtype", ("eval", "--model", "world:target", "-b", "world", "--dtype", "float64"), "--dtype must be"),
    Case("eval-world-size", ("eval", "--model", "world:target", "-b", "world", "--world-size", "huge"), "--world-size must be"),
    Case("eval-benchmark", ("eval", "--model", "world:target", "-b", "bogus"), "unknown --benchmark 'bogus'"),
    Case("eval-format", ("eval", "--model", "world:target", "-b", "world", "--format", "chatml"), "unknown prompt format"),
    Case("eval-lm-eval-not-wmdp", ("eval", "--model", "world:target", "-b", "world", "--backend", "lm_eval"),
         "--backend lm_eval scores wmdp and mmlu; world is scored by unlearnkit: remove --backend"),
    Case("eval-backend", ("eval", "--model", "world:target", "-b", "wmdp", "--backend", "bogus"),
         "--backend must be 'unlearnkit' or 'lm_eval' (got 'bogus')"),
    Case("eval-limit-zero", ("eval", "--model", "{files}/models/good", "-b", "wmdp", "--data-dir", "{files}/wmdp",
                             "--limit", "0"), "--limit must be at least 1 (got 0)"),
    Case("eval-wmdp-bad-json", ("eval", "--model", "{files}/models/good", "-b", "wmdp", "--data-dir", "{files}/wmdp_bad"),
         "bio_questions.json:1: not valid JSON"),
    Case("eval-without-model", ("eval", "-b", "world"), "unlearn eval needs --model and --out", out=False),
    Case("craft-iterations-zero", ("craft", "--iterations", "0", "--out", "{good}/crafted.jsonl", "-q"), "iterations=0"),
    Case("craft-limit-zero", ("craft", "--limit", "0", "--out", "{good}/crafted.jsonl"), "--limit 0: must be at least 1"),
    Case("craft-kind", ("craft", "--kind", "newz", "--out", "{good}/crafted.jsonl"), "unknown carrier kind 'newz'"),
    Case("craft-backend", ("craft", "--backend", "bogus", "--out", "{good}/crafted.jsonl", "-q"), "unknown backend 'bogus'"),
    Case("craft-on-unparsed", ("craft", "--on-unparsed", "maybe", "--out", "{good}/crafted.jsonl", "-q"), "on_unparsed"),
    Case("craft-backend-opt", ("craft", "--backend-opt", "model", "--out", "{good}/crafted.jsonl"), "KEY=VALUE"),
    Case("craft-refusals-not-utf8", ("craft", "--refusals", "{files}/requests/latin1.jsonl", "--out",
                                     "{good}/crafted.jsonl"), "latin1.jsonl: not UTF-8 text"),
    Case("craft-refusals-empty-text", ("craft", "--refusals", "{files}/requests/empty_text.jsonl", "--out",
                                       "{good}/crafted.jsonl"), "empty_text.jsonl line 2: the text is empty"),
    Case("inspect-missing-file", ("inspect", "{files}/nowhere.jsonl"), "does not exist"),
    Case("inspect-not-utf8", ("inspect", "{files}/requests/latin1.jsonl"), "latin1.jsonl: not UTF-8 text"),
    Case("inspect-train-without-out", ("inspect", "--train"), "--train takes no FILE and needs --out"),
    Case("ls-unknown", ("ls", "method"), "unknown list 'method'; did you mean 'methods'"),
    Case("world-unknown", ("world", "build", "bogus"), "unknown world 'bogus'"),
    # ---------------------------------------- output paths and resuming ({files}/out: see `bad_files`)
    *[Case(f"out-{cmd[0]}-{name}", (*cmd, "--out", target), expect, out=False) for cmd in
      (("run", "default", SMALL), ("eval", "--model", "world:target", "-b", "world", "--world-size", "small"),
       ("compare", "default", "--methods", "npo", SMALL), ("inspect", "--train"))
      for name, target, expect in (("users-folder", "{files}/out/user", "unlearnkit did not write"),
                                   ("a-file", "{files}/out/plain.txt", "is a file, not a folder"))],
    *[Case(f"out-run-{name}", ("run", "default", SMALL, *extra, "--out", target), expect, out=False) for name, target, expect, extra in (
        ("under-a-file", "{files}/out/plain.txt/run", "is a file, not a folder", ()),
        ("cwd", ".", "is the current directory", ()), ("parent-of-cwd", "..", "contains the current directory", ()),
        ("symlink", "{files}/out/link", "symbolic link", ()), ("proc", "/proc/unlearnkit-out", "/proc", ()),
        ("foreign-file-in-ours", "{files}/out/ours", "'notes.txt', which unlearnkit did not write", ()),
        ("foreign-partial", "{files}/out/theirs", "theirs.partial exists and unlearnkit did not write it", ()),
        ("resume-nothing", "{files}/out/fresh", "no interrupted run to resume", ("--resume",)),
        ("resume-and-restart", "{files}/out/fresh", "give one of them", ("--resume", "--restart")),
        ("resume-from-user-folder", "{files}/out/fresh", "is not a checkpoint written by unlearnkit",
         ("train.resume_from={files}/out/user",)))],
    Case("out-craft-folder", ("craft", "--limit", "1", "--out", "{files}/out/user"), "is a folder"),
    Case("out-craft-users-file", ("craft", "--limit", "1", "--out", "{files}/out/plain.txt"), "not written by unlearnkit"),
    Case("out-inspect-users-file", ("inspect", "{files}/requests/object.json", "--out", "{files}/out/plain.txt"),
         "not written by unlearnkit"),
    Case("eval-recipe-with-recipe-flag", ("eval", "--recipe", "default", "--forget-split", "forget05"),
         "--forget-split does not apply with --recipe", out=False),
    Case("eval-retain-logs-not-numbers", ("eval", "--recipe", "default", SMALL, "eval.retain_logs={files}/out/logs.json"),
         "forget_truth_ratios must be a list of numbers", only_line=False),
]


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> content hash of every file below `directory`."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ the table


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_error_line(case, good, bad_files, env):
    argv = case.command(good, bad_files)
    before = snapshot(good)
    result = CliRunner().invoke(app, argv, env=env)
    output = result.output
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # nothing escaped the CLI
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert case.expect in errors[0], f"{case.expect!r} not in {errors[0]!r}"
    lines = [line for line in output.splitlines() if line.strip()]
    if case.only_line:
        assert lines == errors, output
    else:
        assert lines[-1] == errors[0], output  # progress lines may come first; the error ends the output
    assert snapshot(good) == before  # the earlier good output is byte-identical

