"""Shared fixtures: a tiny Llama built in code, int-token toy data, a one-call trainer, golden files.

Everything here is offline and small enough for 2 CPU cores. `pytest --update-golden` rewrites
the files under tests/golden/; without the flag a missing or different golden file fails.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import zlib
from pathlib import Path
from typing import Any, Callable

os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402
import torch  # noqa: E402

from unlearnkit.data.batch import IGNORE_INDEX, Example, UnlearnBatch  # noqa: E402
from unlearnkit.data.pairing import UnlearnData, epoch_batches  # noqa: E402

torch.set_num_threads(1)  # 2 threads are ~100x slower when another process holds a core

GOLDEN_DIR = Path(__file__).parent / "golden"

# Token ids of the toy vocabulary (64). Forget, retain and IDK answers use disjoint ranges, so
# learning the retain answers does not also teach the forget answers (and vice versa).
VOCAB_SIZE = 64
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
PROMPT_TOKENS = range(3, 16)
IDK_TOKENS = range(16, 19)
FORGET_TOKENS = range(19, 41)
RETAIN_TOKENS = range(41, 64)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.json from this run instead of comparing")


class Golden:
    """Compare a list of numbers with tests/golden/<name>.json (or rewrite it with --update-golden)."""

    def __init__(self, root: Path, update: bool):
        self.root = root
        self.update = update

    def check(self, name: str, values, atol: float) -> None:
        values = [float(v) for v in values]
        path = self.root / f"{name}.json"
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"values": values}, indent=1) + "\n")
            return
        if not path.exists():
            pytest.fail(f"golden file {path} is missing; run pytest with --update-golden to create it")
        expected = json.loads(path.read_text())["values"]
        assert len(values) == len(expected), f"{name}: {len(values)} values, golden has {len(expected)}"
        # atol plus a relative 1e-5: a loss near 3000 (RMU, GRUN's NPO term) has float32 steps of ~2e-4
        bad = [(i, v, e) for i, (v, e) in enumerate(zip(values, expected))
               if not (math.isfinite(v) and abs(v - e) <= atol + 1e-5 * abs(e))]
        assert not bad, (f"{name} differs from {path.name} (atol {atol}, rtol 1e-5) at (index, got, golden): {bad[:5]};"
                         " if the change is intended, rerun with --update-golden")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(GOLDEN_DIR, request.config.getoption("--update-golden"))


def make_example(prompt: list[int], answer: list[int]) -> Example:
    """BOS + prompt + answer + EOS; BOS and prompt unlabelled, answer and EOS labelled."""
    ids = [BOS_ID, *prompt, *answer, EOS_ID]
    labels = [IGNORE_INDEX] * (1 + len(prompt)) + [*answer, EOS_ID]
    return Example(tuple(ids), tuple(labels))


class ToyTokenizer:
    """Text to toy token ids for methods that tokenise text of their own (ELM's contexts): each word maps to a
    prompt token by a stable hash. BOS/EOS/PAD ids as the toy data's."""

    bos_token_id, eos_token_id, pad_token_id = BOS_ID, EOS_ID, PAD_ID

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [PROMPT_TOKENS[zlib.crc32(word.encode()) % len(PROMPT_TOKENS)] for word in text.split()]
        return [BOS_ID, *ids] if add_special_tokens else ids


def make_toy_data(n_forget: int = 8, n_retain: int = 8, seed: int = 0) -> UnlearnData:
    rng = random.Random(seed)

    def prompt() -> list[int]:
        return [rng.choice(PROMPT_TOKENS) for _ in range(rng.randint(2, 4))]

    def answer(tokens: range) -> list[int]:
        return [rng.choice(tokens) for _ in range(rng.randint(2, 5))]

    forget_prompts = [prompt() for _ in range(n_forget)]
    forget = [make_example(p, answer(FORGET_TOKENS)) for p in forget_prompts]
    retain = [make_example(prompt(), answer(RETAIN_TOKENS)) for _ in range(n_retain)]
    idk = [make_example(p, list(IDK_TOKENS)[: rng.randint(2, 3)]) for p in forget_prompts]
    # "generic" texts (dpo_generic_preferred's preferred side): bare text, every token after BOS supervised
    generic = []
    for _ in range(n_forget):
        ids = [BOS_ID, *answer(RETAIN_TOKENS), EOS_ID]
        generic.append(Example(tuple(ids), (IGNORE_INDEX, *ids[1:])))
    return UnlearnData(forget=forget, retain=retain, extra={"idk": idk, "generic": generic}, pad_id=PAD_ID,
                       tokenizer=ToyTokenizer())


@pytest.fixture(scope="session")
def _tiny_model_master():
    from unlearnkit.model import tiny_llama

    return tiny_llama(vocab_size=VOCAB_SIZE, hidden=32, layers=2, heads=2, seed=0).eval()


@pytest.fixture
def tiny_model(_tiny_model_master):
    """A fresh copy per test (cheap), so no test can leak changes into another."""
    return copy.deepcopy(_tiny_model_master)


@pytest.fixture(scope="session")
def _fitted_model_master(_tiny_model_master, toy_data):
    from unlearnkit.methods.finetune import Finetune
    from unlearnkit.train import TrainConfig, train

    # Fit forget and retain answers (forget NLL ≈ log 64 → ≈ 1): a model that knows what it must forget.
    both = UnlearnData(forget=toy_data.forget + toy_data.retain, pad_id=toy_data.pad_id)
    cfg = TrainConfig(steps=20, lr=1e-2, batch_size=8, progress=False)
    return train(copy.deepcopy(_tiny_model_master), Finetune(), both, cfg).model


@pytest.fixture
def fitted_model(_fitted_model_master):
    """The tiny model fine-tuned for 20 steps on the toy forget + retain answers (a fresh copy)."""
    return copy.deepcopy(_fitted_model_master)


@pytest.fixture(scope="session")
def toy_data() -> UnlearnData:
    return make_toy_data()


@pytest.fixture(scope="session")
def toy_batch(toy_data) -> UnlearnBatch:
    return next(epoch_batches(toy_data, batch_size=4, epoch=0, seed=0))


@pytest.fixture
def train_tiny(_tiny_model_master, toy_data) -> Callable[..., Any]:
    """train_tiny(method, steps, model=None, data=None, out_dir=None, **cfg) -> TrainResult.

    Trains a deep copy of `model` (default: the tiny model) with lr 1e-3, batch 4, no progress bar.
    """
    from unlearnkit.train import TrainConfig, train

    def run(method, steps: int, *, model=None, data=None, out_dir=None, **cfg):
        settings = {"progress": False, "lr": 1e-3, "batch_size": 4, **cfg, "steps": steps}
        return train(copy.deepcopy(model if model is not None else _tiny_model_master), method,
                     data if data is not None else toy_data, TrainConfig(**settings), out_dir=out_dir)

    return run


@pytest.fixture(name="make_example", scope="session")
def _make_example_fixture() -> Callable[[list[int], list[int]], Example]:
    """`make_example(prompt, answer)` for tests (pytest's importlib mode cannot import conftest)."""
    return make_example


@pytest.fixture(name="make_toy_data", scope="session")
def _make_toy_data_fixture() -> Callable[..., UnlearnData]:
    """`make_toy_data(n_forget, n_retain, seed)`: more toy data built like `toy_data`."""
    return make_toy_data


# --------------------------------------------------------- end-to-end tests: one world cache per session


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The session's world cache (same path for every test module, so each world is built once)."""
    path = tmp_path_factory.getbasetemp() / "unlearnkit-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def env(cache_dir) -> dict[str, str]:
    """Environment for commands: the temporary cache, offline, one thread."""
    return {"UNLEARNKIT_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "UNLEARN_DEBUG": ""}


@pytest.fixture(scope="module")
def isolated_env(env):
    """`env` for in-process commands too, restored after the module; torch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli(env):
    """cli(*args) -> click Result of `unlearn ARGS` in-process (typer's CliRunner; stdout and stderr apart)."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args], env=env)

    return invoke


@pytest.fixture
def references(monkeypatch) -> list:
    """Every `Reference` the trainer builds during the test (to prove what a method does and does not build)."""
    import unlearnkit.train.loop as train_module
    from unlearnkit.train.reference import Reference

    made: list = []

    class Recording(Reference):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train_module, "Reference", Recording)
    return made


class _FixedLogits(torch.nn.Module):
    """A "model" whose logits are one trainable (1, T, V) tensor, whatever the input: hand-checked loss values
    and logit gradients."""

    def __init__(self, z: torch.Tensor):
        super().__init__()
        self.z = torch.nn.Parameter(z.clone())

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.z)


@pytest.fixture(name="fixed_logits", scope="session")
def _fixed_logits_fixture():
    """`fixed_logits(z)`: a model whose logits are the trainable tensor z (1, T, V)."""
    return _FixedLogits


@pytest.fixture(name="one_row", scope="session")
def _one_row_fixture():
    """`one_row(labels)`: an UnlearnBatch of one row whose labels are `labels` (−100: not supervised)."""
    from unlearnkit.data.batch import TokenBatch, UnlearnBatch

    def one_row(labels: list[int]) -> UnlearnBatch:
        ids = torch.tensor([[max(t, 0) for t in labels]])
        return UnlearnBatch(TokenBatch(ids, torch.ones_like(ids), torch.tensor([labels])))

    return one_row


class _UniformModel(torch.nn.Module):
    """All-zero logits: every token has probability 1/V, so every per-token NLL is log V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


@pytest.fixture(name="uniform_model", scope="session")
def _uniform_model_fixture():
    """`uniform_model(V)`: a model whose every prediction is uniform over V tokens."""
    return _UniformModel
