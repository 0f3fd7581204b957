"""Evaluate a tiny model on TOFU-schema rows (TOFU suite + privacy suite, every pass kind) and write the
metrics and per-sample values as JSON: under torchrun each rank evaluates its share; alone, everything."""

import json
import sys
from types import SimpleNamespace

import torch

from unlearnkit.benchmarks.base import BenchmarkData
from unlearnkit.benchmarks.suite import evaluate
from unlearnkit.benchmarks.tofu import TofuBenchmark
from unlearnkit.data.formats import get_format
from unlearnkit.model import tiny_llama
from unlearnkit.recipe import EvalSection
from unlearnkit.world.tokenizer import train_world_tokenizer


def row(i: int) -> dict:
    answer = f"Author {i} wrote {i % 3 + 1} novels about the river town {i * 7}."
    return {"question": f"What did author {i} write?", "answer": answer,
            "paraphrased_answer": f"There are {i % 3 + 1} river novels by author {i}.",
            "paraphrased_question": f"Which books are by author {i}?",
            "perturbed_answer": [f"Author {i} wrote poems.", f"Author {i} painted {i} walls."]}


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    rows = [row(i) for i in range(11)]
    tokenizer = train_world_tokenizer([r[k] for r in rows for k in ("question", "answer", "paraphrased_answer")]
                                      + [p for r in rows for p in r["perturbed_answer"]], vocab_size=300)
    model = tiny_llama(len(tokenizer), hidden=32, layers=2, heads=2, seed=0, bos_id=tokenizer.bos_token_id,
                       eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id).eval()
    splits = SimpleNamespace(forget=rows[:3], retain=rows[3:6], real_authors=rows[6:8], world_facts=rows[8:9],
                             holdout=[{"question": r["question"], "answer": r["answer"]} for r in rows[9:]])
    data = BenchmarkData("tofu", splits, splits.forget, splits.retain, component=TofuBenchmark())
    result = evaluate(model, tokenizer, data, get_format("openunlearning"), EvalSection(max_new_tokens=6, batch_size=2),
                      progress=False)
    rank = int(torch.distributed.get_rank()) if torch.distributed.is_initialized() else 0
    with open(f"{out_path}.{rank}", "w") as handle:
        json.dump({"metrics": result["metrics"], "per_sample": result["per_sample"],
                   "sequences": result["passes"]["sequences"]}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
