"""
Benchmark train.py, each run a separate `python train.py` process, side by side:
- CPU (or --full): the default run, `python train.py` with no arguments: wall time, final validation
  loss and bits per byte, next to xz -9 on the same held-out text;
- CUDA: tokens/s and MFU of the 124M GPT-2 in bfloat16 over a short run, with PyTorch's kernels
  (SDPA and F.layer_norm) and with ours (kernels/), each with and without --compile.

    python bench/train.py            # prints a markdown table for bench/RESULTS.md
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the project's modules, not bench/'s files of the same names

from train import TrainConfig, prepare_data  # noqa: E402


def train(out_dir, *flags):
    """Run train.py; return its wall time and its log entries."""
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--out-dir", str(out_dir), *flags], check=True, cwd=ROOT)
    wall = time.time() - start
    return wall, [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also the full default run on a GPU (about 10 minutes)")
    parser.add_argument("--steps", type=int, default=40, help="steps of each short GPU run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        if not torch.cuda.is_available() or args.full:
            wall, log = train(Path(scratch) / "default")
            last = [e for e in log if "val_loss" in e][-1]
            config = torch.load(Path(scratch) / "default" / "ckpt.pt", weights_only=True)["train_config"]
            config["cache_dir"] = str(ROOT / config["cache_dir"])  # train.py ran in ROOT
            data = prepare_data(TrainConfig(**config), log=lambda *args: None)  # the cached folder
            meta = json.loads((data / "meta.json").read_text())
            xz, size = meta["val_xz_bits_per_byte"], meta["val_bytes"]
            rows.append(f"| `python train.py` (default, {config['model']}, {config['max_iters']} steps) | "
                        f"{wall / 60:.1f} min | {last['val_loss']:.3f} | {last['val_bpb']:.3f} |")
            rows.append(f"| xz -9 on the same held-out text ({size / 1e6:.2f} MB) | | | {xz:.3f} |")
            print("| run | wall time | val loss (nats/token) | val bits per byte |\n| --- | ---: | ---: | ---: |")
            print("\n".join(rows))
        if torch.cuda.is_available():
            print(f"\nGPU: {torch.cuda.get_device_name()}, gpt2 (124M), bf16, {args.steps} steps each")
            print("| kernels | compile | tokens/s | MFU |\n| --- | --- | ---: | ---: |")
            for kernels in ("--no-kernels", "--kernels"):
                for compile_flag in ("--no-compile", "--compile"):
                    attention = "sdpa" if kernels == "--no-kernels" else "auto"
                    _, log = train(Path(scratch) / f"{kernels}{compile_flag}", kernels, compile_flag, "--attention", attention,
                                   "--max-iters", str(args.steps), "--eval-interval", "100000", "--eval-iters", "1",
                                   "--log-interval", str(args.steps // 2), "--sample-tokens", "0")
                    last = [e for e in log if "tokens_per_second" in e][-1]  # the second half: compilation excluded
                    name = "PyTorch (SDPA, F.layer_norm)" if kernels == "--no-kernels" else "ours (kernels/)"
                    mfu = f"{last['mfu']:.1%}" if last.get("mfu") else "n/a"
                    print(f"| {name} | {compile_flag == '--compile'} | {last['tokens_per_second']:,} | {mfu} |")


if __name__ == "__main__":
    main()
