#!/usr/bin/env bash
# study.py --jobs on this machine: the same 4 problem-2 runs (heatmap, regression, integral, SimCC; 3 epochs on
# 500/100 generated images, one seed) three ways, one after the other (never two timed things at once):
#   A  --jobs 1                     (one run at a time, all threads)
#   B  --jobs 2 --threads-per-run 1 (two at a time, one thread each)
#   C  --jobs 1 --threads-per-run 1 (one at a time, one thread: B's runs must equal these number for number)
# Writes OUT/times.txt (wall seconds of each study) and OUT/{A,B,C}/study.json; OUT defaults to results/jobs_benchmark.
set -u
if [ $# -gt 0 ]; then  # settings are environment variables (above); the one argument taken is --help
    case $1 in
        -h | --help) sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "$(basename "$0"): takes no arguments, only environment variables (see --help)" >&2; exit 2 ;;
    esac
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-results/jobs_benchmark}
mkdir -p "$OUT"
: > "$OUT/times.txt"
COMMON=(--quick --quick-images 500 100 --quick-epochs 1 3 --seeds 1 --only p2 --no-bench --device cpu
        --experiments p2-heatmap p2-regression p2-integral p2-simcc)
for cfg in "A:--jobs 1" "B:--jobs 2 --threads-per-run 1" "C:--jobs 1 --threads-per-run 1"; do
  name=${cfg%%:*}; flags=${cfg#*:}
  dir=$OUT/$name
  rm -rf "$dir"
  # the data first, so the timed part is the runs alone
  python -c "import sys; sys.path.insert(0, '.'); from generate_datasets import generate; generate('$dir/quick_data', num_train=500, num_val=100)"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  PROGRESS=0 python study.py "${COMMON[@]}" $flags --results-dir "$dir" > "$dir.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "$name ($flags): exit $rc, $(python -c "print(round($end - $start, 1))") s" | tee -a "$OUT/times.txt"
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
s = {k: json.load(open(f"{out}/{k}/study.json")) for k in "ABC"}
runs = {k: {r["experiment"]: r for r in v["runs"]} for k, v in s.items()}
same = all(runs["B"][e]["metrics"] == runs["C"][e]["metrics"] for e in runs["C"])
print(f"B's runs equal C's number for number: {same}")
for k in "ABC":
    print(k, "training seconds per run:", {e: r["time"]["train_s"] for e, r in runs[k].items()},
          "threads:", sorted({r["threads"] for r in runs[k].values()}))
PY
