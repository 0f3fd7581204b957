"""The two bundled worlds as benchmarks: `world` (fictitious authors; target and retain models) and `safety`
(the tiny aligned chat world: its fictitious-author facts, with harmfulness measured next to them).

Both are generated and trained offline on first use (cached, under a lock) and evaluated with the TOFU
suite (`base.Benchmark`); their models are addressed as ``world:target`` / ``world:retain`` and
``world:aligned`` / ``world:compliant``. A sequential run's requests are ``forget`` (every forget author) or
``forget_<k>`` (the k-th forget author, from 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unlearnkit.benchmarks.base import Benchmark, BenchmarkData
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import BENCHMARKS
from unlearnkit.logs import info


def _check_author_request(name: str, world: str) -> None:
    if not re.fullmatch(r"forget(_[1-9][0-9]*)?", name):
        raise UnlearnError(f"data.sequential: '{name}' is not a forget request of the {world} world; valid: forget"
                           " (every forget author) or forget_1, forget_2, ... (one author each)")


def _author_request(data: BenchmarkData, name: str, world: str) -> list[dict]:
    authors: dict[str, list[dict]] = {}
    for row in data.train_forget:
        authors.setdefault(row.get("author", ""), []).append(row)
    groups = list(authors.values())
    valid = ["forget", *(f"forget_{k + 1}" for k in range(len(groups)))]
    if name == "forget":
        return list(data.train_forget)
    if name in valid:
        return groups[int(name.split("_")[1]) - 1]
    raise UnlearnError(f"unknown forget request '{name}' for the {world} world; valid: {', '.join(valid)}")


@BENCHMARKS.register("world")
@dataclass
class WorldBenchmark(Benchmark):
    """The bundled tiny world: fictitious authors in TOFU's schema, offline (the default)."""

    generated = True
    world_models = ("target", "retain")
    relearn_by_default = True

    def load(self, data_cfg, world_cfg, log=info, progress=True) -> BenchmarkData:
        from unlearnkit.world.build import ensure_world

        art = ensure_world(world_cfg.cache_dir, world_cfg.seed, progress=progress, log=log, size=world_cfg.size)
        return BenchmarkData(self.name, art.world, art.world.forget, art.world.retain, art, self)

    def check_request(self, name):
        _check_author_request(name, "tiny")

    def request_rows(self, data, name, data_cfg):
        return _author_request(data, name, "tiny")


@BENCHMARKS.register("safety")
@dataclass
class SafetyBenchmark(Benchmark):
    """The bundled tiny aligned chat world: its author facts, and harmful rate / benign utility beside them."""

    generated = True
    world_models = ("aligned", "compliant")
    measures_harm = True

    def load(self, data_cfg, world_cfg, log=info, progress=True) -> BenchmarkData:
        from unlearnkit.world.safety_build import ensure_safety_world

        art = ensure_safety_world(world_cfg.cache_dir, world_cfg.seed, progress=progress, log=log, size=world_cfg.size)
        authors = art.world.authors  # its fictitious-author facts, in TOFU's schema
        return BenchmarkData(self.name, authors, authors.forget, authors.retain, art, self)

    def check_request(self, name):
        _check_author_request(name, "safety")

    def request_rows(self, data, name, data_cfg):
        return _author_request(data, name, "safety")
