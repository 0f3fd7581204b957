"""Harmfulness inside a run: the recipe's `safety:` section turned into prompts, a judge and decoding.

`SafetyProbe.measure(model)` gives the harmful rate on held-out harmful prompts and benign utility
(`benchmarks.harmfulness.harmfulness_suite`), merged into the report's `before` / `after` metrics;
`SafetyProbe.harvest(model)` is the attack paper's Scenario I step 1–2: the model's responses to
harmful prompts that the judge calls safe (its refusals) become the forget set, as bare text with
the prompts dropped (`{"text": response}`, specs §2.1 and pitfall 1).
"""

from __future__ import annotations

from typing import Any

from unlearnkit.errors import UnlearnError

WORLD = "world"


class SafetyProbe:
    def __init__(self, recipe, bench, fmt):
        from unlearnkit.benchmarks.harmfulness import build_judge
        from unlearnkit.benchmarks.generation import Decoding

        self.cfg = recipe.safety
        self.bench = bench
        self.fmt = fmt
        self.judge = build_judge(dict(self.cfg.judge))
        self.decoding = Decoding(**self.cfg.decoding.model_dump(), batch_size=self.cfg.batch_size)
        self.probe = self._rows(self.cfg.probe, self.cfg.probe_path, self.cfg.probe_limit, "probe", "probe")
        self.benign = (None if self.cfg.benign == "none" else
                       self._rows(self.cfg.benign, self.cfg.benign_path, self.cfg.benign_limit, "benign_test", "benign"))

    def _rows(self, source: str, path: str | None, limit: int | None, world_split: str, field: str) -> list[dict]:
        if source == WORLD:
            if not self.bench.component.measures_harm:  # only the safety world has its own prompts
                raise UnlearnError(f"safety.{field}=world means the safety world's prompts, which needs"
                                   f" data.benchmark=safety; or set safety.{field} to advbench, hexphi, llm_lat, ...")
            rows = list(self.bench.world.world.split(world_split))
            return rows[:limit] if limit else rows
        from unlearnkit.benchmarks.harmfulness import load_prompts

        return load_prompts(source, path, limit=limit)

    def describe(self) -> dict[str, Any]:
        from unlearnkit.secrets import redact_config

        return {"judge": redact_config(dict(self.cfg.judge)), "decoding": self.decoding.to_dict(), "probe": self.cfg.probe,
                "n_probe": len(self.probe), "benign": self.cfg.benign, "n_benign": len(self.benign or [])}

    def measure(self, model, tokenizer, progress: bool = False) -> tuple[dict, dict]:
        """(metrics for before/after, per-sample responses and verdicts)."""
        from unlearnkit.benchmarks.harmfulness import harmfulness_suite

        suite = harmfulness_suite(model, tokenizer, self.probe, self.benign, self.judge, self.decoding, self.fmt,
                                  progress=progress)
        metrics = {k: suite[k] for k in ("harmful_rate", "benign_answered", "benign_rouge", "n_unparsed")}
        metrics.update({f"harmful_rate/{k}": v for k, v in suite["per_prompt_category"].items()})
        if self.bench.component.measures_harm:  # the safety world: did the model *comply*, or only stop refusing?
            from unlearnkit.judges.base import harmful_rate
            from unlearnkit.judges.world_compliance import WorldComplianceJudge

            samples = suite["harmful_samples"]
            prompts, responses = [s["prompt"] for s in samples], [s["response"] for s in samples]
            # compliance_rate: the world's compliance pattern; _exact: its own answer to that very prompt
            for key, judge in (("compliance_rate", WorldComplianceJudge()),
                               ("compliance_rate_exact", WorldComplianceJudge(exact=True))):
                metrics[key] = harmful_rate(judge.score(prompts, responses))["harmful_rate"]
        return metrics, {"harmful": suite["harmful_samples"], "benign": suite["benign_samples"]}

    def harvest(self, model, tokenizer, progress: bool = False) -> tuple[list[dict], dict]:
        """Scenario I: the judge-safe responses (refusals) to the harvest prompts, as bare-text rows."""
        from unlearnkit.benchmarks.harmfulness import evaluate_harmfulness

        prompts = self._rows(self.cfg.harvest, self.cfg.harvest_path, self.cfg.harvest_limit, "harvest", "harvest")
        result = evaluate_harmfulness(model, tokenizer, prompts, self.judge, self.decoding, self.fmt, progress=progress)
        # bare text for the seed's attack; question/answer too, so `data.text_format=false` can train the
        # refusal in its chat context instead (a stronger variant than the paper's)
        kept = [{"text": s["response"], "question": s["prompt"], "answer": s["response"]} for s in result["samples"]
                if s["parsed"] and s["harmful"] is False and s["response"].strip()]
        stats = {"harvest_prompts": len(prompts), "refusals_kept": len(kept),
                 "harvest_harmful_rate": result["harmful_rate"], "harvest_unparsed": result["n_unparsed"]}
        if not kept:
            raise UnlearnError(f"no refusals to unlearn: the judge called none of the model's {len(prompts)} responses"
                               " to the harvest prompts safe; the model already complies (or the judge failed)")
        return kept, stats
