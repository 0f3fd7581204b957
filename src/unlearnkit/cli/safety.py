"""`unlearn craft` (Scenario II crafted requests) and `unlearn inspect` (the request inspector).

Registered on the app by `unlearnkit.cli`, which imports this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from unlearnkit.cli.app import app, friendly
from unlearnkit.errors import UnlearnError
from unlearnkit.logs import info


def _key_values(pairs: Optional[List[str]], flag: str) -> dict:
    """['key=value', ...] -> {key: value}; values are read as YAML scalars (30 -> int, true -> bool)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UnlearnError(f"{flag} expects KEY=VALUE, e.g. {flag} model=gpt-4o-2024-05-13 (got a value without '=')")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line; an existing file is replaced only when unlearnkit wrote it (`outputs`)."""
    import json

    from unlearnkit.pipeline.outputs import write_output_file

    write_output_file(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@app.command()
@friendly
def craft(
    refusals: Optional[Path] = typer.Option(None, "--refusals", help="Refusal texts: JSONL lines {\"text\": ...}, a JSON"
                                            " list of them, or .txt one per line. Default: the built-in refusal pool."),
    kind: str = typer.Option("news", "--kind", help="Carrier kind: pii | news | copyright."),
    carriers: Optional[Path] = typer.Option(None, "--carriers", help="Carrier texts (same formats), paired with the"
                                            " refusals by index. Default: the built-in pool of --kind."),
    iterations: int = typer.Option(4, "--iterations", "-T", help="Rewrite/evaluate rounds per request (the seed: 4)."),
    backend: str = typer.Option("offline", "--backend", help="Agent backend (BACKENDS): offline | openai_compat | hf_local."),
    backend_opts: Optional[List[str]] = typer.Option(None, "--backend-opt", help="KEY=VALUE for the backend (repeatable)."),
    eval_backend: Optional[str] = typer.Option(None, "--eval-backend", help="Backend of the evaluation agent (default: --backend)."),
    eval_backend_opts: Optional[List[str]] = typer.Option(None, "--eval-backend-opt", help="KEY=VALUE for --eval-backend."),
    filter_name: Optional[str] = typer.Option(None, "--filter", help="Keep only requests this judge flags (e.g. hf_classifier)."),
    filter_opts: Optional[List[str]] = typer.Option(None, "--filter-opt", help="KEY=VALUE for the --filter judge."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Craft at most this many (built-in pool: default 8)."),
    on_unparsed: str = typer.Option("error", "--on-unparsed", help="error | zero: what an unparsable evaluation reply"
                                    " (after retries) does; zero scores S_sem, S_syn as 0 like the seed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the built-in pools."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: request, kind, score, parts, iterations, refusal, carrier."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table."),
):
    """Scenario II: disguise refusal texts as PII / fake-news / copyright removal requests (two agents).

    \b
    Examples:
      unlearn craft --kind news --out crafted.jsonl                      # offline demo, built-in refusals
      unlearn craft --refusals refusals.jsonl --kind pii -T 4 --backend openai_compat \\
          --backend-opt model=gpt-4o-2024-05-13 --out crafted_pii.jsonl
    """
    from unlearnkit.attacks.crafted_requests import craft_requests, read_texts
    from unlearnkit.attacks.crafting_pools import check_kind, refusal_texts
    from unlearnkit.pipeline.outputs import check_output_file

    check_kind(kind)
    check_output_file(out)  # before any agent is asked
    if limit is not None and limit < 1:
        raise UnlearnError(f"--limit {limit}: must be at least 1")
    texts = read_texts(refusals, "refusals") if refusals else refusal_texts(limit or 8, seed=seed)
    texts = texts[:limit] if limit else texts
    carrier_list = read_texts(carriers, "carriers") if carriers else None
    result = craft_requests(texts, kind, backend=backend, backend_options=_key_values(backend_opts, "--backend-opt"),
                            eval_backend=eval_backend, eval_backend_options=_key_values(eval_backend_opts, "--eval-backend-opt"),
                            carriers=carrier_list, iterations=iterations, filter=filter_name,
                            filter_options=_key_values(filter_opts, "--filter-opt"), seed=seed, on_unparsed=on_unparsed,
                            progress=None if quiet else lambda i, n: typer.echo(f"crafted {i}/{n}", err=True))
    _write_jsonl(out, [r.to_json() for r in result.kept])
    if not quiet:
        typer.echo(f"{'#':>3} {'S':>6} {'S_ori':>6} {'S_con':>6} {'S_sem':>6} {'S_syn':>6} {'it':>3}  request")
        for i, r in enumerate(result.kept, start=1):
            p = r.parts
            con = "-" if p["S_con"] is None else f"{p['S_con']:.3f}"
            text = " ".join(r.request.split())
            typer.echo(f"{i:>3} {r.score:6.3f} {p['S_ori']:6.3f} {con:>6} {p['S_sem']:6.3f} {p['S_syn']:6.3f}"
                       f" {p['iteration']:>3}  {text[:70] + ('...' if len(text) > 70 else '')}")
    dropped = f", {len(result.filtered_out)} dropped by the {filter_name} filter" if filter_name else ""
    typer.echo(f"wrote {len(result.kept)} {kind} requests to {out}{dropped}")


@app.command("inspect")
@friendly
def inspect_cmd(
    file: Optional[Path] = typer.Argument(None, help="Requests: JSONL (\"text\" | \"request\" | \"question\"+\"answer\"),"
                                          " a JSON list, or .txt with one request per line."),
    inspector_dir: Optional[Path] = typer.Option(None, "--inspector", help="A saved inspector directory (default: the"
                                                 " built-in one, trained on first use and cached)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Verdicts JSONL; with --train, the inspector directory."),
    train: bool = typer.Option(False, "--train", help="Train an inspector on the built-in data, report recall/FPR, save to --out."),
    backbone: str = typer.Option("tfidf", "--backbone", help="--train: tfidf (offline) | hf_encoder."),
    model: str = typer.Option("bert-base-uncased", "--model", help="--train --backbone hf_encoder: the encoder (hub id or dir)."),
    epochs: int = typer.Option(5, "--epochs", help="--train --backbone hf_encoder: fine-tuning epochs."),
    target_fpr: float = typer.Option(0.05, "--target-fpr", help="--train: false-positive rate the threshold targets on val."),
    refusals: Optional[Path] = typer.Option(None, "--refusals", help="--train: extra refusal texts (e.g. harvested from"
                                            " your model) added to the positives."),
    seed: int = typer.Option(0, "--seed", help="--train: seed of the built-in data."),
):
    """Flag unlearning requests that carry refusal text (the defense against refusal unlearning).

    \b
    Examples:
      unlearn inspect requests.jsonl                      # built-in inspector
      unlearn inspect requests.txt --inspector my_inspector --out verdicts.jsonl
      unlearn inspect --train --out my_inspector          # train, print recall / FPR, save
    """
    from unlearnkit.attacks.crafted_requests import read_texts
    from unlearnkit.defenses.inspector import Inspector, load_inspector
    from unlearnkit.pipeline.outputs import check_output_dir, check_output_file, output_dir

    if train:
        from unlearnkit.defenses.inspector_data import build_inspector_data

        if file is not None or out is None:
            raise UnlearnError("--train takes no FILE and needs --out DIR (where the inspector is saved)")
        check_output_dir(out)  # before training
        extra = read_texts(refusals, "refusals") if refusals else ()
        options = {"model_name": model, "epochs": epochs} if backbone == "hf_encoder" else {}
        inspector = Inspector.train(build_inspector_data(seed=seed, extra_refusals=extra), backbone=backbone,
                                    target_fpr=target_fpr, log=info, **options)
        with output_dir(out, "inspector", command=sys.argv[1:], log=info) as tmp:
            inspector.save(tmp)
        m = inspector.metrics
        typer.echo(f"threshold {m['threshold']:.3f} (lowest with val FPR <= {target_fpr:.0%}); split: {m['split']}")
        typer.echo(f"{'split':6s} {'recall':>7s} {'crafted':>8s} {'FPR':>7s} {'AUC':>7s} {'n+':>5s} {'n-':>5s}")
        for name in ("val", "test"):
            s = m[name]
            typer.echo(f"{name:6s} {s['recall']:7.3f} {s['recall_crafted']:8.3f} {s['fpr']:7.3f} {s['auc']:7.4f}"
                       f" {s['n_positive']:5d} {s['n_negative']:5d}")
        typer.echo("test flagged share by family: " + ", ".join(f"{f} {v:.2f}" for f, v in m["test"]["flagged_by_family"].items()))
        typer.echo(f"wrote {out}")
        return
    if file is None:
        raise UnlearnError("give a FILE of requests to inspect (or --train --out DIR to train an inspector)")
    if out:
        check_output_file(out)
    texts = read_texts(file, "requests")
    inspector = load_inspector(inspector_dir, log=info)
    verdicts = inspector.inspect(texts)
    if out:
        _write_jsonl(out, [{"text": t, "flagged": v.flagged, "score": v.score, "reason": v.reason}
                           for t, v in zip(texts, verdicts)])
    typer.echo(f"{'#':>4} {'verdict':8s} {'score':>5s}  request  [reason]")
    for i, (t, v) in enumerate(zip(texts, verdicts), start=1):
        text = " ".join(t.split())
        typer.echo(f"{i:>4} {'FLAGGED' if v.flagged else 'ok':8s} {v.score:5.2f}  {text[:60] + ('...' if len(text) > 60 else '')}"
                   f"  [{v.reason}]")
    flagged = sum(v.flagged for v in verdicts)
    typer.echo(f"{flagged} of {len(verdicts)} requests flagged (threshold {inspector.threshold:.3f})"
               + (f"; wrote {out}" if out else ""))
