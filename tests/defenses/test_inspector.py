"""The unlearning-request inspector: held-out recall and FPR of the offline default, the threshold rule,
pickle-free save/load, the HF-encoder backbone on a tiny BERT built in code, and `unlearn inspect`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from unlearnkit.attacks.crafting_pools import REFUSAL_OPENERS, in_split
from unlearnkit.cli import app
from unlearnkit.defenses.inspector import (EncoderBackbone, Inspector, InspectVerdict, default_inspector_dir,
                                           detection_metrics, load_inspector, pick_threshold)
from unlearnkit.defenses.inspector_data import InspectorData, build_inspector_data, build_split
from unlearnkit.errors import UnlearnError

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture(scope="module")
def data() -> InspectorData:
    return build_inspector_data()


@pytest.fixture(scope="module")
def inspector(data) -> Inspector:
    return Inspector.train(data)


# ----------------------------------------------------------------------------------- the data split


def test_held_out_splits_use_other_templates(data):
    train_texts = {e.text for e in data.train}
    assert not train_texts & {e.text for e in data.test} and not train_texts & {e.text for e in data.val}
    for opener in in_split(REFUSAL_OPENERS, "test"):  # held-out refusal openers never occur in training
        assert not any(opener in e.text for e in data.train)
        assert any(opener in e.text for e in data.test if e.label == 1)
    families = {e.family for e in data.test}
    assert {"crafted_pii", "crafted_news", "crafted_copyright", "refusal", "tofu_request", "tofu_qa",
            "removal_pii", "apologetic"} <= families


# ------------------------------------------------------------------------------------- the metrics


def test_held_out_recall_and_false_positive_rate(inspector):
    # Measured for seed 0 (docs/inspector.md): val FPR 0.048, test recall 0.953 (crafted 0.933), FPR 0.030,
    # AUC 0.997. Asserted with a margin; the threshold targets FPR <= 5 % on val by construction.
    m = inspector.metrics
    assert m["val"]["fpr"] <= 0.05
    assert m["test"]["recall"] >= 0.92 and m["test"]["recall_crafted"] >= 0.88
    assert m["test"]["fpr"] <= 0.06 and m["test"]["auc"] >= 0.98
    for family in ("tofu_qa", "removal_pii", "removal_news", "removal_copyright"):
        assert m["test"]["flagged_by_family"][family] <= 0.02, family


def test_pick_threshold_hand_computed():
    negative = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    positive = np.array([0.65, 0.95, 0.99])
    # 10 negatives at 10 % FPR: one may be flagged, so t must exceed the 2nd highest (0.8); next positive 0.95
    assert pick_threshold(negative, positive, 0.10) == pytest.approx((0.8 + 0.95) / 2)
    # at 0 %: above 0.9, next positive 0.95
    assert pick_threshold(negative, positive, 0.0) == pytest.approx((0.9 + 0.95) / 2)
    # no positive above the bar: just above it
    assert 0.9 < pick_threshold(negative, np.array([0.5]), 0.0) < 0.9 + 1e-12


def test_detection_metrics_hand_computed():
    m = detection_metrics([1, 1, 1, 0, 0], ["crafted_pii", "refusal", "crafted_news", "tofu_qa", "apologetic"],
                          np.array([0.9, 0.3, 0.6, 0.1, 0.7]), threshold=0.5)
    assert m["recall"] == pytest.approx(2 / 3) and m["recall_crafted"] == 1.0 and m["fpr"] == 0.5
    assert m["auc"] == pytest.approx(4 / 6)  # pairs (pos > neg): 0.9>both, 0.6>0.1, 0.3>0.1 -> 4 of 6
    assert m["flagged_by_family"] == {"apologetic": 1.0, "crafted_news": 1.0, "crafted_pii": 1.0, "refusal": 0.0,
                                      "tofu_qa": 0.0}


# ------------------------------------------------------------------------------------- inspection


def test_inspect_gives_verdicts_with_reasons(inspector):
    verdicts = inspector.inspect(["I'm sorry, but I cannot help with that. It could put people in danger.",
                                  "Please remove everything about the author Ilsa Marrow from your model."])
    assert all(isinstance(v, InspectVerdict) for v in verdicts)
    flagged, benign = verdicts
    assert flagged.flagged and not benign.flagged and flagged.score > benign.score
    assert "≥ threshold" in flagged.reason and "'I cannot'" in flagged.reason and "top features:" in flagged.reason
    assert re.fullmatch(r"score 0\.\d\d < threshold 0\.\d\d", benign.reason)
    assert inspector.inspect([]) == []
    with pytest.raises(UnlearnError, match="list of request strings"):
        inspector.inspect("a bare string")


def test_save_load_roundtrip_is_exact_and_pickle_free(inspector, data, tmp_path):
    inspector.save(tmp_path / "insp")
    files = sorted(p.relative_to(tmp_path / "insp").as_posix() for p in (tmp_path / "insp").rglob("*") if p.is_file())
    assert files == ["inspector.json", "vocabulary.json", "weights.safetensors"]
    assert not any(p.read_bytes()[:1] == b"\x80" for p in (tmp_path / "insp").rglob("*") if p.is_file())
    loaded = Inspector.load(tmp_path / "insp")
    texts = [e.text for e in data.test]
    assert np.array_equal(loaded.scores(texts), inspector.scores(texts))
    assert loaded.inspect(texts[:20]) == inspector.inspect(texts[:20])
    assert loaded.threshold == inspector.threshold and loaded.metrics["test"] == inspector.metrics["test"]
    with pytest.raises(UnlearnError, match="not a saved inspector"):
        Inspector.load(tmp_path)


def test_pickle_based_files_are_refused_never_loaded(inspector, tmp_path):
    old = tmp_path / "old"  # what an older, torch.save-based version left behind
    old.mkdir()
    (old / "inspector.pt").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(UnlearnError, match=r"saved by an older version in a pickle-based format \(inspector.pt\)"
                                           r".*retrain it with `unlearn inspect --train --out DIR`"):
        Inspector.load(old)
    mixed = inspector.save(tmp_path / "mixed")  # a good save with a pickle slipped in is refused as a whole
    (mixed / "encoder").mkdir()
    (mixed / "encoder" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnlearnError, match=r"holds a pickle-based file \(encoder/pytorch_model.bin\)"):
        Inspector.load(mixed)


def test_damaged_saves_are_clear_errors(inspector, tmp_path):
    broken = inspector.save(tmp_path / "broken")
    (broken / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(UnlearnError, match="incomplete or damaged.*retrain it"):
        Inspector.load(broken)
    (broken / "inspector.json").write_text("{not json")
    with pytest.raises(UnlearnError, match="not valid JSON"):
        Inspector.load(broken)
    (broken / "inspector.json").write_text(json.dumps({"format": 0, "backbone": "tfidf"}))
    with pytest.raises(UnlearnError, match="format 0 / backbone 'tfidf'.*retrain it"):
        Inspector.load(broken)


def test_the_default_cache_is_versioned(cache_dir):
    assert default_inspector_dir(cache_dir).name == "inspector-v2"  # v1 caches are rebuilt, never read


def test_unknown_backbone_and_bad_target(data):
    with pytest.raises(UnlearnError, match="did you mean 'tfidf'"):
        Inspector.train(data, backbone="tfid")
    with pytest.raises(UnlearnError, match="target_fpr=1.5"):
        Inspector.train(data, target_fpr=1.5)


# ----------------------------------------------------------------------- HF encoder backbone (tiny)


def _tiny_bert(texts):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = {w: i for i, w in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=128)
    import torch

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2)
    return BertForSequenceClassification(config), tokenizer


def test_hf_encoder_loads_safetensors_only(tmp_path):
    model, tokenizer = _tiny_bert(["a pickled encoder"])
    import torch

    model.config.save_pretrained(tmp_path / "pickled")  # config + a pickled pytorch_model.bin, no safetensors
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path / "pickled")
    with pytest.raises(UnlearnError, match="could not load the encoder"):
        EncoderBackbone(model_name=str(tmp_path / "pickled"), max_steps=1, device="cpu").fit(["a"], [0])


def test_hf_encoder_backbone_trains_a_tiny_bert_offline(tmp_path):
    small = InspectorData(*(build_split(s, scale=0.08) for s in ("train", "val", "test")))
    model, tokenizer = _tiny_bert([e.text for s in ("train", "val", "test") for e in small.split(s)])
    backbone = EncoderBackbone(model=model, tokenizer=tokenizer, lr=3e-3, epochs=4, batch_size=16, max_length=96,
                               device="cpu", max_steps=24)
    inspector = Inspector.train(small, backbone=backbone)
    assert len(backbone.losses) == 24 and all(np.isfinite(backbone.losses))
    assert np.mean(backbone.losses[-4:]) < np.mean(backbone.losses[:4])
    assert inspector.metrics["test"]["auc"] > 0.6  # learns something in 24 steps; the real check is on a GPU

    inspector.save(tmp_path / "enc")
    saved = sorted(p.name for p in (tmp_path / "enc").rglob("*") if p.is_file())
    assert "model.safetensors" in saved and not any(n.endswith((".bin", ".pt", ".pkl", ".pickle")) for n in saved)
    assert all(n.endswith((".json", ".safetensors", ".txt")) for n in saved), saved  # JSON + safetensors only
    loaded = Inspector.load(tmp_path / "enc")
    texts = [e.text for e in small.test]
    assert np.allclose(loaded.scores(texts), inspector.scores(texts), atol=1e-6)
    assert [v.flagged for v in loaded.inspect(texts)] == [v.flagged for v in inspector.inspect(texts)]


# ------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def cached_default(inspector, cache_dir):
    """The default inspector, saved where `unlearn inspect` looks for it (no retraining in the CLI tests)."""
    if not (default_inspector_dir(cache_dir) / "inspector.json").is_file():
        inspector.save(default_inspector_dir(cache_dir))
    return load_inspector(None, cache_dir=cache_dir)


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_cli_inspect_labels_each_request(tmp_path, env, cached_default):
    requests = tmp_path / "requests.jsonl"
    rows = [{"text": "I apologize, but I won't be able to provide that. It could lead to real-world harm."},
            {"request": "Please delete the following personal data about me: Ilsa Quillane, +1 (212) 555-0142."},
            {"question": "Where was Ilsa Marrow born?", "answer": "Ilsa Marrow was born in the city of Lisbon."}]
    requests.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(app, ["inspect", str(requests), "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["flagged"] for v in verdicts] == [True, False, False]
    assert set(verdicts[0]) == {"text", "flagged", "score", "reason"} and "threshold" in verdicts[0]["reason"]
    assert "FLAGGED" in result.stdout and "1 of 3 requests flagged" in result.stdout

    txt = tmp_path / "requests.txt"
    txt.write_text("I cannot assist with this.\nUnlearn the following: Ilsa Marrow won the Lantern Medal.\n")
    saved = tmp_path / "saved"
    cached_default.save(saved)
    result = CliRunner().invoke(app, ["inspect", str(txt), "--inspector", str(saved)], env=env)
    assert result.exit_code == 0 and "1 of 2 requests flagged" in result.stdout, result.output


def test_cli_inspect_bad_input_is_one_error_line(tmp_path, env, cached_default):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken}\n')
    cases = [([str(tmp_path / "missing.jsonl")], "does not exist"), ([str(tmp_path / "empty.jsonl")], "is empty"),
             ([str(tmp_path / "bad.jsonl")], "line 2: not valid JSON"), ([], "give a FILE"),
             ([str(tmp_path / "bad.jsonl"), "--inspector", str(tmp_path)], "line 2"),
             ([str(tmp_path / "empty.jsonl"), "--train", "--out", str(tmp_path / "x")], "--train takes no FILE")]
    for args, fragment in cases:
        result = CliRunner().invoke(app, ["inspect", *args], env=env)
        lines = _errors(result)
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], \
            (args, result.stderr)


def test_cli_inspect_train_reports_recall_and_fpr(tmp_path, env):
    result = CliRunner().invoke(app, ["inspect", "--train", "--out", str(tmp_path / "insp")], env=env)
    assert result.exit_code == 0, result.output
    assert re.search(r"^test\s+0\.9\d\d\s+0\.\d+\s+0\.0\d\d", result.stdout, re.M), result.stdout
    assert (tmp_path / "insp" / "inspector.json").is_file()
    meta = json.loads((tmp_path / "insp" / "inspector.json").read_text())
    assert meta["backbone"] == "tfidf" and meta["metrics"]["test"]["fpr"] <= 0.06
