"""MUSE as a registered benchmark: its raw texts to unlearn (in max_length-token chunks), its evaluation
splits (verbmem, knowmem, privleak; `muse.plan_muse`), from the hub, a local folder, or the tiny world laid
out as MUSE (``data.data_dir=world:tiny``, so everything runs offline)."""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.benchmarks.base import Benchmark, BenchmarkData
from unlearnkit.benchmarks.muse import MUSE_ALIASES, MUSE_METRICS, MUSE_PRIVACY, load_muse, load_muse_raw, plan_muse
from unlearnkit.errors import UnlearnError
from unlearnkit.registry import BENCHMARKS
from unlearnkit.logs import info


WORLD_MUSE = "world:tiny"  # data.data_dir for muse: the tiny world in MUSE's layout (offline)


@BENCHMARKS.register("muse")
@dataclass
class MuseBenchmark(Benchmark):
    """MUSE (Shi et al., 2024): News or Books raw texts; verbmem, knowmem, privleak (data_dir=world:tiny offline)."""

    aliases = MUSE_ALIASES
    world_models = ("target", "retain")  # with data.data_dir=world:tiny
    question_rows = False
    truth_ratios = False
    text_training = True
    forget_metrics = ("forget_verbmem_rouge", "forget_knowmem_rouge")

    def load(self, data_cfg, world_cfg, log=info, progress=True) -> BenchmarkData:
        art, data_dir = None, data_cfg.data_dir
        if data_dir == WORLD_MUSE:  # the tiny world in MUSE's layout; world:target / world:retain work
            from unlearnkit.world.build import ensure_world
            from unlearnkit.world.muse_view import ensure_muse_view

            art = ensure_world(world_cfg.cache_dir, world_cfg.seed, progress=progress, log=log, size=world_cfg.size)
            data_dir = ensure_muse_view(art, log)
        raw = load_muse_raw(data_cfg.muse_corpus, data_dir, ("forget", "retain1"))
        splits = load_muse(data_cfg.muse_corpus, data_dir, limit=data_cfg.limit)
        return BenchmarkData(self.name, splits, [{"text": t} for t in raw["forget"]],
                             [{"text": t} for t in raw["retain1"]], art, self)

    def has_world_models(self, data_cfg) -> bool:
        return data_cfg.data_dir == WORLD_MUSE

    def check_request(self, name):
        raise UnlearnError("data.sequential is not available for MUSE yet (its sust/forget_1..4 splits are not"
                           " loaded); run one request per recipe, starting each from the previous run's model")

    def request_rows(self, data, name, data_cfg):
        raise UnlearnError("data.sequential is not available for MUSE yet (its sust/forget_1..4 splits are not"
                           " loaded); run one request per recipe, starting each from the previous run's model")

    def training_rows(self, data, forget_rows, tokenizer, max_length):
        from unlearnkit.data.texts import pretraining_chunks, text_of

        rows = data.train_forget if forget_rows is None else forget_rows  # raw articles / chapters: pieces
        return (pretraining_chunks([text_of(r) for r in rows], tokenizer, max_length),
                pretraining_chunks([text_of(r) for r in data.train_retain], tokenizer, max_length))

    def selection_rows(self, data):
        return list(data.splits.knowmem_forget), list(data.splits.knowmem_retain)  # its QA rows

    def forget_question_rows(self, data):
        return list(data.splits.knowmem_forget)

    def with_forget_rows(self, data, rewrite):
        """The knowmem forget rows rewritten (verbmem prompts are text to continue, not questions)."""
        from unlearnkit.benchmarks.base import replace_split

        return replace_split(data, "knowmem_forget", [rewrite(dict(row)) for row in data.splits.knowmem_forget])

    def known_metrics(self):
        return MUSE_METRICS + MUSE_PRIVACY

    def metric_names(self, data, eval_cfg):
        return list(MUSE_METRICS) + (list(MUSE_PRIVACY) if self.privacy_enabled(data, eval_cfg) else [])

    def privacy_enabled(self, data, eval_cfg) -> bool:
        holdout = data.splits.privleak and {"forget", "holdout"} <= set(data.splits.privleak)
        if eval_cfg.privacy and not holdout:
            raise UnlearnError("eval.privacy on MUSE needs privleak/forget.json and privleak/holdout.json in"
                               " data.data_dir (or the hub's privleak config)")
        return bool(holdout) if eval_cfg.privacy is None else eval_cfg.privacy

    def plan(self, ev, data, fmt, eval_cfg, *, retain_truth_ratios=None, retain_auc=None, metrics=None):
        from unlearnkit.benchmarks.privacy import privleak_reference

        wanted = self.metric_names(data, eval_cfg) if metrics is None else list(metrics)
        finish_muse = plan_muse(ev, data.splits, fmt=fmt, retain_auc=retain_auc, metrics=wanted)

        def finish() -> dict:
            result = finish_muse().to_dict()
            result.pop("seconds", None)
            if any(m in MUSE_PRIVACY for m in wanted):
                result["privleak_reference"] = privleak_reference(retain_auc)
            return result

        return finish
