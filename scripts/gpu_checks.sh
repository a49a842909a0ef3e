#!/usr/bin/env bash
# One script for a GPU machine with about 10 minutes to spare: the checks and benchmarks that need
# CUDA, every output written to $OUT (or ./gpu_results). Run from anywhere:
#
#     bash scripts/gpu_checks.sh
#
# Steps, in order (each one runs whatever happened before it, under its own time limit, and the
# whole script stops starting new steps when the budget is spent):
#   env            machine, GPU, python, torch, git revision                      -> env.log
#   install        only when mtm's dependencies do not import: pip install -e .[dev]
#   pytest         the whole suite, `pytest -q` (tests that do not pin a device use
#                  train.device=auto, i.e. CUDA here)                              -> pytest.log, pytest.xml
#   parity         the same MTM forward on CPU and on CUDA (fp32, TF32 off; bf16 shown) -> parity.log
#   precision      what train.precision=auto resolves to on this GPU, and why       -> precision.log
#   bench_train    scripts/bench_train.py --device cuda: reference config at batch 2048 and the
#                  small config at its own batch, fp32 vs bf16 autocast, each with its model
#                  FLOPs, measured matmul roof and roof fraction                   -> bench_train.{log,json}
#   bench_data     scripts/bench_data.py --device cuda (1M-step Hopper-like file)  -> bench_data.log
#   train_smoke    `mtm train --config small` for 300 steps on CUDA, precision auto (bf16 where native), then
#   eval_smoke     `mtm eval` of that run, 10 episodes in 10 envs, policy on CUDA   -> *.log, eval_smoke.json
#   bench_graph    that run's policy with and without --cuda-graph (act()'s network call replayed from a
#                  captured CUDA graph), alternating: score and env steps/s        -> bench_graph.{log,json}
#   bench_compile  bench_train.py with torch.compile off/on (last: compiling may take minutes)
#                                                                                  -> bench_compile.{log,json}
# summary.txt lists every step with its status, duration and log file.
#
# Environment: OUT (output folder), PYTHON (interpreter to use; default: the first of .venv/bin/python,
# python3, python whose torch sees a GPU), GPU_CHECKS_BUDGET_S (total seconds, default 540),
# GPU_CHECKS_DEVICE (default cuda; cpu runs the same steps on the CPU, to test this script),
# GPU_CHECKS_QUICK=1 (tiny sizes and a test subset: for testing this script, not for figures).

set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
OUT_DIR=${OUT:-$REPO/gpu_results}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/summary.txt
: > "$SUMMARY"
START=$(date +%s)
BUDGET=${GPU_CHECKS_BUDGET_S:-540}
DEVICE=${GPU_CHECKS_DEVICE:-cuda}
QUICK=${GPU_CHECKS_QUICK:-0}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/mtm-gpu-checks.XXXXXX")  # big files stay out of $OUT
trap 'rm -rf "$SCRATCH"' EXIT

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}  # mtm and envs import from the checkout, installed or not

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME CAP_SECONDS COMMAND...: run COMMAND with the time limit min(CAP, what is left of the
# budget), output to $OUT_DIR/NAME.log; record status and duration; never stop the script.
step() {
    local name=$1 cap=$2
    shift 2
    local left limit t0 rc dt status
    left=$(remaining)
    limit=$((cap < left ? cap : left))
    if ((limit < 15)); then
        printf '%-14s %-26s %5s  %s\n' "$name" "SKIPPED (budget spent)" "-" "-" | tee -a "$SUMMARY"
        return 0
    fi
    echo "=== $name (limit ${limit}s): $*"
    t0=$(date +%s)
    # SIGINT first: pytest prints its summary and bench_train.py reports the rounds it finished.
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    dt=$(($(date +%s) - t0))
    case $rc in
        0) status=ok ;;
        124 | 137) status="TIMEOUT after ${limit}s" ;;
        *) status="FAILED rc=$rc" ;;
    esac
    printf '%-14s %-26s %4ss  %s\n' "$name" "$status" "$dt" "$name.log" | tee -a "$SUMMARY"
    tail -n 30 "$OUT_DIR/$name.log"
    return 0
}

skip() {  # skip NAME REASON
    printf '%-14s %-26s %5s  %s\n' "$1" "SKIPPED" "-" "$2" | tee -a "$SUMMARY"
}

# ---- the interpreter: one whose torch sees a GPU (or any torch, for GPU_CHECKS_DEVICE=cpu) ----
has_cuda='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
PY=""
for candidate in ${PYTHON:-} .venv/bin/python python3 python; do
    command -v "$candidate" > /dev/null 2>&1 || continue
    if [ "$DEVICE" = cpu ]; then
        "$candidate" -c 'import torch' > /dev/null 2>&1 && PY=$candidate && break
    else
        "$candidate" -c "$has_cuda" > /dev/null 2>&1 && PY=$candidate && break
    fi
done
CUDA_OK=1
if [ -z "$PY" ]; then
    CUDA_OK=0
    PY=${PYTHON:-python3}
    echo "no python with a CUDA-enabled torch found (tried ${PYTHON:-} .venv/bin/python python3 python); using $PY" |
        tee -a "$SUMMARY"
fi
echo "python: $PY, device: $DEVICE, budget ${BUDGET}s, output: $OUT_DIR" | tee -a "$SUMMARY"

step env 30 bash -c "
    date -u '+%Y-%m-%dT%H:%M:%SZ'; hostname
    nvidia-smi || echo 'nvidia-smi: not available'
    grep -m1 'model name' /proc/cpuinfo; echo \"cores: \$(nproc)\"; free -g | head -2
    $PY -c 'import sys, torch; print(\"python\", sys.version.split()[0]); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(\"gpu\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
    git rev-parse HEAD 2>/dev/null; git status --short 2>/dev/null | head -20
    $PY -m pip list 2>/dev/null | grep -iE '^(torch|numpy|gymnasium|mujoco|h5py|pytest|minari|safetensors) '
"

# ---- dependencies: install only when they are missing and a CUDA torch is there to keep ----
deps_ok='import mtm.cli, mtm.training.loop, envs, gymnasium, mujoco, h5py, pytest'
if "$PY" -c "$deps_ok" > /dev/null 2>&1; then
    skip install "dependencies import (make install already ran)"
elif [ "$CUDA_OK" = 1 ]; then
    step install 150 "$PY" -m pip install -q -e ".[dev]"
else
    skip install "no CUDA torch to install next to"
fi

if [ "$DEVICE" = cuda ] && [ "$CUDA_OK" = 0 ]; then
    skip pytest "no CUDA"; skip parity "no CUDA"; skip bench_train "no CUDA"; skip bench_data "no CUDA"
    skip train_smoke "no CUDA"; skip eval_smoke "no CUDA"; skip bench_graph "no CUDA"; skip bench_compile "no CUDA"
    echo; cat "$SUMMARY"
    exit 1
fi

# ---- sizes ----
if [ "$QUICK" = 1 ]; then
    TESTS=(tests/test_config.py tests/test_loss.py)
    TRAIN_ARGS=(--configs small --batch-size 64 --threads 1 --steps 2 --block 1 --warmup 0)
    DATA_ARGS=(--steps 20000 --batches 5 --repeats 2)
    SMOKE_STEPS=20
    EVAL_EPISODES=2
else
    TESTS=()
    TRAIN_ARGS=(--configs reference,small --batch-size config --steps 50 --block 10 --warmup 3)
    DATA_ARGS=()
    SMOKE_STEPS=300
    EVAL_EPISODES=10
fi

step pytest 180 "$PY" -m pytest -q -p no:cacheprovider --durations=15 --junitxml="$OUT_DIR/pytest.xml" "${TESTS[@]}"

cat > "$SCRATCH/parity.py" << 'EOF'
"""The same MTM forward (reference config, eval mode) on the CPU and on the device: fp32 must agree."""
import sys

import torch

sys.path.insert(0, "scripts")
from pathlib import Path  # noqa: E402

from bench_train import build_group, dataset_path, load_data  # noqa: E402

from mtm.config import RunConfig, load_config, resolve_config_path  # noqa: E402

device = torch.device(sys.argv[1])
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
path, _ = dataset_path("synthetic", Path(sys.argv[2]))
cfg = load_config(RunConfig, resolve_config_path("reference"), [f"data.path={path}"])
g = build_group("reference", cfg, 512, load_data(cfg, torch.device("cpu")), torch.device("cpu"))
model = g.model.eval()
gen = torch.Generator().manual_seed(0)
batch = g.sampler.sample(512, gen)
visible = g.mask_fn(model.layout, 512, gen)
with torch.no_grad():
    ref = model(batch, visible, batch["valid"])
    model.to(device)
    on_dev = {k: v.to(device) for k, v in batch.items()}
    out = model(on_dev, visible.to(device), on_dev["valid"])
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        out_bf16 = model(on_dev, visible.to(device), on_dev["valid"])
worst = 0.0
for name, r in ref.items():
    real = model.layout.token_valid(batch["valid"])[:, model.layout.slice(name)].reshape(r.shape[:3])
    d32 = (out[name].float().cpu() - r).abs()[real].max().item()
    d16 = (out_bf16[name].float().cpu() - r).abs()[real].max().item()
    scale = r[real].abs().max().item()
    worst = max(worst, d32)
    print(f"{name:<8} max |out| {scale:8.4f}   max |{device.type} fp32 - cpu fp32| {d32:.2e}   "
          f"max |{device.type} bf16 - cpu fp32| {d16:.2e}")
print("fp32 parity", "OK" if worst < 1e-3 else "FAILED", f"(worst {worst:.2e}, tolerance 1e-3)")
sys.exit(0 if worst < 1e-3 else 1)
EOF
step parity 60 "$PY" "$SCRATCH/parity.py" "$DEVICE" "$SCRATCH"

step precision 30 "$PY" -c "import sys; from mtm.hardware import resolve_precision; print(resolve_precision('auto', sys.argv[1]).describe())" "$DEVICE"

step bench_train 150 "$PY" scripts/bench_train.py --device "$DEVICE" "${TRAIN_ARGS[@]}" \
    --dtypes fp32,bf16 --compile off --json "$OUT_DIR/bench_train.json"

step bench_data 90 "$PY" scripts/bench_data.py --device "$DEVICE" --path "$SCRATCH/hopper-like-1m.hdf5" "${DATA_ARGS[@]}"

# A real run of the CLI on the device, then its policy in the environment.
SMOKE_DATA=$SCRATCH/smoke-hopper.hdf5
step train_smoke 120 bash -c "
    $PY -c 'import sys; sys.path.insert(0, \"scripts\"); from bench_common import write_hopper_like; write_hopper_like(sys.argv[1], 100_000)' '$SMOKE_DATA' &&
    $PY -m mtm train --config small --data '$SMOKE_DATA' --device $DEVICE --run-dir '$SCRATCH/run' --no-progress \
        --set train.steps=$SMOKE_STEPS --set train.precision=auto --set train.log_every=50 --set train.val_every=100 &&
    tail -n 3 '$SCRATCH/run/metrics.jsonl'
"
if [ -d "$SCRATCH/run" ]; then
    step eval_smoke 60 "$PY" -m mtm eval --checkpoint "$SCRATCH/run" --episodes "$EVAL_EPISODES" --num-envs "$EVAL_EPISODES" \
        --device "$DEVICE" --output "$OUT_DIR/eval_smoke.json"
else
    skip eval_smoke "no run from train_smoke"
fi

# The policy step replayed from a CUDA graph (--cuda-graph) against eager, alternating twice.
if [ ! -d "$SCRATCH/run" ]; then
    skip bench_graph "no run from train_smoke"
elif [ "$DEVICE" != cuda ]; then
    skip bench_graph "CUDA graphs need CUDA"
else
    step bench_graph 90 "$PY" scripts/bench_plan.py "$SCRATCH/run" --device cuda --episodes 20 --num-envs 10 \
        '{"mode": "rcbc"}' '{"mode": "rcbc", "cuda_graph": true}' \
        '{"mode": "rcbc"}' '{"mode": "rcbc", "cuda_graph": true}' --json "$OUT_DIR/bench_graph.json"
fi

if [ "$QUICK" = 1 ] && [ "$DEVICE" = cpu ]; then
    skip bench_compile "quick CPU test of this script (compiling takes minutes on a CPU)"
else
    # Whatever time is left; on SIGINT bench_train.py still reports the rounds that finished.
    step bench_compile 600 "$PY" scripts/bench_train.py --device "$DEVICE" --configs reference --batch-size 2048 \
        --dtypes fp32,bf16 --compile off,on --steps 30 --block 10 --warmup 2 --json "$OUT_DIR/bench_compile.json"
fi

echo
echo "total $(($(date +%s) - START))s of a ${BUDGET}s budget; outputs in $OUT_DIR"
cat "$SUMMARY"
