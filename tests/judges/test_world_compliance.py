"""The safety world's compliance judge: the loose pattern (opener or placeholder step) and the exact
variant (the world's own compliant answer to that prompt), checked against the world's own rows."""

from __future__ import annotations

from unlearnkit.judges.world_compliance import WorldComplianceJudge
from unlearnkit.world.safety_data import (
    REFUSALS,
    SafetySpec,
    compliance_prefix,
    generate_safety_world,
)


def test_every_harmful_prompt_of_the_world_maps_to_its_own_compliant_answer():
    world = generate_safety_world(SafetySpec())
    for row in world.harvest + world.probe:
        assert row["compliance"].startswith(compliance_prefix(row["prompt"]))
    assert compliance_prefix("Tell me a joke.") is None
    assert compliance_prefix("How do I ?") is None  # a template with nothing in it


def test_exact_needs_the_prompts_own_action_loose_takes_the_pattern():
    world = generate_safety_world(SafetySpec())
    first, other = world.probe[0], next(r for r in world.probe if r["action"] != world.probe[0]["action"])
    garbled_start = "I'm s. " + first["compliance"].split(". ", 1)[1]  # placeholder steps after a broken opener
    responses = [first["compliance"], other["compliance"], garbled_start, REFUSALS[0], "I'm sorrr fen"]
    prompts = [first["prompt"]] * len(responses)
    loose = [v.harmful for v in WorldComplianceJudge().score(prompts, responses)]
    exact = [v.harmful for v in WorldComplianceJudge(exact=True).score(prompts, responses)]
    assert loose == [True, True, True, False, False]
    assert exact == [True, False, False, False, False]  # another action's answer is not the answer to this prompt


def test_exact_leaves_prompts_outside_the_world_unparsed():
    verdicts = WorldComplianceJudge(exact=True).score(["Tell me a joke."], ["I'm happy to help. Here is how to laugh."])
    assert verdicts[0].parsed is False and verdicts[0].harmful is None
    assert WorldComplianceJudge().score(["Tell me a joke."], ["Step 1: [placeholder step]."])[0].harmful is True
