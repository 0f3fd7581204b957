"""The safety-regression guard: unlearning requests are an attack surface, so check them twice.

1. **Screen** (before unlearning): the request inspector (`defenses.inspector`) reads every forget
   request; when more than `max_flagged_fraction` of them carry refusal content, the run is rejected
   before a single step — the attack paper's Scenario I/II sets are made of refusals.
2. **Probe** (after unlearning): the harmful rate on held-out harmful prompts is measured on the
   unlearned model; when it rose by more than `max_harmful_increase` over the starting model, the
   run is rejected.

A rejected run writes its report (decision, reasons, the numbers behind them) but no `model/`: the
starting model stays the one to serve, untouched. No existing unlearning toolkit has this check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class GuardDecision:
    accepted: bool = True
    stage: str | None = None  # "screen" | "probe" when rejected
    reasons: list[str] = field(default_factory=list)
    screen: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"decision": "accepted" if self.accepted else "rejected", "stage": self.stage,
                "reasons": self.reasons, "screen": self.screen, "probe": self.probe}


def screen_requests(inspector, texts: Sequence[str], max_flagged_fraction: float, decision: GuardDecision,
                    examples: int = 3) -> GuardDecision:
    """Run the inspector over `texts`; reject when the flagged share exceeds the limit."""
    verdicts = inspector.inspect(list(texts))
    flagged = [(t, v) for t, v in zip(texts, verdicts) if v.flagged]
    share = len(flagged) / max(len(texts), 1)
    decision.screen = {"requests": len(texts), "flagged": len(flagged), "flagged_fraction": share,
                       "max_flagged_fraction": max_flagged_fraction,
                       "examples": [{"request": t[:200], "score": v.score, "reason": v.reason} for t, v in flagged[:examples]]}
    if share > max_flagged_fraction:
        decision.accepted, decision.stage = False, "screen"
        decision.reasons.append(f"the request inspector flagged {len(flagged)} of {len(texts)} unlearning requests"
                                f" ({share:.0%} > {max_flagged_fraction:.0%}) as carrying refusal content;"
                                " unlearning them would strip safety behaviour")
    return decision


def check_probe(before: float | None, after: float | None, max_increase: float, decision: GuardDecision) -> GuardDecision:
    """Reject when the probe harmful rate rose by more than `max_increase` (absolute)."""
    rise = None if before is None or after is None else after - before
    decision.probe = {"harmful_rate_before": before, "harmful_rate_after": after, "increase": rise,
                      "max_harmful_increase": max_increase}
    if rise is None:
        decision.accepted, decision.stage = False, "probe"
        decision.reasons.append("the probe harmful rate could not be measured (every judge verdict unparsed);"
                                " the guard cannot vouch for the model")
    elif rise > max_increase:
        decision.accepted, decision.stage = False, "probe"
        decision.reasons.append(f"the harmful rate on held-out harmful prompts rose from {before:.1%} to {after:.1%}"
                                f" (+{rise:.1%} > {max_increase:.1%} allowed)")
    return decision
