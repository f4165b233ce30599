"""
GPT-1's ablation (Table 5) on a small scale: fine-tune on SST-2 and RTE and report dev accuracy for
  - no pre-training: a randomly initialised model, fine-tuned with the auxiliary LM loss (λ = 0.5);
  - a model pretrained by train.py, fine-tuned with the auxiliary LM loss (λ = 0.5), GPT-1's recipe;
  - the same pretrained model fine-tuned without it (λ = 0);
and, for comparison, the pretrained model with no fine-tuning at all: GPT-2 style zero-shot scoring.
Every fine-tuning run has the same budget (rows, epochs, batch, learning rate).

The pretraining corpus is the unlabelled text of the SST-2 and RTE training sets (their sentences,
without the labels; the dev sets are left out), so a small model pretrained for a few minutes on a
CPU has seen the kind of text it is then asked to classify.

    python bench/finetune_ablation.py          # CPU, gpt-micro: about 10 minutes on 2 busy cores
    python bench/finetune_ablation.py --model gpt2 --block-size 256 --vocab-size 8192 --pretrain-iters 2000 \\
        --sst2-rows 0 --epochs 3 --learning-rate 6.25e-5          # the 124M size, on a GPU

It prints a markdown table for bench/RESULTS.md. On a shared CPU, OMP_NUM_THREADS=1 keeps two
threads from waiting on each other (see tests/conftest.py).
"""

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the project's modules, not bench/'s files of the same names
GLUE = ROOT.parent / "shared" / "data" / "glue"

import finetune  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402


def pretraining_corpus(path):
    """The sentences of SST-2's and RTE's training files, one per line, labels left out."""
    lines = []
    for task, columns in (("SST-2", ["sentence"]), ("RTE", ["sentence1", "sentence2"])):
        with open(GLUE / task / "train.tsv", encoding="utf-8", newline="") as file:
            for row in csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE):
                lines += [row[column].strip() for column in columns]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def random_init_checkpoint(pretrained, path, seed=0):
    """The pretrained checkpoint's shape and tokenizer with fresh weights: "no pre-training"."""
    checkpoint = torch.load(pretrained, weights_only=True)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**checkpoint["config"]))
    torch.save({"model": model.state_dict(), "config": checkpoint["config"], "tokenizer": checkpoint["tokenizer"]}, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt-micro")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--pretrain-iters", type=int, default=600)
    parser.add_argument("--sst2-rows", type=int, default=4000, help="SST-2 training rows (0: all 67,349); RTE uses all 2,490")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="fine-tuning; GPT-1's 6.25e-5 is for 117M parameters and 3 epochs")
    parser.add_argument("--device", default="")
    args = parser.parse_args()
    if not (GLUE / "SST-2").is_dir():
        sys.exit(f"error: {GLUE} not found: the shared data folder (../shared/data) is needed")
    device = ["--device", args.device] if args.device else []
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        pretraining_corpus(scratch / "corpus.txt")
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(scratch / "corpus.txt"),
                        "--cache-dir", str(scratch / "cache"), "--out-dir", str(scratch / "pretrained"),
                        "--model", args.model, "--block-size", str(args.block_size), "--vocab-size", str(args.vocab_size),
                        "--max-iters", str(args.pretrain_iters), "--batch-size", "16", "--learning-rate", "2e-3",
                        "--eval-interval", str(args.pretrain_iters), "--eval-iters", "10", "--log-interval", "50",
                        "--sample-tokens", "0", *device], check=True, cwd=ROOT)
        pretrained = scratch / "pretrained" / "ckpt.pt"
        random_init_checkpoint(pretrained, scratch / "random.pt")
        pretrain_minutes = (time.time() - started) / 60

        runs = [("no pre-training (random init), λ = 0.5", scratch / "random.pt", "0.5"),
                ("pretrained, λ = 0.5 (GPT-1)", pretrained, "0.5"),
                ("pretrained, no auxiliary LM loss (λ = 0)", pretrained, "0")]
        rows = []
        for name, init, lm_coef in runs:
            row = [name]
            for task, folder, limit in (("sst2", "SST-2", args.sst2_rows), ("rte", "RTE", 0)):
                out = scratch / f"{task}-{len(rows)}"
                finetune.main(["--task", task, "--data", str(GLUE / folder), "--init-from", str(init),
                               "--out-dir", str(out), "--lm-coef", lm_coef, "--epochs", str(args.epochs),
                               "--learning-rate", str(args.learning_rate), "--max-train-rows", str(limit),
                               "--log-interval", "25", *device])
                row.append(torch.load(out / "best.pt", weights_only=True)["metrics"]["accuracy"])
            rows.append(row)
        zero_shot = ["pretrained, zero-shot (no fine-tuning)"]
        for task, folder in (("sst2", "SST-2"), ("rte", "RTE")):
            scores = finetune.main(["--task", task, "--data", str(GLUE / folder), "--init-from", str(pretrained),
                                    "--zero-shot", *device])
            zero_shot.append(scores["accuracy"])
        rows.append(zero_shot)

    print(f"\n{args.model}, block {args.block_size}, vocab {args.vocab_size}: pretrained {args.pretrain_iters} steps "
          f"({pretrain_minutes:.1f} min); fine-tuned {args.epochs} epoch(s) on {args.sst2_rows or 'all'} SST-2 rows and all "
          f"2,490 RTE rows, lr {args.learning_rate}; total {(time.time() - started) / 60:.1f} min\n")
    print("| model | SST-2 dev accuracy (872) | RTE dev accuracy (277) |")
    print("| --- | ---: | ---: |")
    for name, sst2, rte in rows:
        print(f"| {name} | {sst2:.1%} | {rte:.1%} |")
    print("| majority class | 50.9% | 52.7% |")


if __name__ == "__main__":
    main()
