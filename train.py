"""
Pretrain a GPT on a text corpus: the first stage of GPT-1 (section 3.1) and all of GPT-2.

    python train.py                                    # built-in corpus: Python's standard library
    python train.py --data input.txt --model gpt-mini  # a text file, a folder of them, .bin files
    python train.py --config configs/gpt2-124m.json    # a named recipe (JSON), then flags on top
    python train.py --init-from gpt2 --data input.txt  # continue GPT-2's pretraining on your text
    python train.py --resume                           # continue out/ckpt.pt exactly where it was
    torchrun --standalone --nproc_per_node=8 train.py  # 8 GPUs with DistributedDataParallel

Reading order: the settings, the data (prepared once, then sampled), the learning-rate schedule,
the out dir and checkpoints, building a run, the steps of the loop, the run itself (pretrain), the
command line.
"""

import argparse
import ctypes
import dataclasses
import hashlib
import json
import lzma
import math
import os
import shutil
import signal
import sys
import sysconfig
import textwrap
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

try:
    import fcntl  # POSIX file locks; on Windows, runs into one folder are not detected
except ImportError:
    fcntl = None

from bpe import (ENDOFTEXT, CharTokenizer, Tokenizer, load_tokenizer, one_line_errors, read_text,
                 text_files)
from gpt import ACTIVATIONS, INIT_FROM_HELP, GPT, GPTConfig, add_tokens, load_model


def flag(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # data
    data: str = flag("", "text file, folder of text files, or prepared folder with train.bin and "
                         "val.bin; empty: the Python standard library's source")
    tokenizer: str = flag("", "a bpe.py file, a model's folder (DIR or gpt2:DIR) for its "
                              "vocabulary, or char: one token per character of the corpus "
                              "(nanoGPT's shakespeare_char); empty: --init-from's, or a BPE "
                              "trained on the corpus")
    vocab_size: int = flag(4096, "vocabulary size of the BPE trained on the corpus")
    cache_dir: str = flag("data_cache", "where prepared corpora (tokenizer, .bin files) are kept")
    # model: a preset, and nanoGPT's flags to change its shape
    model: str = flag("", "a GPTConfig preset (gpt1, gpt2, gpt-mini, ...); empty: for the device")
    n_layer: int = flag(0, "transformer blocks; 0: the preset's")
    n_head: int = flag(0, "attention heads; 0: the preset's")
    n_embd: int = flag(0, "width of the embeddings and the residual stream; 0: the preset's")
    block_size: int = flag(0, "context length; 0: chosen for the device")
    dropout: float = flag(-1.0, "dropout; -1: the preset's")
    bias: bool = flag(None, "biases in the Linear layers and LayerNorms (nanoGPT trains without: "
                            "--no-bias); default: the preset's")
    activation: str = flag("", f"the MLP's, one of {', '.join(ACTIVATIONS)}; empty: the preset's")
    init_from: str = flag("", INIT_FROM_HELP)  # empty: a new model
    attention: str = flag("auto", "auto, math, sdpa or triton")
    kernels: bool = flag(True, "on CUDA, the Triton kernels of kernels/ (LayerNorm, and attention "
                               "when auto)")
    compile: bool = flag(False, "torch.compile the model")
    # optimization
    batch_size: int = flag(0, "sequences per micro-batch per process; 0: chosen for the device")
    batch_tokens: int = flag(0, "tokens per optimizer step (gradient accumulation reaches it); "
                                "0: one micro-batch")
    max_iters: int = flag(0, "optimizer steps; 0: chosen for the device")
    lr_decay_iters: int = flag(0, "steps over which the cosine decays; 0: max_iters (stop early "
                                  "with a larger value)")
    learning_rate: float = flag(0.0, "peak learning rate; 0: chosen for the device")
    min_lr_ratio: float = flag(0.1, "the cosine decays to learning_rate times this")
    warmup_iters: int = flag(-1, "linear warmup steps; -1: 5%% of max_iters")
    weight_decay: float = flag(0.1, "AdamW weight decay, on matrices only")
    beta1: float = flag(0.9, "AdamW beta1")
    beta2: float = flag(0.0, "AdamW beta2; 0: chosen for the device")
    grad_clip: float = flag(1.0, "clip the gradient norm to this; 0: off")
    # running
    device: str = flag("", "cuda, mps or cpu; empty: the best available")
    dtype: str = flag("", "bfloat16, float16 or float32; empty: bfloat16 on CUDA (float16 if "
                          "unsupported) and on CPUs with bfloat16 arithmetic (AVX512-BF16), "
                          "else float32")
    seed: int = flag(1337, "random seed")
    out_dir: str = flag("out", "checkpoints, log and plot go here")
    eval_interval: int = flag(0, "evaluate and checkpoint every this many steps; 0: 10 times a run")
    eval_iters: int = flag(20, "validation batches per evaluation (the same batches every time)")
    log_interval: int = flag(10, "print progress every this many steps")
    resume: bool = flag(False, "continue from out_dir/ckpt.pt")
    overwrite: bool = flag(False, "start anew in an out_dir that holds a run, deleting its files")
    plot: bool = flag(False, "write out_dir/loss.png (needs matplotlib)")
    sample_tokens: int = flag(200, "tokens of the sample printed at the end; 0: none")


# The settings left at 0 or "" above depend on the machine: the default run takes about 7 minutes
# on a 2-core CPU (recipe chosen by bench/sweep.py), and about ten on a GPU with the 124M GPT-2.
DEVICE_DEFAULTS = {
    # A CPU that multiplies in bfloat16 (AVX512-BF16: recent Xeons, AMD Zen 4) trains in it (see
    # default_dtype). beta2 0.99: with 4,096 tokens a step, the squared gradient needs a longer
    # average (nanoGPT's shakespeare_char uses 0.99 too); GPUs keep GPT-2's usual 0.95. 1900 steps:
    # about 6 minutes on a 2-core Xeon (2000 took 8 in its slow hours); at this budget steps lower
    # the loss most (1600 -> 1760 took 0.022 bits per byte off; beyond, a run's chance weighs as
    # much as 10% more steps; bench/RESULTS.md).
    "cpu": dict(model="gpt-tiny", block_size=256, batch_size=16, max_iters=1900,
                learning_rate=3e-3, beta2=0.99),
    # Other CPUs train in float32, where gpt-tiny's step takes 2.2 times as long: half as wide, and
    # 1600 steps, so that it takes no longer than the bfloat16 recipe on the same Xeon.
    "cpu-float32": dict(model="gpt-tiny-128", block_size=256, batch_size=16, max_iters=1600,
                        learning_rate=3e-3, beta2=0.99),
    "mps": dict(model="gpt-mini", block_size=256, batch_size=16, max_iters=2000,
                learning_rate=1e-3, beta2=0.95),
    # about 157M tokens: ~6 minutes at 50% MFU on an H100/H200 (estimated, not yet measured here);
    # the built-in corpus is only ~3M tokens: dropout keeps the many passes over it from overfitting
    "cuda": dict(model="gpt2", block_size=1024, batch_size=16, batch_tokens=2**18, max_iters=600,
                 learning_rate=6e-4, dropout=0.1, beta2=0.95),
}


# Left out, or given as 0 or "", these are chosen for the device, as --help says.
AUTOMATIC = ("model", "block_size", "batch_size", "max_iters", "learning_rate", "beta2")

# The model's shape over the preset's (nanoGPT's flags); each left at its default: the preset's.
SHAPE = ("n_layer", "n_head", "n_embd", "bias", "activation", "dropout")


def model_config(config: TrainConfig, vocab_size: int) -> GPTConfig:
    default = TrainConfig()
    given = {k: getattr(config, k) for k in SHAPE if getattr(config, k) != getattr(default, k)}
    return GPTConfig.preset(config.model, block_size=config.block_size, vocab_size=vocab_size,
                            **given)


def resolve_settings(config: TrainConfig, asked: set, device_type: str, saved=None) -> TrainConfig:
    """The run's settings, merged in one order, each source winning over the ones before it:
    1. TrainConfig's defaults;
    2. for a new run, DEVICE_DEFAULTS of this device; for a resumed run, the settings it was
       started with (saved in its checkpoint), so that it goes on as it began;
    3. what was asked for (`asked` names them): the --config recipe, then the command line's flags;
    4. the settings that follow from others: warmup over 5% of max_iters, 10 evaluations in a run,
       and the cosine over the whole run.
    Then every setting is checked, before any work is done."""
    ours = {k: getattr(config, k) for k in asked}
    if saved:
        saved = dataclasses.asdict(TrainConfig(**saved))  # a setting added since: its default
        shape = {"model", *SHAPE, "block_size", "vocab_size", "tokenizer", "data", "init_from"}
        if changed := sorted(k for k in asked & shape if ours[k] != saved[k]):
            was = ", ".join(f"{k}={saved[k]!r}" for k in changed)
            raise ValueError(f"{Path(config.out_dir) / 'ckpt.pt'} was trained with other "
                             f"{', '.join(changed)} ({was}); drop those flags to resume, or use a "
                             "new --out-dir")
        base = saved
    else:
        base = {**dataclasses.asdict(TrainConfig()), **DEVICE_DEFAULTS[device_type]}
    config = TrainConfig(**{**base, **ours})
    if config.warmup_iters < 0:
        config.warmup_iters = max(1, config.max_iters // 20)
    config.eval_interval = config.eval_interval or max(1, config.max_iters // 10)
    config.lr_decay_iters = config.lr_decay_iters or config.max_iters
    check_config(config)
    if not saved and not config.init_from:
        model_config(config, 1)  # an unknown preset, n_embd % n_head: fail now, not after the data
    return config


def check_settings(config, rules):
    """rules: (setting, whether its value is fine, what it must be); the first wrong one fails."""
    for name, ok, must in rules:
        if not ok:
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option} {getattr(config, name)!r}: must be {must}")


def check_config(c: TrainConfig):
    """The resolved settings in their ranges: a wrong one fails here, in one line, before the
    data is prepared; not later with a traceback or, worse, silently (--dtype int8 ran float32)."""
    positive = ("block_size", "batch_size", "max_iters", "learning_rate", "lr_decay_iters",
                "eval_interval", "eval_iters", "log_interval")
    at_least_0 = ("n_layer", "n_head", "n_embd", "batch_tokens", "warmup_iters", "weight_decay",
                  "grad_clip", "sample_tokens")
    dtypes, attentions = ("", "float32", "bfloat16", "float16"), ("auto", "math", "sdpa", "triton")
    check_settings(c, [(k, getattr(c, k) > 0, "> 0") for k in positive]
                   + [(k, getattr(c, k) >= 0, ">= 0") for k in at_least_0]
                   + [(k, 0 <= getattr(c, k) < 1, "in [0, 1)") for k in ("beta1", "beta2")]
                   + [("min_lr_ratio", 0 <= c.min_lr_ratio <= 1, "in [0, 1]"),
                      ("dropout", c.dropout == -1 or 0 <= c.dropout < 1, "in [0, 1), or -1"),
                      ("dtype", c.dtype in dtypes, "float32, bfloat16 or float16"),
                      ("attention", c.attention in attentions, "auto, math, sdpa or triton"),
                      ("activation", c.activation in ("", *ACTIVATIONS), ", ".join(ACTIVATIONS))]
                   + [(k, not c.init_from or getattr(c, k) == getattr(TrainConfig(), k),
                       "left out with --init-from, whose model has its shape")
                      for k in SHAPE if k != "dropout"])


# -----------------------------------------------------------------------------
# Data: prepared once (tokenizer, train.bin, val.bin, meta.json), then read in random windows

def builtin_corpus() -> list[Path]:
    """The running interpreter's standard library source, tests and installed packages left out:
    about 12 MB of real text on every machine, no download."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    return [f for f in sorted(stdlib.rglob("*.py")) if not skip & set(f.relative_to(stdlib).parts)]


def split_documents(documents: list) -> tuple[list, list]:
    """The fixed held-out split of a corpus of 20 documents or more: every 20th, from the 11th."""
    return [d for i, d in enumerate(documents) if i % 20 != 10], documents[10::20]


def prepare_data(config: TrainConfig, log=print, expect: str | None = None, tokenizer=None) -> Path:
    """Tokenize the corpus into uint16 (or uint32) token files, or reuse the cache when neither the
    corpus nor the tokenizer changed. Returns the folder with train.bin, val.bin, meta.json.

    The folder's name ends with a fingerprint of the corpus and the tokenizer, so two corpora never
    share one, and it is built under a temporary name, then renamed: a folder found under its own
    name is complete. `expect`: a resumed run's fingerprint, which the corpus must still have.
    `tokenizer`: the one to use (--init-from's); None: --tokenizer's, or a BPE trained here."""
    source = Path(config.data) if config.data else None
    if source and (source / "train.bin").is_file() and (source / "val.bin").is_file():
        return source  # already prepared
    if source and source.exists() and not (source.is_file() or source.is_dir()):
        raise ValueError(f"--data {source} is not a regular file or folder (a FIFO or a device?); "
                         "give text files")
    files = text_files([source]) if source else builtin_corpus()
    if not files:
        raise ValueError(f"no text files (.txt .md .rst .py) in {source}")
    char = config.tokenizer == "char"
    if config.tokenizer and not char:
        tokenizer = load_tokenizer(config.tokenizer)
    # the tokenizer, or its recipe: the characters of the corpus, or a BPE of vocab_size tokens
    recipe = tokenizer.dumps() if tokenizer else "char" if char else config.vocab_size
    fingerprint = hashlib.sha256(f"v2 {recipe}".encode())
    texts = []
    for file in files:
        texts.append(read_text(file))
        fingerprint.update(f"\0{file.name}\0{len(texts[-1])}\0".encode() + texts[-1].encode())
    if not any(text.strip() for text in texts):
        raise ValueError(f"the corpus {source} is empty: give a file or folder with text in it")
    fingerprint = fingerprint.hexdigest()
    if expect and fingerprint != expect:  # a new BPE would give the checkpoint's ids other meanings
        raise ValueError(f"--resume: the corpus {source or ''} or its tokenizer changed since the "
                         "checkpoint was written; restore them, or start anew in another --out-dir")
    spec = config.tokenizer or config.init_from
    tokenizer_name = "gpt2" if spec.startswith("gpt2:") else Path(spec).stem or "bpe"
    name = f"{source.stem if source else 'stdlib'}-{tokenizer_name}-{fingerprint[:12]}"
    folder = Path(config.cache_dir) / name
    if (folder / "meta.json").is_file():
        log(f"data: reusing {folder}")
        return folder
    log(f"data: preparing {folder} from {len(files)} files "
        f"({sum(map(len, texts)) / 1e6:.1f}M characters)")

    # A fixed held-out split: every 20th document, or the last 10% of the text when there are few.
    if len(texts) >= 20:
        train_texts, val_texts = split_documents(texts)
    else:
        text = "\n".join(texts)
        cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1 or int(len(text) * 0.9)
        train_texts, val_texts = [text[:cut]], [text[cut:]]
    if tokenizer is None and char:  # as nanoGPT's shakespeare_char: every character of the corpus
        tokenizer = CharTokenizer.train(texts, special_tokens=[ENDOFTEXT])
        log(f"data: {tokenizer.vocab_size - 1} characters and {ENDOFTEXT} as tokens")
    if tokenizer is None:
        log(f"data: training a {config.vocab_size}-token BPE on the training split")
        tokenizer = Tokenizer.train(train_texts, config.vocab_size, special_tokens=[ENDOFTEXT],
                                    verbose=True)
    if tokenizer.eot_id is None:
        raise ValueError(f"tokenizer {spec} has no {ENDOFTEXT} token to separate documents")
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    building = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    building.mkdir(parents=True, exist_ok=True)
    try:
        sizes = {}
        for split, split_texts in (("train", train_texts), ("val", val_texts)):
            encoded = tokenizer.encode_batch(split_texts, ordinary=True)  # the corpus is plain text
            tokens = np.fromiter((i for ids in encoded for i in (*ids, tokenizer.eot_id)), dtype)
            tokens.tofile(building / f"{split}.bin")
            sizes[split] = len(tokens)
        tokenizer.save(building / "tokenizer.bpe")
        val_text = "".join(val_texts).encode()
        meta = dict(fingerprint=fingerprint, dtype=np.dtype(dtype).name,
                    vocab_size=tokenizer.vocab_size, train_tokens=sizes["train"],
                    val_tokens=sizes["val"], val_bytes=len(val_text),
                    val_xz_bits_per_byte=xz_bits_per_byte(val_text))
        (building / "meta.json").write_text(json.dumps(meta, indent=1))
        os.rename(building, folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        # else another process built the same folder first: it is the same data
    finally:
        shutil.rmtree(building, ignore_errors=True)  # nothing half-built stays
    log(f"data: {sizes['train']:,} train and {sizes['val']:,} val tokens")
    return folder


def xz_bits_per_byte(data: bytes, limit=16_000_000):
    """What a general-purpose compressor achieves on the held-out text (xz -9: LZMA2, preset 9),
    printed beside the model's bits per byte: a language model that does not beat it has not learned
    much beyond repeated strings. None above `limit` bytes (xz -9 takes about a second a
    megabyte). A cache prepared before this was added has none: the line is left out then."""
    if len(data) > limit:
        return None
    return round(8 * len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9)) / len(data), 4)


class Batches:
    """Random windows of block_size + 1 tokens. The token files are opened anew for every batch:
    a memmap held open for a whole run keeps its pages counted in the process's memory."""

    def __init__(self, folder: Path, dtype, block_size: int, seed: int):
        self.folder, self.dtype, self.block_size = folder, dtype, block_size
        self.generator = torch.Generator().manual_seed(seed)  # its state: where the data is read

    def tokens(self, split):
        return np.memmap(self.folder / f"{split}.bin", dtype=self.dtype, mode="r")

    def offsets(self, split, count, generator=None, evenly=False):
        """Where count windows start: at random, or (evenly=True) spread evenly over the split."""
        high = len(self.tokens(split)) - self.block_size - 1
        if high <= 0:
            raise ValueError(f"{self.folder / split}.bin has fewer tokens than block_size + 1; "
                             "use a smaller --block-size")
        if evenly:
            return torch.arange(count) * (high - 1) // max(count - 1, 1)
        return torch.randint(high, (count,), generator=generator or self.generator)

    def get(self, split, offsets, device):
        return read_windows(self.tokens(split), offsets, self.block_size, device)


def read_windows(data, offsets, block_size: int, device):
    """Inputs x and targets y (x shifted by one) of the windows of data starting at offsets."""
    window = torch.from_numpy(np.stack([data[o:o + block_size + 1].astype(np.int64)
                                        for o in offsets.tolist()]))
    if device.type == "cuda":  # copied while the GPU works on the previous batch
        window = window.pin_memory().to(device, non_blocking=True)
    return window[:, :-1].to(device), window[:, 1:].to(device)


def load_data(config: TrainConfig, tokenizer, checkpoint, rank: int, log):
    """The run's batches, the prepared data's meta.json and its tokenizer. Rank 0 prepares the data;
    under torchrun the others wait, then find it ready. tokenizer: --init-from's or a resumed run's
    (None: --tokenizer's, or a BPE trained on the corpus)."""
    given = tokenizer if config.init_from and not config.tokenizer else None
    expect = checkpoint.get("data_fingerprint") if checkpoint else None
    if rank == 0:
        folder = prepare_data(config, log, expect, given)
    if dist.is_initialized():
        dist.barrier()  # the other processes wait for rank 0, then find the data prepared
        if rank != 0:
            folder = prepare_data(config, lambda *args: None, expect, given)
    meta_file, tokenizer = folder / "meta.json", given
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if (folder / "tokenizer.bpe").is_file():
        tokenizer = load_tokenizer(str(folder / "tokenizer.bpe"))
    elif config.tokenizer:
        tokenizer = load_tokenizer(config.tokenizer)
    elif tokenizer is None:
        raise ValueError(f"{folder} has no tokenizer.bpe: name the tokenizer of its .bin files "
                         "with --tokenizer FILE or DIR")
    if checkpoint and tokenizer.dumps() != checkpoint["tokenizer"]:
        raise ValueError(f"{folder} was not made with the tokenizer of {config.out_dir}/ckpt.pt; "
                         "resume on the run's own data, or start a new run in another --out-dir")
    batches = Batches(folder, np.dtype(meta.get("dtype", "uint16")), config.block_size, config.seed)
    for split in ("train", "val") if folder == Path(config.data) else ():  # made elsewhere: check
        if (largest := int(batches.tokens(split).max(initial=0))) >= tokenizer.vocab_size:
            raise ValueError(f"{folder / split}.bin holds token id {largest}, the tokenizer has "
                             f"{tokenizer.vocab_size}: name the one it was made with (--tokenizer)")
    return batches, meta, tokenizer


# -----------------------------------------------------------------------------
# Learning rate: linear warmup, then cosine decay to a floor (GPT-1 section 4.1; GPT-2 kept it)

def lr_schedule(step: int, config: TrainConfig) -> float:
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / config.warmup_iters
    decay_steps = max(1, config.lr_decay_iters - config.warmup_iters)
    progress = min(1.0, (step - config.warmup_iters) / decay_steps)
    floor = config.learning_rate * config.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.learning_rate - floor)


# -----------------------------------------------------------------------------
# The out dir: one run at a time, a run's results never replaced by accident, and checkpoints
# written atomically (read by gpt.load_model, without running code)

RUN_FILES = ("ckpt.pt", "best.pt", "log.jsonl", "loss.png")


@contextmanager
def locked(out_dir: Path):
    """Hold an exclusive lock on out_dir while a run writes there: a second run into the same folder
    stops at once instead of mixing its log and checkpoints with ours. The operating system drops
    the lock when the process ends, however it ends."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        if fcntl:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"another run is writing to {out_dir}: wait for it to end, "
                                 "or use another --out-dir") from None
        yield


def previous_run(out_dir: Path, names) -> list[str]:
    """The files of a run already in out_dir. A folder where a file goes fails now, not at the
    first save, after the expensive work."""
    found = [name for name in names if (out_dir / name).exists()]
    for name in found:
        if (out_dir / name).is_dir():
            raise ValueError(f"{out_dir / name} is a folder, and the run writes a file there; "
                             "move it away or use another --out-dir")
    return found


def open_out_dir(config: TrainConfig, rank: int):
    """A new run is refused where a run is (Hugging Face Trainer's rule too) unless --overwrite;
    --resume reads the run's ckpt.pt: its model, tokenizer and the rest (step, optimizer...)."""
    out_dir = Path(config.out_dir)
    found = previous_run(out_dir, RUN_FILES) if rank == 0 else []
    if found and not config.resume and not config.overwrite:
        raise ValueError(f"{out_dir} holds a run ({', '.join(found)}): continue it with --resume, "
                         "replace it with --overwrite, or use another --out-dir")
    if not config.resume:
        return None, None, None
    path = out_dir / "ckpt.pt"
    if not path.is_file():
        raise ValueError(f"--resume: no checkpoint at {path}; start a run without --resume")
    model, tokenizer, checkpoint = load_model(path, "move it away and start again without --resume")
    if missing := {"train_config", "optimizer", "step", "rng"} - set(checkpoint):
        raise ValueError(f"{path} is not a train.py checkpoint (no {', '.join(sorted(missing))})")
    return model, tokenizer, checkpoint


def start_log(out_dir: Path, resume: bool, step: int):
    """A new run deletes what an old one left (--overwrite); a resumed run continues its log from
    the checkpoint's step: what came after it is done again."""
    if not resume:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    log_file = out_dir / "log.jsonl"
    lines = log_file.read_text().splitlines() if resume and log_file.is_file() else []
    log_file.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))


def record(out_dir: Path, entry: dict):
    with open(out_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def save_checkpoint(path: Path, state: dict):
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # this process's own name
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)  # a crash mid-save leaves the previous checkpoint whole
    finally:
        temporary.unlink(missing_ok=True)  # a failed save (disk full, Ctrl-C) leaves no half file


# -----------------------------------------------------------------------------
# Building a run: the device and the processes, the optimizer, the precision

def pick_device(name: str = "") -> torch.device:
    """The device named, or the best this machine has (cuda, then mps, then cpu), for every script.
    A missing GPU fails now, not after the data is ready."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    device = torch.device(name or next((kind for kind in available if available[kind]), "cpu"))
    if not available.get(device.type, True):
        raise ValueError(f"--device {name}: this machine (or this PyTorch) has no {device.type} "
                         "device; use --device cpu, or leave --device out")
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs that have them
    return device


def default_dtype(device: torch.device) -> str:
    """bfloat16 on CUDA (float16 on GPUs without it) and on CPUs that multiply bfloat16 in hardware
    (AVX512-BF16; with AMX, 1.3x the tokens/s of a 2 x 128 model, with the same loss, in
    bench/RESULTS.md; unmeasured without AMX), float32 elsewhere (emulated bfloat16 is slower)."""
    if device.type == "cpu":
        bf16_in_hardware = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return "bfloat16" if bf16_in_hardware else "float32"
    if device.type != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def keep_freed_memory():
    """On Linux, keep the memory of freed tensors in the process for the next step's tensors. glibc
    hands large blocks back to the OS when they are freed (and a heap's free top once it passes a
    threshold), and the next step's tensors of the same sizes fault their pages in again, 4 KB at
    a time: about 20,000 page faults a step of the default CPU run, 15% of its time
    (bench/RESULTS.md). PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for this; two
    mallopt settings do it without a new library: blocks up to 1 GB come from the heap (older
    glibc refuses more than 32 MB: then up to that), and the heap keeps up to 1 GB free. The cost:
    the process may hold up to 1 GB it no longer uses."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform == "linux" else None
    if not mallopt:  # glibc's; musl (Alpine) has none
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    if not mallopt(M_MMAP_THRESHOLD, 1 << 30):  # 0: refused
        mallopt(M_MMAP_THRESHOLD, 32 << 20)  # older glibc's largest


def join_processes(device: torch.device) -> torch.device:
    """Under torchrun: join the process group (NCCL between GPUs, gloo between CPU processes) and
    take the GPU numbered LOCAL_RANK on this machine."""
    # Imported now, before the group exists: imported later (DDP does), its functions' default
    # group= arguments would hold the group, and destroy_process_group could not end it.
    import torch.distributed.nn  # noqa: F401
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
        torch.cuda.set_device(device)
    return device


def make_optimizer(model, learning_rate, weight_decay, betas, device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and LayerNorm gains are not pulled to zero
    (GPT-1 section 4.1: "L2 regularization ... on all non bias or gain weights"). parameters()
    lists the tied embedding / output matrix once."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused: one kernel for all parameters (on a CPU too, since PyTorch 2.4)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas,
                             fused=device.type in ("cuda", "cpu"))


@dataclass
class Run:
    """What the steps of a run work with, made once before the loop by build_run."""
    config: TrainConfig
    model: GPT  # evaluated, saved and sampled
    step_model: torch.nn.Module  # what the optimization step calls: the model compiled, or in DDP
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    autocast: object  # the context that computes in the run's dtype (none in float32)
    batches: Batches
    tokenizer: object
    meta: dict  # of the prepared data
    device: torch.device
    rank: int  # this process, of world_size (torchrun)
    world_size: int
    accumulation: int  # micro-batches per optimizer step, over all processes
    # On a CPU the loss is computed in chunks, without the logits: 1.4x the tokens/s of a 2 x 128
    # model (gpt.LinearCrossEntropy); a GPU keeps the plain loss, which torch.compile fuses.
    chunked_loss: bool


def build_run(config, model, tokenizer, batches, meta, device, rank, world_size) -> Run:
    dtype = config.dtype
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay,
                               (config.beta1, config.beta2), device)
    autocast = (nullcontext() if dtype == "float32" else
                torch.autocast(device_type=device.type, dtype=getattr(torch, dtype)))
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")
    step_model = torch.compile(model) if config.compile else model
    if dist.is_initialized():
        step_model = DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
    # The global batch, batch_tokens: micro-batches of batch_size sequences, some on each process.
    micro_tokens = config.batch_size * config.block_size
    accumulation = (config.batch_tokens or micro_tokens) // micro_tokens // world_size * world_size
    return Run(config, model, step_model, optimizer, scaler, autocast, batches, tokenizer, meta,
               device, rank, world_size, max(world_size, accumulation),
               chunked_loss=device.type == "cpu")


def restore(run: Run, checkpoint: dict) -> tuple[int, float]:
    """A resumed run's optimizer, loss scale and random generators as they were at its step, so
    that resuming gives the weights of a run never stopped, bit for bit. Returns the step and the
    best validation loss so far."""
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler"):
        run.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    run.batches.generator.set_state(checkpoint["rng"]["data"])
    if run.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], run.device)
    return checkpoint["step"], checkpoint.get("best_val_loss", float("inf"))


def checkpoint_state(run: Run, step: int, best_val_loss: float) -> dict:
    """All that resuming needs, as tensors, numbers and strings (what weights_only=True reads)."""
    cuda_rng = torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None
    return {"model": run.model.state_dict(), "config": dataclasses.asdict(run.model.config),
            "train_config": dataclasses.asdict(run.config), "tokenizer": run.tokenizer.dumps(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            "step": step, "best_val_loss": best_val_loss,
            "data_fingerprint": run.meta.get("fingerprint"),
            "rng": {"torch": torch.get_rng_state(), "data": run.batches.generator.get_state(),
                    "cuda": cuda_rng}}


# -----------------------------------------------------------------------------
# The steps of the loop: optimize, report, evaluate; and stopping between two steps

def optimization_step(run: Run, lr: float) -> torch.Tensor:
    """One AdamW step on the global batch, its gradient summed over run.accumulation micro-batches.
    Every process draws the same offsets and takes its own share, so W processes see exactly the
    batch of one. Returns the batch's mean loss (this process's part of it)."""
    config, world_size = run.config, run.world_size
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    offsets = run.batches.offsets("train", run.accumulation * config.batch_size)
    offsets = offsets.view(run.accumulation, config.batch_size)
    step_loss = torch.zeros((), device=run.device)
    for micro in range(run.rank, run.accumulation, world_size):
        x, y = run.batches.get("train", offsets[micro], run.device)
        last = micro + world_size >= run.accumulation  # DDP averages gradients after the last only
        sync = nullcontext() if last or not dist.is_initialized() else run.step_model.no_sync()
        with sync, run.autocast:
            _, loss = run.step_model(x, y, return_logits=not run.chunked_loss)
            loss = loss / run.accumulation * world_size  # DDP averages over the processes too
        run.scaler.scale(loss).backward()
        step_loss += loss.detach() / world_size
    if config.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.step_model.parameters(), config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss


def report_progress(run: Run, step: int, step_loss, lr: float, start: tuple, last: tuple):
    """Print and log the step's loss, the speed since the last report (tokens/s, and MFU on a known
    GPU) and the time left. start, last: (time, step) of the loop's start and of the last report;
    returns this report's."""
    if dist.is_initialized():
        dist.all_reduce(step_loss)  # each process holds its share of the mean
    now, config = time.time(), run.config
    tokens_per_second = ((step - last[1]) * run.accumulation * config.batch_size
                         * config.block_size / (now - last[0]))
    peak = peak_bf16_flops(run.device)
    mfu = flops_per_token(run.model) * tokens_per_second / peak if peak else None
    eta = (now - start[0]) / (step - start[1]) * (config.max_iters - step)
    if run.rank == 0:
        print(f"step {step}/{config.max_iters} | loss {step_loss.item():.4f} | lr {lr:.2e} | "
              f"{tokens_per_second:,.0f} tok/s" + (f" | MFU {mfu:.1%}" if mfu else "") +
              f" | {(now - start[0]) / 60:.1f} min, ETA {eta / 60:.1f} min")
        record(Path(config.out_dir), {"step": step, "loss": round(step_loss.item(), 6), "lr": lr,
                                      "tokens_per_second": round(tokens_per_second),
                                      "mfu": mfu and round(mfu, 4)})
    return now, step


def flops_per_token(model: GPT) -> int:
    """A training step's FLOPs per token: 6 per weight (forward 2, backward 4) plus the attention
    scores (PaLM, appendix B): 6N + 12 * n_layer * n_embd * block_size."""
    c = model.config
    return 6 * model.num_params() + 12 * c.n_layer * c.n_embd * c.block_size


def peak_bf16_flops(device):
    """Dense bf16 peak of the GPU, for MFU (model FLOPs utilization); None when unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in (("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("A100", 312e12),
                       ("L4", 121e12)):
        if key in name:
            return flops
    return None


@torch.no_grad()
def evaluate(run: Run, offsets) -> float:
    """The mean validation loss (nats per token), on the same batches every time."""
    run.model.eval()
    losses = []
    for chunk in offsets.split(run.config.batch_size):
        x, y = run.batches.get("val", chunk, run.device)
        with run.autocast:
            losses.append(run.model(x, y, return_logits=not run.chunked_loss)[1].item())
    run.model.train()
    return sum(losses) / len(losses)


def evaluate_whole(run: Run) -> float:
    """The mean loss over every token of the held-out split, the figure to put next to a compressor,
    which sees all the text before each byte."""
    config = run.config
    return whole_text_loss(run.model, run.batches.tokens("val"), config.block_size,
                           config.batch_size, run.device, run.autocast, run.chunked_loss)


@torch.no_grad()
def whole_text_loss(model, data, block_size, batch_size, device, autocast, chunked_loss) -> float:
    """The mean loss over every token of data after the first. Windows of block_size tokens slide
    on by half a block and score only the tokens the window before did not, so every token after
    the first half block is predicted from at least half a block of context (as in Hugging Face's
    "Perplexity of fixed-length models"). bench/heldout_files.py scores each file so."""
    block = min(block_size, len(data) - 1)
    last_start, stride = len(data) - block - 1, max(1, block // 2)
    starts = [min(start, last_start) for start in range(0, last_start + stride, stride)]
    model.eval()
    total, count, scored_until = 0.0, 0, 0  # targets up to data[scored_until] are scored
    for batch in torch.tensor(starts).split(batch_size):
        x, y = read_windows(data, batch, block, device)
        positions = batch[:, None] + torch.arange(1, block + 1)  # of the targets y, in the data
        seen = torch.cat([torch.tensor([scored_until]), batch[:-1] + block])[:, None]
        y = y.masked_fill((positions <= seen).to(y.device), -1)  # scored by a window before
        scored_until = batch[-1].item() + block
        with autocast:
            loss = model(x, y, return_logits=not chunked_loss)[1]
        kept = (y != -1).sum().item()
        total, count = total + loss.item() * kept, count + kept
    model.train()
    return total / count


def bits_per_byte(nats_per_token: float, meta: dict):
    """A loss in bits per byte of text, which compares across tokenizers; None when the data does
    not say how many bytes it holds (a folder prepared elsewhere)."""
    if not meta.get("val_bytes"):
        return None
    return nats_per_token * meta["val_tokens"] / meta["val_bytes"] / math.log(2)


@contextmanager
def stop_signals():
    """Ctrl-C (SIGINT) and SIGTERM (sent by cluster schedulers before they kill a job) stop the run
    between two steps, so that the checkpoint holds whole steps and resuming is exact. Yields the
    signals received; a second one stops at once, and the last checkpoint stays."""
    received = []

    def request_stop(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
    handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def stop_requested(received: list, device) -> bool:
    """Whether any process received a signal: all of them stop at the same step."""
    if not dist.is_initialized():
        return bool(received)
    flag = torch.tensor(len(received), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() > 0


# -----------------------------------------------------------------------------
# A run, top to bottom

def pretrain(config: TrainConfig, asked: set):
    """Settings, model and data, then the loop: an optimization step, a progress line every
    log_interval steps, an evaluation and a checkpoint every eval_interval steps. Under torchrun
    every process runs this; rank 0 prepares the data, logs and saves."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    log = print if rank == 0 else (lambda *args, **kwargs: None)
    device = pick_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()
    if "RANK" in os.environ:  # started by torchrun
        device = join_processes(device)
    model, tokenizer, checkpoint = open_out_dir(config, rank)
    # The dtype is chosen once and saved, so that a resumed run computes as it began (a
    # checkpoint saved before CPUs trained in bfloat16 says "", and trained in float32); it picks
    # the CPU recipe.
    resumed_on_cpu = checkpoint and device.type == "cpu"
    dtype = config.dtype or ("float32" if resumed_on_cpu else default_dtype(device))
    recipe = "cpu-float32" if device.type == "cpu" and dtype == "float32" else device.type
    config = resolve_settings(config, asked, recipe, checkpoint and checkpoint["train_config"])
    config.dtype = config.dtype or dtype  # a resumed run's saved dtype wins
    log(textwrap.fill(f"settings: {dataclasses.asdict(config)}", 100, break_long_words=False,
                      break_on_hyphens=False))
    torch.manual_seed(config.seed + rank)
    dropout = {"dropout": config.dropout} if config.dropout >= 0 else {}  # -1: the model's own
    if config.init_from and not checkpoint:  # continued pretraining, in the model's vocabulary
        model, tokenizer, _ = load_model(config.init_from, **dropout)
        # GPT-1 has no token that separates documents: it gets one, and a new embedding row
        model, tokenizer = add_tokens(model, tokenizer, [ENDOFTEXT])
    batches, meta, tokenizer = load_data(config, tokenizer, checkpoint, rank, log)
    if model is None:
        model = GPT(model_config(config, tokenizer.vocab_size))
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the model has {model.config.vocab_size} token embeddings, the "
                         f"tokenizer {tokenizer.vocab_size}")
    model.attention, model.kernels = config.attention, config.kernels
    log(f"model: {config.init_from or config.model}, {model.num_params() / 1e6:.2f}M parameters, "
        f"{model.config}")
    run = build_run(config, model.to(device), tokenizer, batches, meta, device, rank, world_size)
    step, best_val_loss = restore(run, checkpoint) if checkpoint else (0, float("inf"))
    if checkpoint:
        log(f"resuming {config.out_dir}/ckpt.pt at step {step}")
    del checkpoint  # its tensors are in the model and the optimizer now
    log(f"batch: {run.accumulation * config.batch_size * config.block_size:,} tokens per step = "
        f"{run.accumulation} micro-batches of {config.batch_size} x {config.block_size} over "
        f"{world_size} process(es); {config.max_iters} steps on {device} in {config.dtype}")
    # The same windows every time, spread over the split: random ones can all miss its harder files
    # (with one seed, the default run's figure was 0.03 bits per byte below the whole split's).
    eval_offsets = batches.offsets("val", config.eval_iters * config.batch_size, evenly=True)
    out_dir = Path(config.out_dir)
    if rank == 0:
        start_log(out_dir, config.resume, step)

    start = last = (time.time(), step)  # (time, step) of the loop's start, of the last report
    with stop_signals() as received:
        try:
            while step < config.max_iters and not stop_requested(received, device):
                lr = lr_schedule(step, config)
                step_loss = optimization_step(run, lr)
                step += 1
                if step % config.log_interval == 0 or step == config.max_iters:
                    last = report_progress(run, step, step_loss, lr, start, last)
                if rank == 0 and (step % config.eval_interval == 0 or step == config.max_iters):
                    val_loss = evaluate(run, eval_offsets)
                    bpb = bits_per_byte(val_loss, meta)
                    log(f"eval step {step}: val loss {val_loss:.4f}"
                        + (f", {bpb:.3f} bits per byte" if bpb else ""))
                    record(out_dir, {"step": step, "val_loss": round(val_loss, 6),
                                     "val_bpb": bpb and round(bpb, 4)})
                    if val_loss < best_val_loss:
                        best_val_loss = val_loss
                        save_checkpoint(out_dir / "best.pt", checkpoint_state(run, step, val_loss))
                    save_checkpoint(out_dir / "ckpt.pt", checkpoint_state(run, step, best_val_loss))
        finally:
            if dist.is_initialized():
                # Gloo's threads must end here, not at the interpreter's exit, where one still
                # freeing a collective's tensors is killed as it takes the GIL: SIGABRT. DDP holds
                # the group, so it goes first; destroying the group then joins the threads.
                run.step_model = run.model
                dist.destroy_process_group()
    if step < config.max_iters:  # stopped by a signal
        if rank == 0:
            save_checkpoint(out_dir / "ckpt.pt", checkpoint_state(run, step, best_val_loss))
            log(f"\ninterrupted: saved {out_dir / 'ckpt.pt'} at step {step}; continue with "
                "--resume")
        sys.exit(128 + (received[0] if received else signal.SIGINT))
    if rank == 0:
        finish(run)


def finish(run: Run):
    """The loss on the whole held-out split (next to xz's), the loss curve (--plot) and a sample of
    what the model learned (--sample-tokens)."""
    out_dir, tokenizer = Path(run.config.out_dir), run.tokenizer
    loss = evaluate_whole(run)
    bpb, xz = bits_per_byte(loss, run.meta), run.meta.get("val_xz_bits_per_byte")
    print(f"held-out split ({len(run.batches.tokens('val')):,} tokens): val loss {loss:.4f}"
          + (f", {bpb:.3f} bits per byte" if bpb else "")
          + (f" (xz -9 compresses the same text to {xz:.3f})" if xz else ""))
    record(out_dir, {"step": run.config.max_iters, "heldout_loss": round(loss, 6),
                     "heldout_bpb": bpb and round(bpb, 4)})
    if run.config.plot:
        plot_losses(out_dir / "log.jsonl", out_dir / "loss.png")
        print(f"wrote {out_dir / 'loss.png'}")
    if run.config.sample_tokens:
        from sample import generate
        run.model.eval()
        start = torch.tensor([[tokenizer.eot_id]], device=run.device)
        with torch.no_grad(), run.autocast:
            ids = generate(run.model, start, run.config.sample_tokens, temperature=0.8, top_k=50,
                           stop_ids=[tokenizer.eot_id])
        text = tokenizer.decode(ids[0, 1:].tolist()).replace(ENDOFTEXT, "")
        print("-" * 40 + "\n" + text + "\n" + "-" * 40)


def plot_losses(log_file: Path, png: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    train = [(e["step"], e["loss"]) for e in entries if "loss" in e]
    val = [(e["step"], e["val_loss"]) for e in entries if "val_loss" in e]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(*zip(*train), label="train loss")
    if val:
        axes.plot(*zip(*val), "o-", label="validation loss")
    axes.set(xlabel="step", ylabel="cross-entropy (nats per token)", title="training")
    axes.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=100)


# -----------------------------------------------------------------------------
# Command line: one flag per TrainConfig field; --config FILE.json sets defaults for a recipe

def add_flags(parser, settings_class, defaults=None):
    """One --flag per field of a settings dataclass, its help showing the default. A flag left out
    stays out of the parsed namespace (argparse.SUPPRESS): the caller sees what was asked for."""
    for f in dataclasses.fields(settings_class):
        default = (defaults or {}).get(f.name, f.default)
        name, help = f"--{f.name.replace('_', '-')}", f"{f.metadata['help']} (default: {default!r})"
        if f.type is bool or f.type == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help)
        else:
            parser.add_argument(name, type=type(f.default), default=argparse.SUPPRESS, help=help)
    return parser


def parse_args(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, help="a JSON file of settings (a recipe); flags given "
                                                 "on the command line win")
    known, _ = pre.parse_known_args(argv)
    recipe = {}
    if known.config:
        try:
            recipe = json.loads(known.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--config {known.config}: {error}") from None
        if unknown := set(recipe) - {f.name for f in dataclasses.fields(TrainConfig)}:
            raise ValueError(f"--config {known.config}: unknown settings {sorted(unknown)}")
        wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
        for f in dataclasses.fields(TrainConfig):  # JSON has no schema: {"resume": "no"} is true
            kind, value = f.type, recipe.get(f.name)
            if f.name in recipe and type(value) not in ({kind, int} if kind is float else {kind}):
                raise ValueError(f"--config {known.config}: {f.name} must be {wanted[kind]}, "
                                 f"not {value!r}")
    parser = argparse.ArgumentParser(description=__doc__, parents=[pre],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    given = vars(add_flags(parser, TrainConfig, recipe).parse_args(argv))
    given.pop("config", None)
    values = {**recipe, **given}
    asked = {k for k in values if k not in AUTOMATIC or values[k]}
    return TrainConfig(**values), asked  # the settings, and which ones were asked for


def main(argv=None):
    try:
        with one_line_errors():
            config, asked = parse_args(argv)
            rank = int(os.environ.get("RANK", 0))
            with locked(Path(config.out_dir)) if rank == 0 else nullcontext():
                pretrain(config, asked)
    except KeyboardInterrupt:  # before the training loop (preparing the data), or a second Ctrl-C
        print("interrupted: the data cache and the last checkpoint, if any, are whole",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
