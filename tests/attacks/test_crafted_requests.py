"""Scenario II crafting: the score formula, the agents' loop (history, best candidate, retries), reply
parsing, the offline backend, filtering, the input readers and `unlearn craft` end to end (offline)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from unlearnkit.agents.base import BackendError, ChatBackend
from unlearnkit.agents.offline import OfflineBackend
from unlearnkit.attacks.crafted_requests import (Crafter, craft_requests, read_texts, request_score,
                                                 rouge_l_recall)
from unlearnkit.attacks.crafting_pools import (COPYRIGHT_TEMPLATES, KINDS, NEWS_TEMPLATES, PII_TEMPLATES,
                                               carrier_texts, in_split, refusal_texts)
from unlearnkit.attacks.crafting_prompts import (EVAL_SYSTEM, REWRITE_SYSTEM, ReplyFormatError, count_candidates,
                                                 eval_messages, parse_eval_reply, parse_rewrite_reply)
from unlearnkit.cli import app
from unlearnkit.errors import UnlearnError
from unlearnkit.judges.base import Verdict
from unlearnkit.registry import BACKENDS

REFUSAL = "I'm sorry, but I can't help with that request. It could put people in danger."
CARRIER = "Residents of Quarrow Bay found that 12 sheep had been elected to the parish board."


class ScriptedBackend(ChatBackend):
    """Replies from fixed lists (rewrite replies, evaluation replies) and records every prompt it gets."""

    def __init__(self, rewrites, evaluations):
        self.rewrites, self.evaluations = list(rewrites), list(evaluations)
        self.prompts: list[tuple[str, str]] = []

    def chat(self, messages, *, temperature=0.0, max_tokens=512):
        system, user = messages[0]["content"], messages[1]["content"]
        self.prompts.append((system, user))
        return (self.rewrites if system == REWRITE_SYSTEM else self.evaluations).pop(0)


def data(text: str) -> str:
    return f"Sure! [DATA]\n{text}\n[/DATA]"


# ------------------------------------------------------------------------------------------ score


def test_score_formula_hand_computed():
    # 2·0.5 + 0.25 + 0.5·(0.8 + 0.6) = 1.95
    assert request_score("news", 0.5, 0.25, 0.8, 0.6) == pytest.approx(1.95)
    assert request_score("copyright", 1.0, 1.0, 1.0, 1.0) == pytest.approx(4.0)


def test_pii_score_ignores_s_con():
    # 2·0.5 + 0.5·(0.8 + 0.6) = 1.7, whatever S_con is
    assert request_score("pii", 0.5, 0.9, 0.8, 0.6) == pytest.approx(1.7)
    assert request_score("pii", 0.5, None, 0.8, 0.6) == pytest.approx(1.7)


def test_rouge_l_recall_of_the_reference_inside_the_candidate():
    assert rouge_l_recall("alpha beta gamma delta", "zeta alpha beta gamma delta omega") == pytest.approx(1.0)
    assert rouge_l_recall("alpha beta gamma delta", "alpha beta") == pytest.approx(0.5)
    assert rouge_l_recall("alpha beta", "omega") == 0.0


# ------------------------------------------------------------------------------------ the loop


def test_keeps_the_best_of_t_iterations_with_the_hand_computed_score():
    full, half, none = f"{CARRIER} {REFUSAL}", f"{CARRIER} I'm sorry.", CARRIER
    backend = ScriptedBackend([data(half), data(full), data(none)],
                              ["[SEMANTIC] 0.50\n[SYNTACTIC] 0.90", "[SEMANTIC] 0.80\n[SYNTACTIC] 0.70",
                               "[SEMANTIC] 1.00\n[SYNTACTIC] 1.00"])
    result = Crafter(backend, backend, iterations=3).craft_one(REFUSAL, CARRIER, "news")
    assert result.request == full and result.parts["iteration"] == 2 and result.iterations == 3
    assert result.parts["S_ori"] == pytest.approx(1.0) and result.parts["S_con"] == pytest.approx(1.0)
    assert result.score == pytest.approx(2 * 1.0 + 1.0 + 0.5 * (0.8 + 0.7))
    expected = [request_score("news", rouge_l_recall(REFUSAL, c), rouge_l_recall(CARRIER, c), sem, syn)
                for c, sem, syn in ((half, 0.5, 0.9), (full, 0.8, 0.7), (none, 1.0, 1.0))]
    assert [h["score"] for h in result.history] == pytest.approx(expected)
    assert max(expected) == expected[1]


def test_ties_go_to_the_later_iteration():
    backend = ScriptedBackend([data(f"{CARRIER} {REFUSAL}"), data(f"{REFUSAL} {CARRIER}")],
                              ["[SEMANTIC] 0.9\n[SYNTACTIC] 0.9"] * 2)
    result = Crafter(backend, backend, iterations=2).craft_one(REFUSAL, CARRIER, "pii")
    assert result.history[0]["score"] == pytest.approx(result.history[1]["score"])
    assert result.parts["iteration"] == 2 and result.parts["S_con"] is None


def test_the_rewrite_prompt_carries_the_full_history():
    candidates = [f"{CARRIER} candidate number {k}. {REFUSAL}" for k in range(1, 5)]
    backend = ScriptedBackend([data(c) for c in candidates], ["[SEMANTIC] 0.5\n[SYNTACTIC] 0.5"] * 4)
    Crafter(backend, backend, iterations=4).craft_one(REFUSAL, CARRIER, "copyright")
    rewrite_prompts = [user for system, user in backend.prompts if system == REWRITE_SYSTEM]
    assert [count_candidates(p) for p in rewrite_prompts] == [0, 1, 2, 3]
    last = rewrite_prompts[-1]
    assert all(c in last for c in candidates[:3]) and "S=" in last and "S_ori=" in last and "S_con=" in last
    assert "S = 2*S_ori + S_con" in last and "S = 2*S_ori" not in rewrite_prompts[0]


def test_pii_iterative_prompt_states_the_score_without_s_con():
    backend = ScriptedBackend([data(f"{CARRIER} {REFUSAL}")] * 2, ["[SEMANTIC] 0.5\n[SYNTACTIC] 0.5"] * 2)
    Crafter(backend, backend, iterations=2).craft_one(REFUSAL, CARRIER, "pii")
    second = [user for system, user in backend.prompts if system == REWRITE_SYSTEM][1]
    assert "S = 2*S_ori + 0.5*(S_sem + S_syn)" in second and "S_con=" not in second


# --------------------------------------------------------------------------------- reply parsing


@pytest.mark.parametrize("reply, expected", [
    ("[SEMANTIC] 0.85\n[SYNTACTIC] 0.90", (0.85, 0.90)),
    ("Here you go.\n[semantic]: 1\n[SYNTACTIC] = .5", (1.0, 0.5)),
    ("[SYNTACTIC] 0.3 [SEMANTIC] 0.7 [PII] 1", (0.7, 0.3)),
])
def test_parse_eval_reply(reply, expected):
    assert parse_eval_reply(reply) == pytest.approx(expected)


@pytest.mark.parametrize("reply, fragment", [
    ("[SEMANTIC] 0.85", "SYNTACTIC"), ("semantic: high, syntactic: fine", "SEMANTIC"), ("", "SEMANTIC"),
    ("[SEMANTIC] 1.5\n[SYNTACTIC] 0.5", "outside [0, 1]"), ("[SEMANTIC] -0.1\n[SYNTACTIC] 0.5", "outside"),
])
def test_parse_eval_reply_rejects_malformed_replies(reply, fragment):
    with pytest.raises(ReplyFormatError, match=re.escape(fragment)):
        parse_eval_reply(reply)


def test_parse_rewrite_reply():
    assert parse_rewrite_reply("ok [DATA]\n merged text \n[/DATA] bye") == "merged text"
    for bad in ("no tags here", "[DATA]   [/DATA]", "[DATA] unterminated"):
        with pytest.raises(ReplyFormatError, match="DATA"):
            parse_rewrite_reply(bad)


def test_unparsable_replies_are_retried_then_fail_loudly():
    backend = ScriptedBackend(["no tags", data(REFUSAL)], ["garbage", "[SEMANTIC] 0.4\n[SYNTACTIC] 0.6"])
    result = Crafter(backend, backend, iterations=1, retries=1).craft_one(REFUSAL, CARRIER, "news")
    assert (result.parts["S_sem"], result.parts["S_syn"], result.parts["parsed"]) == (0.4, 0.6, True)

    backend = ScriptedBackend([data(REFUSAL)], ["garbage"] * 3)
    with pytest.raises(UnlearnError, match="evaluation agent .*after 3 attempts"):
        Crafter(backend, backend, iterations=1, retries=2).craft_one(REFUSAL, CARRIER, "news")


def test_on_unparsed_zero_scores_like_the_seed_and_says_so():
    backend = ScriptedBackend([data(REFUSAL)], ["garbage"])
    result = Crafter(backend, backend, iterations=1, retries=0, on_unparsed="zero").craft_one(REFUSAL, CARRIER, "pii")
    assert (result.parts["S_sem"], result.parts["S_syn"], result.parts["parsed"]) == (0.0, 0.0, False)
    assert result.score == pytest.approx(2 * rouge_l_recall(REFUSAL, REFUSAL))


def test_bad_settings_name_the_value():
    backend = OfflineBackend()
    with pytest.raises(UnlearnError, match="iterations=0"):
        Crafter(backend, backend, iterations=0)
    with pytest.raises(UnlearnError, match="on_unparsed='skip'"):
        Crafter(backend, backend, on_unparsed="skip")
    with pytest.raises(UnlearnError, match="did you mean 'news'"):
        craft_requests([REFUSAL], "newz")
    with pytest.raises(UnlearnError, match="no refusal texts"):
        craft_requests(["  "], "news")


# ------------------------------------------------------------------------------ offline backend


def test_offline_backend_is_registered_deterministic_and_varies_with_the_iteration():
    assert BACKENDS.get("offline") is OfflineBackend
    refusals = refusal_texts(4, seed=3)
    first = [r.to_json() for r in craft_requests(refusals, "news", iterations=4).kept]
    second = [r.to_json() for r in craft_requests(refusals, "news", iterations=4, backend=BACKENDS.build("offline")).kept]
    assert first == second
    history = craft_requests(refusals[:1], "news", iterations=4).kept[0].history
    assert len({h["request"] for h in history}) >= 3  # different arrangements per iteration
    assert history[0]["parts"]["S_ori"] < history[3]["parts"]["S_ori"] == pytest.approx(1.0)


def test_offline_evaluator_answers_in_the_fixed_format():
    reply = OfflineBackend().chat(eval_messages(REFUSAL, f"{CARRIER} {REFUSAL}"))
    assert re.fullmatch(r"\[SEMANTIC\] \d\.\d\d\n\[SYNTACTIC\] \d\.\d\d", reply)
    assert parse_eval_reply(reply) == (1.0, 1.0)
    low_sem, _ = parse_eval_reply(OfflineBackend().chat(eval_messages(REFUSAL, CARRIER)))
    assert low_sem < 0.2


def test_offline_backend_refuses_other_roles():
    with pytest.raises(BackendError, match="only plays"):
        OfflineBackend().chat([{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "hi"}])
    with pytest.raises(BackendError, match="ORIGINAL"):
        OfflineBackend().chat([{"role": "system", "content": EVAL_SYSTEM}, {"role": "user", "content": "rate this"}])


# ------------------------------------------------------------------------------------ filtering


def test_filter_by_callable_judge_object_and_judge_name():
    refusals = refusal_texts(4, seed=1)
    carriers = ["Quarrow Bay news one.", "Pimbleton news two.", "Quarrow Bay news three.", "Marrowgate news four."]
    by_callable = craft_requests(refusals, "news", carriers=carriers, iterations=1, filter=lambda t: "Quarrow" in t)
    assert [r.carrier for r in by_callable.kept] == [carriers[0], carriers[2]] and len(by_callable.filtered_out) == 2

    class Judge:
        def score(self, prompts, responses):
            return [Verdict("Pimbleton" in r) if k else Verdict(None, parsed=False) for k, r in enumerate(responses)]

    by_judge = craft_requests(refusals, "news", carriers=carriers, iterations=1, filter=Judge())
    assert [r.carrier for r in by_judge.kept] == [carriers[1]]  # the unparsed verdict is not kept

    # the keyword judge calls a text with a refusal phrase "not harmful", so nothing passes
    assert craft_requests(refusals, "news", iterations=1, filter="keyword").kept == []
    with pytest.raises(UnlearnError, match="neither"):
        craft_requests(refusals, "news", iterations=1, filter=42)


# ------------------------------------------------------------------------------------ the pools


def test_carrier_pools_are_fictitious_and_split_into_disjoint_families():
    for text in carrier_texts("pii", 40, seed=5):
        assert all(re.fullmatch(r"\+1 \(212\) 555-01\d\d", p) for p in re.findall(r"\+1 \(212\) [\d-]+", text))
        assert all(e.split("@")[1] in ("example.com", "example.org", "example.net") for e in re.findall(r"\S+@\S+?(?=[,.]?\s|[,.]?$)", text))
    for pool in (PII_TEMPLATES, NEWS_TEMPLATES, COPYRIGHT_TEMPLATES):
        parts = [set(in_split(pool, s)) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(pool)
    assert set(refusal_texts(30, split="test")).isdisjoint(refusal_texts(200, split="train"))
    assert {len(carrier_texts(k, 3)) for k in KINDS} == {3}


# ------------------------------------------------------------------------------------ input files


def test_read_texts_formats_and_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"request": "two"}\n{"question": "Q?", "answer": "A."}\n')
    assert read_texts(tmp_path / "a.jsonl") == ["one", "two", "Q?\nA."]
    (tmp_path / "b.json").write_text(json.dumps([{"text": "x"}, "y"]))
    assert read_texts(tmp_path / "b.json") == ["x", "y"]
    (tmp_path / "c.txt").write_text("first\n\n second \n")
    assert read_texts(tmp_path / "c.txt") == ["first", "second"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    (tmp_path / "nokey.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    for name, fragment in (("bad.jsonl", "line 2: not valid JSON"), ("nokey.jsonl", "found: body"),
                           ("empty.jsonl", "is empty"), ("missing.jsonl", "does not exist")):
        with pytest.raises(UnlearnError, match=re.escape(fragment)):
            read_texts(tmp_path / name)


# ---------------------------------------------------------------------------------- the CLI


def test_cli_craft_end_to_end_with_the_offline_backend(tmp_path, env):
    refusals = tmp_path / "refusals.jsonl"
    refusals.write_text("".join(json.dumps({"text": t}) + "\n" for t in refusal_texts(3, seed=2)))
    out = tmp_path / "out" / "crafted.jsonl"
    result = CliRunner().invoke(app, ["craft", "--refusals", str(refusals), "--kind", "pii", "--iterations", "3",
                                      "--backend", "offline", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and f"wrote 3 pii requests to {out}" in result.stdout
    for row, refusal in zip(rows, refusal_texts(3, seed=2)):
        assert set(row) == {"request", "kind", "score", "parts", "iterations", "refusal", "carrier"}
        assert row["kind"] == "pii" and row["iterations"] == 3 and row["refusal"] == refusal
        assert row["parts"]["S_con"] is None and 1 <= row["parts"]["iteration"] <= 3
        p = row["parts"]
        assert row["score"] == pytest.approx(2 * p["S_ori"] + 0.5 * (p["S_sem"] + p["S_syn"]))
        assert "555-01" in row["carrier"]


def test_cli_craft_bad_input_is_one_error_line(tmp_path, env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    runner = CliRunner()
    for args, fragment in ((["--refusals", str(bad)], "line 1"), (["--refusals", str(tmp_path / "none.jsonl")], "does not exist"),
                           (["--kind", "piii"], "did you mean 'pii'"), (["--backend", "ofline"], "did you mean 'offline'"),
                           (["--backend-opt", "novalue"], "KEY=VALUE")):
        result = runner.invoke(app, ["craft", *args, "--out", str(tmp_path / "x.jsonl")], env=env)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], \
            (args, result.stderr)
    assert not (tmp_path / "x.jsonl").exists()
