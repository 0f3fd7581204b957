#!/usr/bin/env bash
# The accelerator measurements of the training-at-scale issue, in one run of under ten minutes on one GPU.
#
#   bash bench/gpu_check.sh                              # from the repository root (any cwd works)
#   PYTHON=.venv/bin/python OUT=/tmp/gpu DATA=/path/to/tofu bash bench/gpu_check.sh
#   DRY=1 bash bench/gpu_check.sh                        # CPU dry run: tiny shape, toy sizes (≈ 1 min)
#
# On a Llama-3.2-1B-shaped model (random weights, bench/shapes.py) in bfloat16 on CUDA, each step under its own
# `timeout`, each continuing to the next when one fails:
#   (a) bench/train_throughput.py: steps/s of unlearnkit.train.train vs a bare loop, 8 x 512 tokens  (ours/bare >= 0.9)
#   (b) bench/memory_ratio.py: torch.cuda.max_memory_allocated of npo vs grad_diff, both with a retain set  (<= 1.05)
#   (c) bench/eval_throughput.py: the TOFU + privacy suite (forget10) vs a bare forward, GradNorm on 64 rows
#       (ours/bare >= 0.8; GradNorm batched vs one-by-one >= 5x)
# Every result goes to $OUT (default bench-out/): <step>.json (stdout) and <step>.log (stderr), plus env.txt and
# summary.txt. The TOFU files come from $DATA (default .gpu-data/tofu, else ../shared/data/tofu). Relative OUT and
# DATA are taken from the repository root. $PYTHON must have a CUDA build of torch and the project's dependencies.
# Time: timeouts of 150 + 150 + 270 s bound the three steps (9.5 min); on an H100/H200 they take ≈ 1, 1 and 2-4 min.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
OUT=${OUT:-bench-out}
DATA=${DATA:-.gpu-data/tofu}
if [ ! -d "$DATA" ] && [ -d ../shared/data/tofu ]; then
    echo "note: $DATA not found, using ../shared/data/tofu"
    DATA=../shared/data/tofu
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # the working tree's unlearnkit, installed or not
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

if [ "${DRY:-0}" = 1 ]; then  # the same commands on the CPU at toy sizes: checks the script, not the numbers
    DEVICE=cpu SHAPE=tiny
    TRAIN_SIZES=(--batch 4 --seq 64 --steps 3 --warmup 1 --repeats 1)
    MEMORY_SIZES=(--batch 4 --seq 64 --forget 8 --steps 2 --repeats 1 --no-torch-peak)
    EVAL_SIZES=(--max-new-tokens 4 --batch-size 16 --max-tokens 2048 --gradnorm 4)
else
    DEVICE=cuda SHAPE=1b
    TRAIN_SIZES=(--batch 8 --seq 512 --steps 10 --warmup 2 --repeats 3)
    MEMORY_SIZES=(--batch 8 --seq 512 --forget 16 --steps 3 --repeats 1)
    EVAL_SIZES=(--max-new-tokens 50 --batch-size 64 --max-tokens 16384 --gradnorm 64)
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "python: $PY  out: $OUT  data: $DATA  device: $DEVICE  shape: $SHAPE"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    "$PY" -c "import sys, torch, transformers, accelerate; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__); print('devices:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
} 2>&1 | tee "$OUT/env.txt"

declare -A STATUS
step() {  # step NAME TIMEOUT_S ARGS...: run one measurement, stdout to NAME.json, stderr to NAME.log
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (timeout ${limit}s): $PY $*"
    local start=$SECONDS
    timeout --kill-after=15 "$limit" "$PY" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
    local rc=$?
    case $rc in
        0) STATUS[$name]="ok" ;;
        124|137) STATUS[$name]="TIMED OUT after ${limit}s" ;;
        *) STATUS[$name]="FAILED (exit $rc)" ;;
    esac
    STATUS[$name]+=" in $((SECONDS - start))s"
    echo "--- $name: ${STATUS[$name]}"
    cat "$OUT/$name.json"
    [ "$rc" = 0 ] || tail -n 25 "$OUT/$name.log"
}

step train_throughput 150 bench/train_throughput.py --shape "$SHAPE" --dtype bfloat16 --device "$DEVICE" \
    "${TRAIN_SIZES[@]}" --json
step memory_ratio 150 bench/memory_ratio.py --shape "$SHAPE" --dtype bfloat16 --device "$DEVICE" \
    --method npo --method-b grad_diff --retain "${MEMORY_SIZES[@]}" --json
step eval_throughput 270 bench/eval_throughput.py --shape "$SHAPE" --dtype bfloat16 --device "$DEVICE" \
    --data-dir "$DATA" --split forget10 --skip-per-metric "${EVAL_SIZES[@]}" --json

echo
echo "=== summary ($OUT/summary.txt)"
{
    for name in train_throughput memory_ratio eval_throughput; do
        echo "$name: ${STATUS[$name]}"
    done
    "$PY" - "$OUT" <<'EOF'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])


def lines(name):
    path = out / f"{name}.json"
    rows = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


for r in lines("train_throughput"):
    print(f"(a) train ours/bare = {r['ratio']:.3f} (target >= 0.9) {'OK' if r['ok'] else 'BELOW TARGET'}: "
          f"{r['ours_median']:.2f} vs {r['bare_median']:.2f} steps/s, {r['params'] / 1e6:.1f}M params "
          f"{r['dtype']} {r['batch']}x{r['seq']} on {r['device']}; same step-1 loss: {r['same_loss']}")
for r in lines("memory_ratio"):
    gib = {m: v[r["headline"]] / 2**30 for m, v in r["median"].items() if v[r["headline"]]}
    print(f"(b) memory {r['method']}/{r['method_b']} = {r['ratio']:.3f} ({r['headline']}, target <= {r['target']}) "
          f"{'OK' if r['ok'] else 'ABOVE TARGET'}: " + ", ".join(f"{m} {g:.2f} GiB" for m, g in gib.items()))
for r in lines("eval_throughput"):
    if "gradnorm" in r:
        g = r["gradnorm"]
        print(f"(c) GradNorm batched vs one-by-one on {g['rows']} rows = {g['speedup']}x (target >= 5 on a GPU); "
              f"max relative difference {g['max_relative_difference']:.2e}")
    elif "scoring_ours_over_bare" in r:
        print(f"(c) eval scoring ours/bare = {r['scoring_ours_over_bare']} (target >= 0.8): "
              f"{r['ours_scoring_tokens_per_s']} vs {r['bare_tokens_per_s']} tokens/s; suite {r.get('ours_s')} s")
EOF
} 2>&1 | tee "$OUT/summary.txt"
