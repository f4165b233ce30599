#!/usr/bin/env bash
# Run every benchmark in bench/, one after the other, and keep the whole log (bench/last_run.log,
# or $OUT/bench.log on the lent GPU machine). Paste the tables into bench/RESULTS.md with the date,
# the hardware and the command.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${OUT:-bench}/$( [ -n "${OUT:-}" ] && echo bench.log || echo last_run.log )
{
  date -u; python -c "import torch; print('torch', torch.__version__, 'cuda:', torch.cuda.is_available() and torch.cuda.get_device_name())"
  for script in bench/*.py; do
    echo; echo "## python $script"
    python "$script" || echo "FAILED: $script (exit $?)"
  done
} 2>&1 | tee "$log"
