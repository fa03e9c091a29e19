#!/usr/bin/env bash
# The GPU checks in one command, for a machine lent for minutes: the benchmark, full problem-1 and problem-2 runs
# with their evaluations, and a one-GPU torchrun (nccl). Each step logs to OUT/<step>.log and appends
# "step rc seconds" to OUT/summary.txt; a failing step does not stop the others, and each has its own time limit so
# that one hang cannot use up the machine. The whole script keeps within DEADLINE seconds: a step that would start
# with less than 10 s left is recorded as "skipped".
#
#   bash tools/device_check.sh                       # DEVICE=cuda, full runs, outputs in $OUT or results/device
#   DEVICE=cpu P1_EPOCHS=1 P2_EPOCHS=1 TORCHRUN_EPOCHS=1 NUM_TRAIN=8 NUM_VAL=4 BENCH_STEPS=1 BENCH_WARMUP=0 \
#       BENCH_BATCH=4 BENCH_PROBLEM=2 bash tools/device_check.sh   # a quick check of the script itself on a CPU
set -u
if [ $# -gt 0 ]; then  # settings are environment variables (above); the one argument taken is --help
    case $1 in
        -h | --help) sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "$(basename "$0"): takes no arguments, only environment variables (see --help)" >&2; exit 2 ;;
    esac
fi
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results/device}
DATA=${DATA:-$OUT/datasets}
P1_EPOCHS=${P1_EPOCHS:-50}
P2_EPOCHS=${P2_EPOCHS:-30}
NUM_TRAIN=${NUM_TRAIN:-1000}
NUM_VAL=${NUM_VAL:-200}
BENCH_STEPS=${BENCH_STEPS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_BATCH=${BENCH_BATCH:-}  # empty: each problem's specified batch
TORCHRUN_EPOCHS=${TORCHRUN_EPOCHS:-2}
BENCH_PROBLEM=${BENCH_PROBLEM:-all}
STEP_LIMIT=${STEP_LIMIT:-240}  # seconds per step at most
DEADLINE=${DEADLINE:-570}  # seconds for the whole script: the device tool's limit on one call is 600
PY=${PYTHON:-python3}
export PROGRESS=0 MPLBACKEND=Agg
mkdir -p "$OUT"
: > "$OUT/summary.txt"

step() {  # step NAME COMMAND...: run it under the time limit, log it, record its exit status and wall time
    local name=$1
    shift
    local t0=$SECONDS left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 10 ]; then  # past the deadline: recorded as not run, which fails the script
        echo "$name skipped 0" | tee -a "$OUT/summary.txt"
        return
    fi
    timeout "$((left < STEP_LIMIT ? left : STEP_LIMIT))" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name $rc $((SECONDS - t0))" | tee -a "$OUT/summary.txt"
}

{
    "$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
} > "$OUT/machine.txt" 2>&1
step data "$PY" generate_datasets.py --output_dir "$DATA" --num_train "$NUM_TRAIN" --num_val "$NUM_VAL"
step bench "$PY" bench.py --problem "$BENCH_PROBLEM" --device "$DEVICE" --data-dir "$DATA" --steps "$BENCH_STEPS" \
    --warmup "$BENCH_WARMUP" ${BENCH_BATCH:+--batch-size "$BENCH_BATCH"} --json "$OUT/bench.json"
step p1_train "$PY" problem1/train.py --device "$DEVICE" --epochs "$P1_EPOCHS" --data-dir "$DATA" \
    --results-dir "$OUT/problem1"
step p1_evaluate "$PY" problem1/evaluate.py --device "$DEVICE" --data-dir "$DATA" --results-dir "$OUT/problem1"
step p2_train "$PY" problem2/train.py --device "$DEVICE" --epochs "$P2_EPOCHS" --data-dir "$DATA" \
    --results-dir "$OUT/problem2"
step p2_evaluate "$PY" problem2/evaluate.py --device "$DEVICE" --data-dir "$DATA" --results-dir "$OUT/problem2"
# One process through torchrun: the distributed code path (nccl on CUDA, gloo on CPU) on a short run.
step torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 problem1/train.py --device "$DEVICE" \
    --epochs "$TORCHRUN_EPOCHS" --data-dir "$DATA" --results-dir "$OUT/torchrun"
# What comes back should be small: no datasets or checkpoints.
rm -rf "$DATA"
find "$OUT" -name "*.pth" -delete
! grep -qv " 0 [0-9]*$" "$OUT/summary.txt"
