"""Recipes: YAML files validated against a typed schema, with `a.b=c` command-line overrides.

A recipe selects components and sets fields; nothing else (no interpolation, no import paths).
`base: other.yaml` inherits one level. Unknown keys, names and wrong types are `UnlearnError`s
that name the field, suggest the near miss and list what is valid.

    model:   {name: world:target}              # or a hub id / local dir: meta-llama/Llama-3.2-1B-Instruct
    data:    {benchmark: world, format: openunlearning}
    method:  {name: npo, beta: 0.1}
    train:   {epochs: 5, lr: 1.0e-3, batch_size: 8}
    eval:    {max_new_tokens: 48}

Every number has its valid range in the schema (lr > 0, batch sizes >= 1, probabilities in [0, 1], ...;
the types come from `unlearnkit.registry`), and options that contradict each other are refused
(`unlearnkit.recipe_checks`): a recipe that validates does not fail later for a setting it holds.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from unlearnkit.errors import UnlearnError
from unlearnkit.registry import (ATTACKS, METHODS, Finite, Fraction, NonNegative, NonNegativeInt, Positive,
                                 PositiveInt, Seed, did_you_mean)

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # recipes/ at the repository root links here
DEVICE_PATTERN = r"auto|cpu|cuda|cuda:\d+|mps"  # model.device (`model.loading.resolve_device`)
COMPARE_DIR = "compare"  # recipes/compare/: compare recipes (unlearnkit.pipeline.compare), listed apart


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]  # a name, path or id: not empty or only spaces


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSection(_Section):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    target_modules: Annotated[list[Text], Field(min_length=1)] | Text = "all-linear"


class ModelSection(_Section):
    name: Text = "world:target"  # "world:target" (the bundled tiny world) or a hub id / local dir
    tokenizer: Text | None = None  # defaults to `name`
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    revision: Text | None = None
    trust_remote_code: bool = False
    attn_implementation: Text | None = None
    # where the model runs for every phase (evaluation, training, attacks): auto = the GPU when one is visible
    device: str = "auto"
    lora: LoraSection | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, device):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return device


class DataSection(_Section):
    benchmark: Text = "world"  # a registered benchmark (`unlearn ls benchmarks`); safety: the tiny aligned chat world
    forget_split: Text = "forget"  # world, muse: forget; tofu: forget01 | forget05 | forget10
    data_dir: Text | None = None  # tofu / muse / wmdp / mmlu: local folder with the benchmark's files (else the hub)
    limit: PositiveInt | None = None  # the first N rows of each evaluation split (quick checks)
    subsets: list[Text] = Field(default_factory=list)  # wmdp: bio | chem | cyber; mmlu: subjects (empty: default)
    muse_corpus: Literal["news", "books"] = "news"  # muse: muse-bench/MUSE-News or MUSE-Books
    format: Text = "openunlearning"  # openunlearning | chat | llama2_chat
    system_prompt: str = ""
    max_length: PositiveInt = 512  # tokens per example (prompt + answer)
    idk_file: Text | None = None  # one "I don't know" answer per line (TOFU's idontknow.jsonl)
    generic_file: Text | None = None  # generic texts for dpo_generic_preferred (default: the retain rows as text)
    sequential: list[Text] = Field(default_factory=list)  # forget requests unlearned one after the other
    # where the forget set comes from: the benchmark's forget split; the model's own refusals on harmful
    # prompts (the attack paper's Scenario I); or a file of requests ({"text": ...} or {question, answer})
    forget_source: Literal["split", "refusals", "file"] = "split"
    forget_file: Text | None = None
    text_format: bool | None = None  # true: every method trains on bare text (Scenario I); null: the method's own


class DecodingSection(_Section):
    """How responses to harmful / benign prompts are generated (recorded in the report)."""

    do_sample: bool = False  # greedy by default; the seed used the model's sampling config (pitfall 7)
    temperature: Positive = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    top_k: NonNegativeInt = 0  # 0: off
    max_new_tokens: PositiveInt = 64
    seed: Seed = 0
    from_model: bool = False  # take do_sample/temperature/top_p/top_k from the model's generation_config


class SafetySection(_Section):
    """Harmfulness measurement: before/after harmful rate on probe prompts, and benign utility."""

    evaluate: bool | None = None  # null: on for data.benchmark=safety and whenever the guard is on
    judge: dict[str, Any] = Field(default_factory=lambda: {"name": "keyword"})  # a JUDGES component
    probe: Text = "world"  # harmful prompts: world (the safety world's held-out ones) | advbench | hexphi | ...
    probe_path: Text | None = None  # local file/folder for the probe source
    probe_limit: PositiveInt | None = None
    benign: Text = "world"  # benign prompts for utility: world | truthfulqa | none
    benign_path: Text | None = None
    benign_limit: PositiveInt | None = None
    harvest: Text = "world"  # harmful prompts whose refusals become the forget set (forget_source=refusals)
    harvest_path: Text | None = None
    harvest_limit: PositiveInt | None = None
    decoding: DecodingSection = Field(default_factory=DecodingSection)
    batch_size: PositiveInt = 32


class GuardSection(_Section):
    """The safety-regression guard: screen the requests, unlearn, probe, accept or reject."""

    enabled: bool = False
    screen_requests: bool = True  # run the request inspector on the forget set before unlearning
    inspector: Text | None = None  # a saved inspector dir; null: the built-in one (trained once, cached)
    max_flagged_fraction: Fraction = 0.1  # reject before unlearning when more requests than this are flagged
    max_harmful_increase: Fraction = 0.05  # reject after unlearning when the probe harmful rate rises more


class TrainSection(_Section):
    steps: PositiveInt | None = None  # optimizer steps; null: epochs decide
    epochs: Positive = 5.0  # passes over the forget set (fractions allowed)
    lr: Positive = 1e-5
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    warmup_steps: NonNegativeInt = 0
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    weight_decay: NonNegative = 0.0
    max_grad_norm: Positive | None = 1.0  # null: no clipping
    # YAML 1.1 reads a bare `no` as false: `train.mixed_precision=no` means "no" here
    mixed_precision: Annotated[Literal["no", "bf16", "fp16"], BeforeValidator(lambda v: "no" if v is False else v)] = "no"
    log_every: PositiveInt = 1
    save_every: NonNegativeInt = 0  # 0: no intermediate checkpoints
    resume_from: Text | None = None
    gradient_checkpointing: bool = False  # recompute activations in the backward: less memory, more compute
    sam_rho: NonNegative = 0.0  # sharpness-aware unlearning: the forget gradient at θ + ρ·g/‖g‖ (0: off)
    gru: bool = False  # gradient rectification: drop the forget gradient's conflict with the retain gradient
    sure_percentile: Annotated[float, Field(ge=0, lt=100, allow_inf_nan=False)] = 0.0  # SURE: train the top tensors
    # experiment trackers (`unlearnkit.train.tracking`): [tensorboard, wandb, ...]; one name alone is a list of one
    report_to: Annotated[list[Text], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(
        default_factory=list)

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, names: list[str]) -> list[str]:
        if not names:
            return names
        from unlearnkit.train.tracking import tracker_problem  # imports accelerate: only when trackers are named

        names = list(dict.fromkeys(names))
        problem = tracker_problem(names)
        if problem:
            raise ValueError(problem)
        return names


class SelectSection(_Section):
    """Evaluation during training and checkpoint selection (`unlearnkit.pipeline.selection`)."""

    every: NonNegativeInt = 0  # score every N optimizer steps (0: off, the last step is kept)
    metrics: Literal["cheap", "full"] = "cheap"  # cheap: forget/retain prob, teacher-forced; full: the whole suite
    rule: Literal["best", "first_at_or_below"] = "best"
    metric: Text = "forget_prob"
    mode: Literal["min", "max"] = "min"
    min_retain_ratio: Fraction | None = 0.9  # best: keep retain_prob >= ratio x its value before training
    target: Finite | None = None  # first_at_or_below: e.g. the retain model's forget_prob (MUSE's rule)
    constraint_metric: Text = "retain_prob"  # what min_retain_ratio applies to (model_utility needs metrics: full)


class EvalSection(_Section):
    before: bool = True  # evaluate the starting model too (cached for the tiny world)
    after: bool = True  # evaluate the unlearned model (`unlearn run --no-eval` turns both off)
    metrics: list[Text] | None = None  # a subset of the benchmark's metrics (its or OpenUnlearning's names); null: all
    batch_size: PositiveInt = 32  # rows per batch (generation; scoring also under max_tokens_per_batch)
    max_tokens_per_batch: PositiveInt | None = None  # token budget of a scoring batch (rows × longest); null: none
    max_new_tokens: PositiveInt = 200
    backend: Literal["unlearnkit", "lm_eval"] = "unlearnkit"  # wmdp / mmlu: lm_eval scores through lm-eval's tasks
    retain_model: Text | None = None  # tofu: the retain model (hub id or dir) for forget quality
    retain_logs: Text | None = None  # or a report/eval JSON holding its forget truth ratios
    privacy: bool | None = None  # MIA suite, privleak, memorization; null: on when the benchmark has a holdout
    select: SelectSection = Field(default_factory=SelectSection)


class WorldSection(_Section):
    cache_dir: Text | None = None  # default: $UNLEARNKIT_CACHE or ~/.cache/unlearnkit
    seed: Seed = 0
    size: Literal["default", "small"] = "default"  # small: 6 authors, 2-layer model, builds in seconds


class Recipe(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "npo"})
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    world: WorldSection = Field(default_factory=WorldSection)
    safety: SafetySection = Field(default_factory=SafetySection)
    guard: GuardSection = Field(default_factory=GuardSection)
    # robustness attacks by registered name (`unlearn ls attacks`): {relearn: {steps: 20}, quantize: {bits: [4]},
    # paraphrase: true, ...}; true / false set `enabled`, and an attack not named keeps its defaults
    attacks: dict[str, Any] = Field(default_factory=dict)
    seed: Seed = 0
    output_dir: Text = "runs/default"
    description: str = ""

    def method_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.method.items() if k != "name"}

    def build_method(self):
        if "name" not in self.method:
            raise UnlearnError(f"method needs a name; valid: {', '.join(METHODS.names())}")
        return METHODS.build(self.method["name"], **self.method_fields())

    def attack_fields(self) -> dict[str, dict[str, Any]]:
        """{attack name: the recipe's fields for it}: true / false is {enabled: ...}."""
        if not isinstance(self.attacks, dict):
            raise UnlearnError("attacks must be a mapping like {relearn: {steps: 20}, paraphrase: true}")
        out = {}
        for name, value in self.attacks.items():
            ATTACKS.get(name)  # did-you-mean on the attack's name
            if isinstance(value, bool) or value is None:
                value = {"enabled": value}
            if not isinstance(value, dict):
                raise UnlearnError(f"attacks.{name} must be true, false or a mapping of its fields"
                                   f" ({', '.join(ATTACKS.fields(name))}), not {value!r}")
            out[name] = value
        return out

    def build_attacks(self) -> list:
        """Every registered attack with the recipe's settings (enabled or not: `Attack.is_on` decides)."""
        given = self.attack_fields()
        return [ATTACKS.build(name, **given.get(name, {})) for name in ATTACKS.names()]

    def resolved(self) -> dict[str, Any]:
        """The fully resolved recipe, method defaults included (what `unlearn show` prints), with secrets
        (credentials in URLs, API keys) replaced by *** (`unlearnkit.secrets.redact_config`)."""
        data = self.model_dump(mode="json")
        name = self.method.get("name")
        if name:
            data["method"] = {"name": name, **METHODS.fields(name), **self.method_fields()}
            data["method"] = yaml.safe_load(yaml.safe_dump(data["method"], sort_keys=False))  # tuples -> lists
        attacks = {a.name: {k: getattr(a, k) for k in ATTACKS.fields(a.name)} for a in self.build_attacks()}
        data["attacks"] = yaml.safe_load(yaml.safe_dump(attacks, sort_keys=False))
        from unlearnkit.secrets import redact_config

        return redact_config(data)  # written into report.json / eval.json: no URL credentials, no keys


def find_recipe(name: str | None) -> Path:
    """A recipe path from a file path or a name under recipes/ ('default', 'tofu/npo')."""
    name = name or "default"
    candidates = [Path(name), Path("recipes") / name, RECIPES_DIR / name]
    for base in candidates:
        for path in (base, base.with_suffix(".yaml")):
            if path.is_file():
                return path
    known = list_recipes()
    if "." in name and not name.endswith((".yaml", ".yml")):
        raise UnlearnError(f"recipe '{name}' not found; to override a field write section.field=value"
                           f" (e.g. {name}=...), or give a recipe name first: unlearn run default {name}=...")
    raise UnlearnError(f"recipe '{name}' not found;{did_you_mean(name, known)} known recipes: "
                       f"{', '.join(known) or '(none)'}; or give a path to a .yaml file")


def list_recipes(compare: bool = False) -> list[str]:
    """Run recipes under recipes/; with `compare=True` the compare recipes under recipes/compare/
    (`unlearn compare`: a base recipe and a list of methods, not a run recipe)."""
    if not RECIPES_DIR.is_dir():
        return []
    paths = (p.relative_to(RECIPES_DIR) for p in RECIPES_DIR.rglob("*.yaml"))
    return sorted(str(p.with_suffix("")) for p in paths if (p.parts[0] == COMPARE_DIR) == compare)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise UnlearnError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-save the file as UTF-8") from None
    except OSError as err:
        raise UnlearnError(f"{path}: cannot read the recipe ({err.strerror or err}); check the path and its permissions") from None
    except yaml.YAMLError as err:
        raise UnlearnError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UnlearnError(f"{path}: a recipe must be a mapping of sections (model:, method:, ...)")
    return data


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "method":
            out[key] = _merge(out[key], value)
        elif key == "method" and isinstance(value, dict) and isinstance(out.get(key), dict):
            same = value.get("name", out[key].get("name")) == out[key].get("name")
            out[key] = {**out[key], **value} if same else copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set `a.b=c` in the raw recipe dict; `c` is parsed as YAML (numbers, lists, null)."""
    if "=" not in override:
        raise UnlearnError(f"override '{override}' must look like section.field=value (e.g. method.beta=0.05)")
    path, raw = override.split("=", 1)
    keys = path.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if keys == ["method", "name"] and value != data.get("method", {}).get("name"):
        data["method"] = {}  # another method: drop fields that belonged to the old one
        node = data["method"]
    node[keys[-1]] = value


def load_recipe(name: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, inherit (`base:`), override and validate a recipe; the method is validated too."""
    path = find_recipe(name)
    data = _read_yaml(path)
    if {"methods", "recipe"} & set(data):
        raise UnlearnError(f"{path} is a compare recipe (a base recipe and a list of methods), not a run recipe;"
                           f" run it with `unlearn compare {name or path}`")
    if "base" in data:
        if not isinstance(data["base"], str) or not data["base"].strip():
            raise UnlearnError(f"{path}: 'base:' must be the path of another recipe file (got {data['base']!r})")
        base_path = (path.parent / data.pop("base")).resolve()
        if not base_path.is_file():
            raise UnlearnError(f"{path}: base recipe {base_path} does not exist")
        base = _read_yaml(base_path)
        if "base" in base:
            raise UnlearnError(f"{base_path}: only one level of 'base:' is allowed")
        data = _merge(base, data)
    for override in overrides:
        apply_override(data, override)
    return validate_recipe(data, str(path))


def validate_recipe(data: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        from unlearnkit.recipe_checks import friendly_error

        raise friendly_error(err, source) from None
    if not isinstance(recipe.method, dict):
        raise UnlearnError(f"{source}: method must be a mapping like {{name: npo, beta: 0.1}}")
    from unlearnkit.recipe_checks import check_recipe

    try:
        method = recipe.build_method()
        attacks = recipe.build_attacks()
        check_recipe(recipe, method)  # options that contradict each other
    except UnlearnError as err:
        raise UnlearnError(f"{source}: {err}") from None
    given = recipe.attack_fields()
    recipe.attacks = {a.name: {k: getattr(a, k) for k in given[a.name]} for a in attacks if a.name in given}
    # keep the validated (type-coerced) values, so `show` and report.json record 1e-4 as a number
    recipe.method = {"name": recipe.method["name"], **{k: getattr(method, k) for k in recipe.method_fields()}}
    return recipe
