#!/usr/bin/env bash
# The study's runs on a lent GPU, in one call, after tools/device_check.sh. Two parts, each a study.py of its own
# that packs JOBS runs at a time onto the GPU:
#   p1: problem 1's experiments trained afresh, every seed, in bf16 (CUDA's default). All of an experiment's seeds
#       then come from one machine and one precision, and the runs the report draws figures from keep their
#       checkpoints long enough to draw them.
#   p2: problem 2's runs that are not finished yet, in fp32 (--no-amp; IEEE fp32, not TF32: common.runtime), the
#       precision of its seeds trained on CPUs. Finished runs are carried over from CARRY (an export of the study made
#       where it runs, else docs/report), so they are not trained again.
# The whole script keeps within DEADLINE seconds (the device tool's limit on one call is 600): each part trains for
# at most LIMIT seconds and what is left before the deadline, less RESERVE for writing its report and export; a part
# with less than a minute left is skipped. A run cut short is lost (its checkpoints stay behind), the finished ones
# are kept. What comes back is small: OUT/<part>_report, a `study.py --export` of each part, which `study.py
# --continue-from` carries into the study where it runs (docs/reference.md, "On a lent GPU"), OUT/<part>.log, and
# OUT/summary.txt with "step rc seconds" per step, as device_check.sh writes it (rc 124 or 137: cut at its limit).
#
#   python study.py --report-only --seeds-for p1-cosine=3 && python study.py --export results/carry   # where the
#                                                                 # study runs, first: its finished runs, to carry
#   OUT=$OUT/study bash tools/device_study.sh                     # on the GPU, a call after device_check.sh's
#   DEVICE=cpu PARTS=p1 STUDY_ARGS="--quick --seeds 1" bash tools/device_study.sh   # the script itself, on a CPU
set -u
if [ $# -gt 0 ]; then  # settings are environment variables (above); the one argument taken is --help
    case $1 in
        -h | --help) sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "$(basename "$0"): takes no arguments, only environment variables (see --help)" >&2; exit 2 ;;
    esac
fi
set -f  # STUDY_ARGS is split on spaces and never globbed (quotes inside it are not removed: write none)
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results/device_study}
WORK=${WORK:-results/device_study_runs}  # the parts' results folders: checkpoints and all, not brought back
PARTS=${PARTS:-p1 p2}
CARRY=${CARRY:-$( [ -f results/carry/study.json ] && echo results/carry || echo docs/report )}
JOBS=${JOBS:-4}
LIMIT=${LIMIT:-420}      # seconds of training per part at most
DEADLINE=${DEADLINE:-560}  # seconds for the whole script
RESERVE=${RESERVE:-120}  # seconds kept for a part's report and export, and 10 s of --kill-after per step
STUDY_ARGS=${STUDY_ARGS:-}  # appended to each part's training and report commands (a later option wins)
PY=${PYTHON:-python3}
export PROGRESS=0 MPLBACKEND=Agg
mkdir -p "$OUT"
: > "$OUT/summary.txt"

step() {  # step NAME LIMIT COMMAND...: run it under its time limit, log it, record its exit status and wall time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    # timeout signals its whole process group: the runs' worker processes (--jobs) get SIGTERM with study.py, and
    # SIGKILL 10 s later if study.py has not ended by then (rc 137)
    timeout --kill-after=10 "$limit" "$@" >> "$OUT/${name%%_*}.log" 2>&1
    local rc=$?
    echo "$name $rc $((SECONDS - t0))" | tee -a "$OUT/summary.txt"
    return $rc
}

for part in $PARTS; do
    case $part in
        p1) args=(--only p1) ;;
        p2) args=(--only p2 --no-amp --continue-from "$CARRY") ;;
        *) echo "PARTS: unknown part '$part' (p1, p2)" >&2; exit 2 ;;
    esac
    left=$((DEADLINE - SECONDS - RESERVE))
    if [ "$left" -lt 60 ]; then
        echo "${part}_train skipped 0" | tee -a "$OUT/summary.txt"  # "skipped": not 0, so the script fails
        continue
    fi
    runs="$WORK/$part"
    : > "$OUT/$part.log"
    # --run-figures report: the seed-641 runs draw the figures the report shows, and nothing else is drawn.
    # A part cut short wrote no study.json: the report step writes it from the runs that finished.
    step "${part}_train" "$((left < LIMIT ? left : LIMIT))" "$PY" study.py "${args[@]}" --device "$DEVICE" \
        --jobs "$JOBS" --no-bench --run-figures report --results-dir "$runs" $STUDY_ARGS ||
        step "${part}_report" 60 "$PY" study.py "${args[@]}" --report-only --no-bench --results-dir "$runs" \
            --device "$DEVICE" $STUDY_ARGS
    rm -rf "$OUT/${part}_report"
    step "${part}_export" 30 "$PY" study.py --results-dir "$runs" --export "$OUT/${part}_report"
done
! grep -qv " 0 [0-9]*$" "$OUT/summary.txt"
