"""A small sweep over train.py's settings for the default run on a CPU (issue 16): which recipe
makes the best model in the minutes a laptop gives it?

    python bench/sweep.py                          # the built-in grid, about 30 minutes on 2 cores
    python bench/sweep.py --only 0 3               # two of its rows
    python bench/sweep.py --grid g.json            # a JSON list of {"flag": value} dicts
    python bench/sweep.py --grid g.json --steps 300   # rows without max_iters get 300 steps

Each row is a separate `python train.py` process (like the user's), timed as a whole, with its
data cache shared across rows of the same vocabulary (so the BPE is trained once per size and its
time is reported apart). Reported: wall time, tokens/s, the loss over the whole held-out split in
bits per byte. The figure to compare is bits per byte at equal time: a recipe that is better per
step but slower may not be better per minute.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The sixth sweep (bench/RESULTS.md): a longer context at the same tokens a step (block 1024 at
# 1600 steps: it ran at about 0.8 of the default's tokens/s, so about the same time). The fifth was:
# dropout 0.1, no clipping and ReLU at 1760 steps; the fourth: 1600 steps, with min_lr_ratio 0 and
# with learning_rate 4e-3, and 1760 steps with weight_decay 0 and 0.3; the third (the width of a
# 2-layer model at equal CPU time): n_embd 128, 160, 192, 256, 384 at 2600, 2550, 2080, 1750, 1270
# steps, tanh GELU and SDPA.
GRID = [
    {"max_iters": 1900},
    {"max_iters": 1900, "block_size": 512, "batch_size": 8},
    {"max_iters": 1600, "block_size": 1024, "batch_size": 4},
]


def run(flags: dict, cache_dir: Path, steps: int | None, timeout: float):
    """One train.py run in a temporary out dir; returns (wall seconds, its log entries)."""
    argv = [sys.executable, str(ROOT / "train.py"), "--cache-dir", str(cache_dir),
            "--sample-tokens", "0"]
    if steps:
        flags = {"max_iters": steps, **flags}
    for key, value in flags.items():
        name = "--" + key.replace("_", "-")
        if value is True or value is False:
            argv.append(name if value else f"--no-{key.replace('_', '-')}")
        else:
            argv += [name, str(value)]
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.time()
        subprocess.run(argv + ["--out-dir", out_dir], check=True, cwd=ROOT, timeout=timeout,
                       stdout=subprocess.DEVNULL)
        wall = time.time() - start
        log = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    return wall, log


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path,
                        help="a JSON list of flag dicts (default: the built-in grid)")
    parser.add_argument("--only", type=int, nargs="*", help="run only these rows of the grid")
    parser.add_argument("--steps", type=int, help="max_iters for rows that do not set it")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = parser.parse_args()
    grid = json.loads(args.grid.read_text()) if args.grid else GRID
    rows = [grid[i] for i in args.only] if args.only is not None else grid
    print("| flags (on top of the CPU defaults) | wall (min) | tokens/s | held-out bits per byte |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as cache_dir:
        for flags in rows:
            wall, log = run(flags, Path(cache_dir), args.steps, args.timeout)
            speed = [e["tokens_per_second"] for e in log if "tokens_per_second" in e]
            bpb = [e["heldout_bpb"] for e in log if e.get("heldout_bpb")][-1]  # the whole split
            shown = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items())
            print(f"| {shown} | {wall / 60:.1f} | {speed[-1]:,} | {bpb:.3f} |", flush=True)


if __name__ == "__main__":
    main()
