"""
Where the default run's held-out loss comes from: bits per byte of a checkpoint on each held-out
file of the built-in corpus, next to what `xz -9` makes of the same file, and both on the split
with and without its largest file.

    python bench/heldout_files.py                  # out/ckpt.pt, after `python train.py`
    python bench/heldout_files.py --checkpoint DIR/ckpt.pt --top 20

Each file is scored on its own, after an <|endoftext|>, by train.py's whole_text_loss: windows of
block_size tokens sliding on by half a block, each scoring only the tokens not scored before, so
every token after the first half block is predicted from at least half a block of context (a
file shorter than a block is one window). train.py scores
the split as one stream, where a file's first tokens also see the end of the file before, so
the two totals can differ a little. xz compresses each group of files as one text, joined in
train.py's order, as train.py does for the whole split. The held-out files are taken from the
running interpreter's standard library: score a checkpoint with the Python that trained it.
"""

import argparse
import math
import sys
import sysconfig
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the project's modules

from bpe import ENDOFTEXT, one_line_errors, read_text  # noqa: E402
from gpt import load_model  # noqa: E402
from train import builtin_corpus, split_documents, whole_text_loss, xz_bits_per_byte  # noqa: E402


def bits(model, ids, autocast) -> float:
    """The bits the model needs for ids[1:] given what comes before each (ids[0] is the
    <|endoftext|> that train.py puts before each document, as the end of the one before), scored
    as train.py scores the whole held-out split."""
    nats_per_token = whole_text_loss(model, np.array(ids), model.config.block_size, 16,
                                     torch.device("cpu"), autocast, chunked_loss=True)
    return nats_per_token * (len(ids) - 1) / math.log(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="out/ckpt.pt")
    parser.add_argument("--top", type=int, default=10, help="show the largest files")
    args = parser.parse_args()
    model, tokenizer, checkpoint = load_model(args.checkpoint)
    train_config = (checkpoint or {}).get("train_config", {})
    if train_config.get("data", ""):
        raise ValueError(f"{args.checkpoint} was trained on {train_config['data']}, not on the "
                         "built-in corpus whose held-out files this scores")
    dtype = getattr(torch, train_config.get("dtype", "float32"))
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)  # as it trained
    _, files = split_documents(builtin_corpus())  # train.py's held-out split
    if tokenizer.eot_id is None:
        raise ValueError(f"{args.checkpoint}'s tokenizer has no {ENDOFTEXT}, which train.py puts "
                         "between documents; give a checkpoint of train.py's default run")
    Row = namedtuple("Row", "name text size model_bits")
    rows = []  # in train.py's order, which xz sees for the groups below
    for file in files:
        text = read_text(file)
        ids = [tokenizer.eot_id, *tokenizer.encode_ordinary(text), tokenizer.eot_id]
        name = file.relative_to(sysconfig.get_paths()["stdlib"]).as_posix()
        rows.append(Row(name, text, len(text.encode()), bits(model, ids, autocast)))
    largest = sorted(rows, key=lambda row: -row.size)
    print("| held-out text | bytes | model (bits per byte) | xz -9 (bits per byte) |")
    print("| --- | ---: | ---: | ---: |")
    for row in largest[:args.top]:
        print(f"| {row.name} | {row.size:,} | {row.model_bits / row.size:.3f} "
              f"| {xz_bits_per_byte(row.text.encode()):.3f} |")
    for label, group in ((f"all {len(rows)} files", rows),
                         (f"the {len(rows) - 1} files without {largest[0].name}",
                          [row for row in rows if row is not largest[0]])):
        size = sum(row.size for row in group)
        print(f"| {label} | {size:,} | {sum(row.model_bits for row in group) / size:.3f} "
              f"| {xz_bits_per_byte(''.join(row.text for row in group).encode()):.3f} |")

if __name__ == "__main__":
    with one_line_errors():  # e.g. no out/ckpt.pt yet: run `python train.py` first
        main()
