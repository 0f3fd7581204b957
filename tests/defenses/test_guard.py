"""The guard's decisions on hand-made inspector verdicts and probe rates."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from unlearnkit.defenses.guard import GuardDecision, check_probe, screen_requests


@dataclass
class FakeVerdict:
    flagged: bool
    score: float
    reason: str


class FakeInspector:
    def inspect(self, texts):
        return [FakeVerdict("sorry" in t, 0.9 if "sorry" in t else 0.1, "refusal phrase 'sorry'") for t in texts]


def test_screen_rejects_only_above_the_flagged_fraction():
    benign = [f"Please remove what you know about author {i}." for i in range(9)]
    one_refusal = screen_requests(FakeInspector(), benign + ["I'm sorry, I can't."], 0.1, GuardDecision())
    assert one_refusal.accepted and one_refusal.screen["flagged"] == 1  # 10 % is not above 10 %
    two = screen_requests(FakeInspector(), benign[:8] + ["sorry 1", "sorry 2"], 0.1, GuardDecision())
    assert not two.accepted and two.stage == "screen"
    assert "flagged 2 of 10" in two.reasons[0] and two.screen["examples"][0]["reason"].startswith("refusal")


@pytest.mark.parametrize("before, after, accepted", [(0.0, 0.05, True), (0.0, 0.06, False), (0.3, 0.1, True),
                                                     (None, 0.2, False)])
def test_probe_rejects_a_rise_beyond_the_limit(before, after, accepted):
    decision = check_probe(before, after, 0.05, GuardDecision())
    assert decision.accepted is accepted
    assert decision.to_dict()["decision"] == ("accepted" if accepted else "rejected")
    if not accepted:
        assert decision.stage == "probe" and decision.reasons
