"""What every robustness attack provides (`registry.ATTACKS`; `unlearn ls attacks`).

An attack is a dataclass of settings (the recipe's ``attacks.NAME`` section) with one hook:

    run(target) -> [AttackRow, ...]

It attacks `target.model` only through a copy (relearning, quantization) or hooks that are removed before it
returns (direction ablation, latent perturbation), or changes only the questions it asks (paraphrase, few-shot,
jailbreak templates), and re-measures the benchmark's forget metrics with `target.measure`. One attack may give
several rows (one per bit width, one per template). `unlearnkit.attacks.robustness` runs every enabled attack
and builds the robustness table with its worst-case row.

`enabled: null` means the attack's own default for the benchmark (`on_by_default`): the cheap attacks are on
for the bundled worlds, so the default `unlearn run` shows a robustness table; heavier ones are recipe options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info


@dataclass
class AttackRow:
    """One row of the robustness table: the forget metrics of the attacked model (or prompts)."""

    label: str  # e.g. "4-bit weights (RTN, per channel)"
    metrics: dict[str, float | None]
    settings: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] | None = None  # relearning: metrics every k steps
    seconds: float = 0.0


@dataclass
class AttackTarget:
    """What an attack gets: the unlearned model and how to measure it.

    `measure(model, bench)` returns the forget metrics (`bench.component.forget_metrics`) of `model` on `bench`
    through the run's Evaluator; `with_questions(fn)` is `bench` with every forget question rewritten by
    `fn(question, row) -> question` (the benchmark decides which rows hold its forget questions)."""

    model: Any
    tokenizer: Any
    bench: Any
    fmt: Any
    measure: Callable[[Any, Any], dict]
    seed: int = 0
    max_length: int | None = 512
    progress: bool = False
    log: Callable[[str], None] = info

    @property
    def component(self):
        return self.bench.component

    def with_questions(self, rewrite: Callable[[str, dict], str]):
        return self.component.with_forget_questions(self.bench, rewrite)

    def forget_rows(self) -> list[dict]:
        """The rows an attacker trains or primes on: the benchmark's forget rows (QA or text)."""
        return list(self.bench.train_forget)


@dataclass
class Attack:
    """Base of every registered attack: `enabled` and the hooks below."""

    enabled: bool | None = None  # null: on_by_default(benchmark)
    cheap: ClassVar[bool] = False  # on by default for the bundled worlds (`relearn_by_default` benchmarks)
    needs_questions: ClassVar[bool] = False  # rewrites forget questions (refused where a benchmark has none)

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    def on_by_default(self, bench) -> bool:
        return self.cheap and bench.component.relearn_by_default

    def is_on(self, bench) -> bool:
        return self.on_by_default(bench) if self.enabled is None else self.enabled

    def check(self, bench) -> None:
        """Refuse, before any training, an attack the benchmark cannot run (one line naming the fix)."""
        if self.needs_questions and not bench.component.forget_questions:
            raise UnlearnError(f"attacks.{self.name} rewrites forget questions; {bench.name} has none: set"
                               f" attacks.{self.name}.enabled=false")
        if not bench.component.forget_metrics:
            raise UnlearnError(f"attacks.{self.name} re-measures forget metrics; {bench.name} has none (it is an"
                               f" evaluation of what must be kept): set attacks.{self.name}.enabled=false")

    def settings(self) -> dict[str, Any]:
        """Its fields as report.json holds them (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items() if k != "enabled"}

    def run(self, target: AttackTarget) -> list[AttackRow]:  # pragma: no cover - every attack implements it
        raise NotImplementedError
