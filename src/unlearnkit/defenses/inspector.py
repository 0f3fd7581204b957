"""The unlearning-request inspector: flag requests that carry refusal text before anything is unlearned.

Mitigation from "Refusal Is Not an Option" (USA, USENIX Security 2025; specs §2.4): a binary classifier
over the text a user asks to have unlearned. A request that is (Scenario I) or hides (Scenario II) a
model's refusal would, once unlearned, strip the model's safety behaviour, so it is flagged.

Backbones (``backbone=``):

* ``tfidf`` (default, offline, trains in seconds): TF-IDF over word 1-2-grams and character 3-5-grams
  (within word boundaries), then class-balanced logistic regression. score = σ(w·x + b).
* ``hf_encoder``: any Hugging Face encoder fine-tuned as a 2-label sequence classifier (the seed used
  ``bert-base-uncased``: lr 1e-5, batch 16, 5 epochs, weight decay 0.01, max length 512, seed 122).
  score = softmax(logits)[1]. Unlike the seed we do not pick a checkpoint by F1 every 200 steps.

The threshold is picked on the validation split: the lowest one whose false-positive rate on benign
requests is ≤ ``target_fpr`` (5 %), placed midway to the next positive score. Recall and FPR are then
reported on the held-out test split (`inspector_data` explains how the splits differ). The seed reported
recall only; a request filter that blocks benign requests is no filter, so FPR is reported next to it.

Saved inspectors hold ``inspector.json`` (backbone, config, threshold, metrics) plus, for tfidf,
``vocabulary.json`` and ``weights.safetensors`` (idf vectors, coefficients), for hf_encoder ``encoder/``
(`save_pretrained`, safetensors). Nothing is pickled, so loading a shared inspector runs no code: `load`
reads JSON and safetensors only (the encoder with ``use_safetensors=True``, as `models.load_model` does)
and refuses a directory holding a pickle-based file (``.bin``, ``.pt``, ``.pkl``, ...) rather than
skipping it, since such a directory comes from an older version or from somewhere untrusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from unlearnkit.errors import UnlearnError

FORMAT_VERSION = 1
DEFAULT_DIR_NAME = "inspector-v2"  # bump when the built-in data, the default backbone or the loader changes
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt")  # formats that unpickle on load
RETRAIN = "retrain it with `unlearn inspect --train --out DIR`"


@dataclass
class InspectVerdict:
    flagged: bool
    score: float  # P(request carries refusal content), in [0, 1]
    reason: str  # what triggered it: score vs threshold, refusal phrases and top features found


class TfidfBackbone:
    """TF-IDF (word 1-2-grams + char 3-5-grams) and logistic regression; saved as JSON + safetensors."""

    name = "tfidf"
    _TOKEN = r"(?u)\b\w[\w']*\b"  # keeps "I", "can't", "won't" whole

    def __init__(self, C: float = 4.0, max_features: int = 30000, min_df: int = 2, seed: int = 0):
        self.C, self.max_features, self.min_df, self.seed = C, max_features, min_df, seed
        self.vectorizers = None
        self.coef: np.ndarray | None = None
        self.intercept = 0.0
        self._names: list[str] | None = None  # feature index -> n-gram, built on first use

    def config(self) -> dict:
        return {"C": self.C, "max_features": self.max_features, "min_df": self.min_df, "seed": self.seed}

    def _new_vectorizers(self, vocabularies=(None, None)):
        from sklearn.feature_extraction.text import TfidfVectorizer

        common = {"sublinear_tf": True, "lowercase": True, "dtype": np.float64}
        word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=self._TOKEN, min_df=self.min_df,
                               max_features=self.max_features, vocabulary=vocabularies[0], **common)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=self.min_df,
                               max_features=self.max_features, vocabulary=vocabularies[1], **common)
        return word, char

    def _features(self, texts: Sequence[str]):
        from scipy.sparse import hstack

        return hstack([v.transform(list(texts)) for v in self.vectorizers]).tocsr()

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> None:
        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression

        self.vectorizers = self._new_vectorizers()
        x = hstack([v.fit_transform(list(texts)) for v in self.vectorizers]).tocsr()
        model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000, random_state=self.seed)
        model.fit(x, np.asarray(labels))
        self.coef, self.intercept = model.coef_[0].astype(np.float64), float(model.intercept_[0])

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        z = self._features(texts) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def top_features(self, text: str, k: int = 3) -> list[str]:
        """The `k` n-grams present in `text` that push its score up the most."""
        row = self._features([text])
        contributions = row.data * self.coef[row.indices]
        if self._names is None:
            self._names = [str(name) for v in self.vectorizers for name in v.get_feature_names_out()]
        order = [i for i in np.argsort(-contributions) if contributions[i] > 0
                 and len(self._names[row.indices[i]].strip()) >= 3]  # skip 'i', 'to': true but uninformative
        return [repr(self._names[row.indices[i]]) for i in order[:k]]

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        vocab = [{term: int(i) for term, i in v.vocabulary_.items()} for v in self.vectorizers]
        (path / "vocabulary.json").write_text(json.dumps({"word": vocab[0], "char": vocab[1]}, ensure_ascii=False))
        save_file({"idf_word": self.vectorizers[0].idf_, "idf_char": self.vectorizers[1].idf_,
                   "coef": self.coef, "intercept": np.array([self.intercept])}, str(path / "weights.safetensors"))

    @classmethod
    def load(cls, path: Path, config: dict) -> "TfidfBackbone":
        from safetensors.numpy import load_file

        self = cls(**config)
        vocab = json.loads((path / "vocabulary.json").read_text())
        arrays = load_file(str(path / "weights.safetensors"))
        self.vectorizers = self._new_vectorizers((vocab["word"], vocab["char"]))
        self.vectorizers[0].idf_, self.vectorizers[1].idf_ = arrays["idf_word"], arrays["idf_char"]
        self.coef, self.intercept = arrays["coef"], float(arrays["intercept"][0])
        return self


class EncoderBackbone:
    """A Hugging Face encoder fine-tuned as a 2-label sequence classifier (seed: bert-base-uncased)."""

    name = "hf_encoder"

    def __init__(self, model_name: str = "bert-base-uncased", lr: float = 1e-5, epochs: int = 5, batch_size: int = 16,
                 weight_decay: float = 0.01, max_length: int = 512, seed: int = 122, max_steps: int | None = None,
                 device: str | None = None, model=None, tokenizer=None):
        self.model_name, self.lr, self.epochs, self.batch_size = model_name, lr, epochs, batch_size
        self.weight_decay, self.max_length, self.seed, self.max_steps = weight_decay, max_length, seed, max_steps
        self.device, self.model, self.tokenizer = device, model, tokenizer
        self.losses: list[float] = []

    def config(self) -> dict:
        return {"model_name": self.model_name, "lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "max_length": self.max_length, "seed": self.seed,
                "max_steps": self.max_steps}

    def _device(self):
        import torch

        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(self.seed)
        if self.model is None:
            from unlearnkit.model import load_hint

            try:  # safetensors only: a pytorch_model.bin would be unpickled
                self.model = AutoModelForSequenceClassification.from_pretrained(self.model_name, num_labels=2,
                                                                                use_safetensors=True)
            except (OSError, ValueError) as err:
                raise UnlearnError(load_hint(self.model_name, "encoder", err)) from None
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        device = self._device()
        model = self.model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        texts, y = list(texts), torch.tensor(list(labels))
        step = 0
        for _ in range(self.epochs):
            order = torch.randperm(len(texts), generator=generator).tolist()
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in batch], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(device)
                loss = model(**enc, labels=y[batch].to(device)).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                self.losses.append(float(loss.detach()))
                step += 1
                if self.max_steps is not None and step >= self.max_steps:
                    break
            if self.max_steps is not None and step >= self.max_steps:
                break
        model.eval()

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        device, out = self._device(), []
        self.model.to(device).eval()
        with torch.no_grad():
            for start in range(0, len(texts), max(self.batch_size, 32)):
                enc = self.tokenizer(list(texts[start : start + max(self.batch_size, 32)]), truncation=True,
                                     max_length=self.max_length, padding=True, return_tensors="pt").to(device)
                out.append(torch.softmax(self.model(**enc).logits.float(), dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def top_features(self, text: str, k: int = 3) -> list[str]:
        return []  # no cheap attribution for a fine-tuned encoder; the reason names the refusal phrases

    def save(self, path: Path) -> None:
        self.model.save_pretrained(path / "encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "encoder")

    @classmethod
    def load(cls, path: Path, config: dict) -> "EncoderBackbone":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path / "encoder", use_safetensors=True)
        return cls(**config, model=model.eval(), tokenizer=AutoTokenizer.from_pretrained(path / "encoder"))


BACKBONES = {TfidfBackbone.name: TfidfBackbone, EncoderBackbone.name: EncoderBackbone}


def make_backbone(backbone, **options):
    if not isinstance(backbone, str):
        return backbone
    if backbone not in BACKBONES:
        from unlearnkit.registry import did_you_mean

        raise UnlearnError(f"unknown inspector backbone '{backbone}';{did_you_mean(backbone, list(BACKBONES))}"
                           f" valid: {', '.join(BACKBONES)}")
    return BACKBONES[backbone](**options)


def pick_threshold(negative: np.ndarray, positive: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold (flag when score ≥ t) whose FPR on `negative` is ≤ `target_fpr`, placed midway
    between the highest negative score it must exceed and the next positive score above it."""
    negative = np.sort(np.asarray(negative, dtype=np.float64))[::-1]
    allowed = int(np.floor(target_fpr * len(negative) + 1e-9))
    if allowed >= len(negative):
        return float(min(negative.min(initial=1.0), np.min(positive, initial=1.0)))
    bar = negative[allowed]  # at most `allowed` negatives lie strictly above it
    above = np.asarray(positive)[np.asarray(positive) > bar]
    return float((bar + above.min()) / 2 if above.size else np.nextafter(bar, np.inf))


def detection_metrics(labels: Sequence[int], families: Sequence[str], scores: np.ndarray, threshold: float) -> dict:
    """Recall (positives flagged), FPR (negatives flagged), per-family flagged shares and ROC AUC."""
    labels, families, flagged = np.asarray(labels), np.asarray(families), np.asarray(scores) >= threshold
    pos, neg = labels == 1, labels == 0
    crafted = np.char.startswith(families.astype(str), "crafted_")
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 1.0  # Mann-Whitney AUC (ties: rare)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) if n_pos and n_neg else None
    return {
        "recall": float(flagged[pos].mean()) if n_pos else None,
        "recall_crafted": float(flagged[crafted].mean()) if crafted.any() else None,
        "fpr": float(flagged[neg].mean()) if n_neg else None,
        "auc": None if auc is None else float(auc),
        "n_positive": n_pos, "n_negative": n_neg,
        "flagged_by_family": {f: float(flagged[families == f].mean()) for f in sorted(set(families.tolist()))},
    }


class Inspector:
    """`inspect(texts) -> [InspectVerdict]`; train with `Inspector.train`, persist with `save` / `load`."""

    def __init__(self, backbone, threshold: float, metrics: dict | None = None, target_fpr: float = 0.05):
        self.backbone, self.threshold, self.metrics, self.target_fpr = backbone, float(threshold), metrics or {}, target_fpr

    @classmethod
    def train(cls, data=None, backbone="tfidf", target_fpr: float = 0.05,
              log: Callable[[str], None] | None = None, **backbone_options) -> "Inspector":
        """Fit on ``data.train``, pick the threshold on ``data.val``, measure on ``data.val`` and ``data.test``.
        `data` defaults to `build_inspector_data()` (the built-in, offline data)."""
        from unlearnkit.defenses.inspector_data import build_inspector_data

        if not 0.0 <= target_fpr < 1.0:
            raise UnlearnError(f"target_fpr={target_fpr}: must be in [0, 1) (e.g. 0.05)")
        data = data if data is not None else build_inspector_data()
        for name in ("train", "val"):
            if len({e.label for e in data.split(name)}) < 2:
                raise UnlearnError(f"the inspector's {name} split needs both labels (refusal-carrying and benign)")
        model = make_backbone(backbone, **backbone_options)
        if log:
            log(f"training the {model.name} inspector on {len(data.train)} requests")
        model.fit([e.text for e in data.train], [e.label for e in data.train])
        val_scores = model.scores([e.text for e in data.val])
        labels = np.array([e.label for e in data.val])
        threshold = pick_threshold(val_scores[labels == 0], val_scores[labels == 1], target_fpr)
        inspector = cls(model, threshold, target_fpr=target_fpr)
        inspector.metrics = {"threshold": threshold, "target_fpr": target_fpr, "split": data.description,
                             "n_train": len(data.train)}
        for name in ("val", "test"):
            inspector.metrics[name] = inspector.evaluate(data.split(name))
        return inspector

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise UnlearnError("inspect() takes a list of request strings")
        return self.backbone.scores(list(texts)) if len(texts) else np.zeros(0)

    def evaluate(self, examples) -> dict:
        scores = self.scores([e.text for e in examples])
        return detection_metrics([e.label for e in examples], [e.family for e in examples], scores, self.threshold)

    def inspect(self, texts: Sequence[str]) -> list[InspectVerdict]:
        from unlearnkit.judges.keyword import REFUSAL_PHRASES

        verdicts = []
        for text, score in zip(texts, self.scores(texts)):
            flagged = bool(score >= self.threshold)
            reason = f"score {score:.2f} {'≥' if flagged else '<'} threshold {self.threshold:.2f}"
            lowered = text.lower()
            phrases = [p for p in REFUSAL_PHRASES if p.lower() in lowered][:4]
            if phrases:
                reason += ("; refusal phrases: " if flagged else "; refusal phrases outweighed: ") \
                    + ", ".join(f"'{p}'" for p in phrases)
            features = self.backbone.top_features(text) if flagged else []
            if features:
                reason += "; top features: " + ", ".join(features)
            verdicts.append(InspectVerdict(flagged, float(score), reason))
        return verdicts

    def save(self, path: str | Path) -> Path:
        """Write the inspector to directory `path` atomically (JSON + safetensors, no pickle)."""
        from unlearnkit.train.checkpoint import atomic_dir

        with atomic_dir(path) as tmp:
            self.backbone.save(tmp)
            meta = {"format": FORMAT_VERSION, "backbone": self.backbone.name, "config": self.backbone.config(),
                    "threshold": self.threshold, "target_fpr": self.target_fpr, "metrics": self.metrics}
            (tmp / "inspector.json").write_text(json.dumps(meta, indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Inspector":
        """Read an inspector saved by `save`: JSON and safetensors only, never a pickle."""
        path = Path(path)
        meta_file = path / "inspector.json"
        pickled = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                         if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES) if path.is_dir() else []
        if pickled and not meta_file.is_file():
            raise UnlearnError(f"'{path}' was saved by an older version in a pickle-based format ({pickled[0]}),"
                               f" which is not loaded because unpickling can run code; {RETRAIN}")
        if pickled:
            raise UnlearnError(f"'{path}' holds a pickle-based file ({pickled[0]}); inspectors load only JSON and"
                               f" safetensors, so it is refused (unpickling can run code); remove it, or {RETRAIN}")
        if not meta_file.is_file():
            raise UnlearnError(f"'{path}' is not a saved inspector (no inspector.json); train one with"
                               " `unlearn inspect --train --out DIR`")
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UnlearnError(f"'{meta_file}' is not valid JSON (a damaged save?); {RETRAIN}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or meta.get("backbone") not in BACKBONES:
            found = meta if not isinstance(meta, dict) else f"{meta.get('format')} / backbone {meta.get('backbone')!r}"
            raise UnlearnError(f"'{path}' holds inspector format {found}; this version reads format"
                               f" {FORMAT_VERSION} ({', '.join(BACKBONES)}); {RETRAIN}")
        from safetensors import SafetensorError

        try:
            backbone = BACKBONES[meta["backbone"]].load(path, meta["config"])
        except (OSError, KeyError, ValueError, TypeError, SafetensorError) as err:  # a missing or damaged file
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UnlearnError(f"the inspector at '{path}' is incomplete or damaged ({first}); {RETRAIN}") from None
        return cls(backbone, meta["threshold"], meta.get("metrics"), meta.get("target_fpr", 0.05))


def default_inspector_dir(cache_dir: str | Path | None = None) -> Path:
    from unlearnkit.world.build import cache_root

    return cache_root(cache_dir) / DEFAULT_DIR_NAME


def load_inspector(path: str | Path | None = None, cache_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> Inspector:
    """The inspector saved at `path`; without `path` the built-in tfidf one, trained on the built-in data
    on first use and cached under $UNLEARNKIT_CACHE (or ~/.cache/unlearnkit)/inspector-v2."""
    if path is not None:
        return Inspector.load(path)
    target = default_inspector_dir(cache_dir)
    if (target / "inspector.json").is_file():
        return Inspector.load(target)
    if log:
        log(f"no cached inspector at {target}; training the default one (a few seconds)")
    inspector = Inspector.train(log=log)
    inspector.save(target)
    return inspector
