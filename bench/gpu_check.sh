#!/usr/bin/env bash
# The GPU half in one device call (issue 11): the CUDA tests, then every GPU benchmark, each step
# under its own timeout so that one hang cannot eat the lease. Logs go to $OUT (the device tool's
# folder that comes back), at most 8 files; the end of each log is printed for the reply's tail.
#
#     bash bench/gpu_check.sh            # on the lent H200: about 8 minutes
#     bash bench/gpu_check.sh full       # plus `python train.py` with no arguments (about 10 more)
#
# ../shared/data does not travel to the device machine: the tests that need it skip there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run COMMAND, log to $OUT/NAME.log, print its exit and tail
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  echo "## $name: exit $code in $((SECONDS - start)) s ($*)" | tee -a "$OUT/summary.log"
  tail -n 25 "$OUT/$name.log"
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$OUT/summary.log" 2>&1
cat "$OUT/summary.log"

step tests 300 python3 -m pytest -q -x -p no:cacheprovider --timeout 240 \
  tests/test_kernels.py tests/test_gpt.py tests/test_sample.py tests/test_train.py
step layer_norm 90 python3 bench/layer_norm.py
step attention 180 python3 bench/attention.py
step train 240 python3 bench/train.py --steps 40
if [ "${1:-}" = full ]; then
  step default_run 720 python3 bench/train.py --full --steps 40
fi
echo; cat "$OUT/summary.log"
