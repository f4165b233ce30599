"""Tests for train.py on tiny settings: data preparation, the schedule, learning, exact resume,
DistributedDataParallel equivalence, and the one-line errors users get for bad input."""

import json
import lzma
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from bpe import Tokenizer
from gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "gpt-nano", "--block-size", "32", "--batch-size", "4", "--vocab-size", "300",
        "--eval-iters", "2", "--log-interval", "1", "--sample-tokens", "0", "--device", "cpu",
        "--dtype", "float32"]  # float32: the tests compare with references computed in float32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """25 small documents of real text (this project's own source files, cut into pieces)."""
    folder = tmp_path_factory.mktemp("corpus")
    text = "".join((ROOT / name).read_text(encoding="utf-8") for name in ("bpe.py", "README.md", "gpt.py"))
    for i in range(25):
        (folder / f"doc{i:02d}.txt").write_text(text[i * 3000:(i + 1) * 3000], encoding="utf-8")
    return folder


def run(tmp_path, corpus, *flags):
    """train.py's command line, in this process."""
    train.main(["--data", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path / "out"), *TINY, *flags])
    return [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]


def losses(log):
    return [(entry["step"], entry["loss"]) for entry in log if "loss" in entry]


def record_offsets(monkeypatch):
    """The window offsets train.py draws, as (split, offsets), in the order it draws them."""
    drawn, draw = [], train.Batches.offsets

    def spy(self, split, count, *args, **kwargs):
        offsets = draw(self, split, count, *args, **kwargs)
        drawn.append((split, offsets))
        return offsets

    monkeypatch.setattr(train.Batches, "offsets", spy)
    return drawn


def windows(cache, split, offsets, block_size=32):
    """Reference batches read straight from the token file: the inputs are tokens o .. o+T-1 and the
    targets the tokens one further, o+1 .. o+T (each position predicts the next token)."""
    tokens = np.fromfile(next(cache.glob(f"*/{split}.bin")), dtype=np.uint16)
    tokens = torch.from_numpy(tokens.astype(np.int64))
    x = torch.stack([tokens[o:o + block_size] for o in offsets.tolist()])
    y = torch.stack([tokens[o + 1:o + block_size + 1] for o in offsets.tolist()])
    return x, y


def next_token_loss(model, x, y):
    """GPT-1 section 3.1, L1 = -mean log P(u_i | u_<i), written out with log_softmax."""
    log_probs = F.log_softmax(model(x)[0].double(), dim=-1)
    return -log_probs.gather(-1, y[..., None]).mean()


class GradientRecorder(torch.optim.SGD):
    """Stands in for AdamW: keeps a copy of each step's gradient and leaves the weights alone."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.gradients = []

    def step(self, closure=None):
        parameters = (p for group in self.param_groups for p in group["params"])
        self.gradients.append({id(p): p.grad.clone() for p in parameters})


# ---------------------------------------------------------------- data

def test_prepare_data_split_dtype_and_cache(tmp_path, corpus, capsys):
    config = train.TrainConfig(data=str(corpus), cache_dir=str(tmp_path), vocab_size=300)
    folder = train.prepare_data(config)
    meta = json.loads((folder / "meta.json").read_text())
    tokenizer = Tokenizer.load(folder / "tokenizer.bpe")
    val = np.fromfile(folder / "val.bin", dtype=np.uint16)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 300 and len(val) == meta["val_tokens"]
    # documents 10 and 30, 50, ... are held out; each ends with <|endoftext|>
    assert val.tolist() == tokenizer.encode_ordinary((corpus / "doc10.txt").read_text()) + [tokenizer.eot_id]
    held_out = (corpus / "doc10.txt").read_bytes()
    assert meta["val_bytes"] == len(held_out)
    # the compressor to beat, printed at the end of training: xz -9 on the same held-out bytes
    xz = 8 * len(lzma.compress(held_out, format=lzma.FORMAT_XZ, preset=9)) / len(held_out)
    assert meta["val_xz_bits_per_byte"] == pytest.approx(xz, abs=1e-4)

    train.prepare_data(config)
    assert "reusing" in capsys.readouterr().out
    original = (corpus / "doc03.txt").read_bytes()
    (corpus / "doc03.txt").write_text("changed", encoding="utf-8")
    try:
        train.prepare_data(config)
        assert "preparing" in capsys.readouterr().out  # the corpus changed: the cache is rebuilt
    finally:
        (corpus / "doc03.txt").write_bytes(original)


def test_large_vocabularies_are_stored_as_uint32(tmp_path):
    # every pair of bytes is a merge: 256 + 65536 tokens, more than 16 bits can number
    merges = {(a, b): 256 + 256 * a + b for a in range(256) for b in range(256)}
    Tokenizer(merges, special_tokens={"<|endoftext|>": 256 + len(merges)}).save(tmp_path / "big.bpe")
    (tmp_path / "text.txt").write_text("~~ hello world\n" * 500, encoding="utf-8")
    config = train.TrainConfig(data=str(tmp_path / "text.txt"), cache_dir=str(tmp_path / "cache"), tokenizer=str(tmp_path / "big.bpe"))
    folder = train.prepare_data(config)
    tokens = np.fromfile(folder / "train.bin", dtype=np.uint32)
    assert json.loads((folder / "meta.json").read_text())["dtype"] == "uint32" and tokens.max() > 2**16


def test_builtin_corpus_is_the_standard_library_without_tests():
    files = train.builtin_corpus()
    assert any(f.name == "argparse.py" for f in files)
    assert not any(part in {"test", "tests", "site-packages"} for f in files for part in f.parts[-3:-1])


# ---------------------------------------------------------------- schedule

def test_learning_rate_warmup_then_cosine_to_the_floor():
    config = train.TrainConfig(learning_rate=1e-3, warmup_iters=10, max_iters=100, lr_decay_iters=100, min_lr_ratio=0.1)
    rates = [train.lr_schedule(step, config) for step in range(120)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)  # linear warmup
    assert all(a > b for a, b in zip(rates[10:100], rates[11:100]))  # then strictly down
    assert rates[55] == pytest.approx(1e-4 + 0.5 * 0.9e-3)  # half way: half way between peak and floor
    assert rates[100:] == [pytest.approx(1e-4)] * 20  # and the floor after


def test_warmup_ends_on_the_peak_and_the_cosine_on_min_lr():
    """GPT-1 section 4.1: "increased linearly from zero over the first 2000 updates and annealed
    ... using a cosine schedule"; here to min_lr = learning_rate * min_lr_ratio, as in GPT-3."""
    config = train.TrainConfig(learning_rate=6e-4, warmup_iters=3, max_iters=10, lr_decay_iters=10,
                               min_lr_ratio=0.1)
    rates = [train.lr_schedule(step, config) for step in range(13)]
    warmup = [6e-4 * 1 / 3, 6e-4 * 2 / 3, 6e-4]  # the third step (step 2) already runs at the peak
    cosine = [6e-5 + 0.5 * (1 + math.cos(math.pi * (s - 3) / 7)) * 5.4e-4 for s in range(3, 11)]
    assert rates == pytest.approx(warmup + cosine + [6e-5, 6e-5], rel=1e-12)
    assert rates[2] == pytest.approx(6e-4, rel=1e-12) == rates[3]  # the peak, from warmup's end
    assert max(rates) == pytest.approx(6e-4, rel=1e-12)  # and never passed
    assert rates[9] > rates[10] == pytest.approx(6e-5, rel=1e-12)  # the floor at lr_decay_iters


# ---------------------------------------------------------------- training

def test_loss_goes_down_and_a_plot_is_written(tmp_path, corpus, monkeypatch, capsys):
    drawn = record_offsets(monkeypatch)
    log = run(tmp_path, corpus, "--max-iters", "40", "--learning-rate", "3e-3", "--plot")
    held_out = [line for line in capsys.readouterr().out.splitlines() if "held-out split" in line]
    assert "bits per byte (xz -9 compresses the same text to " in held_out[0]  # the one to beat
    train_losses = [loss for _, loss in losses(log)]
    assert sum(train_losses[-5:]) / 5 < sum(train_losses[:5]) / 5 - 0.5
    evals = [entry for entry in log if "val_loss" in entry]
    assert evals and all(e["val_bpb"] > 0 for e in evals)
    assert (tmp_path / "out" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 40 and not any(k.startswith("_orig_mod") for k in checkpoint["model"])
    assert (tmp_path / "out" / "best.pt").is_file()
    # What it learned is next-token prediction: the held-out windows, scored by hand, are well below
    # a uniform guess over the 300 tokens, and match the last evaluation logged.
    val_offsets = next(offsets for split, offsets in drawn if split == "val")
    with torch.no_grad():
        model = GPT.from_checkpoint_dict(checkpoint).eval()
        val_loss = next_token_loss(model, *windows(tmp_path / "cache", "val", val_offsets)).item()
    assert val_loss < math.log(300) - 0.5
    assert val_loss == pytest.approx(evals[-1]["val_loss"], abs=2e-6)
    # At the end, every held-out token is scored once, with at least half a block of context:
    # Hugging Face's sliding-window perplexity loop (stride 16), written out here.
    tokens = torch.from_numpy(np.fromfile(next((tmp_path / "cache").glob("*/val.bin")),
                                          dtype=np.uint16).astype(np.int64))
    total, count, scored_until = 0.0, 0, 0
    for begin in range(0, len(tokens) - 1, 16):
        end = min(begin + 32, len(tokens) - 1)  # the window's inputs; its targets are one further
        new = end - scored_until  # the targets no earlier window scored
        with torch.no_grad():
            x, y = tokens[end - 32:end][None], tokens[end - 32 + 1:end + 1][None]
            log_probs = F.log_softmax(model(x)[0].double(), dim=-1)[0, -new:]
        total -= log_probs.gather(-1, y[0, -new:, None]).sum().item()
        count, scored_until = count + new, end
        if end == len(tokens) - 1:
            break
    assert count == len(tokens) - 1  # all but the first, which nothing predicts
    assert log[-1]["heldout_loss"] == pytest.approx(total / count, abs=2e-6)


def test_a_step_of_accumulated_micro_batches_is_a_step_on_the_whole_batch(tmp_path, corpus,
                                                                            monkeypatch):
    """4 micro-batches of 2 windows give the gradient of the mean next-token loss over all 8 windows
    (GPT-1 section 3.1): targets are the inputs shifted by one, each micro-batch reads its own
    windows, and the loss of each is divided by the number of micro-batches."""
    drawn, recorded = record_offsets(monkeypatch), {}

    def make_optimizer(model, *settings):
        recorded["model"] = model  # never stepped: the model the gradient was taken at
        recorded["optimizer"] = GradientRecorder(model.parameters())
        return recorded["optimizer"]

    monkeypatch.setattr(train, "make_optimizer", make_optimizer)
    log = run(tmp_path, corpus, "--max-iters", "1", "--batch-size", "2", "--batch-tokens", "256",
              "--grad-clip", "0", "--dropout", "0")  # 256 tokens = 4 micro-batches of 2 x 32
    train_offsets = [offsets for split, offsets in drawn if split == "train"]
    assert len(train_offsets) == 1 and len(train_offsets[0]) == 8
    model, [gradient] = recorded["model"], recorded["optimizer"].gradients
    loss = next_token_loss(model, *windows(tmp_path / "cache", "train", train_offsets[0]))
    expected = torch.autograd.grad(loss, list(model.parameters()))
    for (name, parameter), reference in zip(model.named_parameters(), expected):
        torch.testing.assert_close(gradient[id(parameter)], reference.float(), rtol=1e-4, atol=1e-7,
                                   msg=name)
    assert losses(log) == [(1, pytest.approx(loss.item(), rel=1e-5))]  # the loss logged, too


def test_validation_loss_is_measured_with_dropout_off(tmp_path, corpus, monkeypatch):
    """Dropout (GPT-1 section 4.1) regularizes training only: evaluation sees the whole network."""
    drawn = record_offsets(monkeypatch)
    log = run(tmp_path, corpus, "--max-iters", "1", "--dropout", "0.5")
    val_offsets = [offsets for split, offsets in drawn if split == "val"]
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)  # what was evaluated
    model = GPT.from_checkpoint_dict(checkpoint).eval()
    with torch.no_grad():
        expected = next_token_loss(model, *windows(tmp_path / "cache", "val", val_offsets[0]))
    assert len(val_offsets) == 1 and len(val_offsets[0]) == 2 * 4  # --eval-iters 2 batches of 4
    # spread evenly over the held-out split, from its start to the last whole window
    last = len(np.fromfile(next((tmp_path / "cache").glob("*/val.bin")), dtype=np.uint16)) - 34
    assert val_offsets[0].tolist() == [i * last // 7 for i in range(8)]
    val_losses = [entry["val_loss"] for entry in log if "val_loss" in entry]
    assert val_losses == [pytest.approx(expected.item(), abs=2e-6)]  # logged with 6 decimals


def test_weight_decay_spares_biases_and_layernorm_gains():
    """GPT-1 section 4.1: "L2 regularization ... with w = 0.01 on all non bias or gain weights"."""
    model = GPT(GPTConfig.preset("gpt-nano", vocab_size=300))
    optimizer = train.make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"))
    decay = [(p, group["weight_decay"]) for group in optimizer.param_groups
             for p in group["params"]]
    assert len(decay) == len(list(model.parameters()))  # each once, the tied embedding too
    decay = {id(p): weight_decay for p, weight_decay in decay}
    for name, parameter in model.named_parameters():
        spared = name.endswith(".bias") or ".ln_" in name
        assert decay[id(parameter)] == (0.0 if spared else 0.1), name


CHURN = """
import resource, sys, torch
sys.path.insert(0, {root!r})
import train
if {keep}:
    train.keep_freed_memory()
def churn():  # a step's pattern: large tensors made, freed, made again
    for _ in range(5):
        tensors = [torch.ones(12 * 2**20) for _ in range(4)]  # 4 x 48 MB
        del tensors
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings; Linux only")
def test_freed_memory_is_kept_for_the_next_step():
    """train.py on a CPU keeps freed tensors' memory in the process (keep_freed_memory): made
    again, tensors of a step's sizes reuse its pages; by default glibc hands them back to the OS
    (always above 32 MB, as here) and faults them in again, 4 KB at a time (20,000 faults a step
    of the default run)."""
    def page_faults(keep):
        run = subprocess.run([sys.executable, "-c", CHURN.format(root=str(ROOT), keep=keep)],
                             capture_output=True, text=True, timeout=120, check=True)
        return int(run.stdout)
    probe = "import ctypes; print(ctypes.CDLL(None).mallopt(-3, 1 << 30))"  # M_MMAP_THRESHOLD
    accepted = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=60)
    if accepted.stdout.strip() != "1":
        pytest.skip("this C library does not keep blocks of 48 MB (older glibc caps them at "
                    "32 MB; musl has no mallopt)")
    default = page_faults(keep=False)
    if default < 10_000:
        pytest.skip(f"this C library keeps freed memory already ({default} page faults)")
    assert page_faults(keep=True) < default / 20


def test_resume_is_exact(tmp_path, corpus):
    """8 steps in one go == 4 steps, then --resume for 4 more: same weights bit for bit, same log.
    Dropout is on, so the random generators must be restored too."""
    common = ["--lr-decay-iters", "8", "--warmup-iters", "2", "--eval-interval", "4", "--dropout", "0.1"]
    straight = run(tmp_path / "a", corpus, "--max-iters", "8", *common)
    run(tmp_path / "b", corpus, "--max-iters", "4", *common)
    resumed = run(tmp_path / "b", corpus, "--max-iters", "8", "--resume")
    assert losses(resumed) == losses(straight)
    assert [e for e in resumed if "val_loss" in e] == [e for e in straight if "val_loss" in e]
    a = torch.load(tmp_path / "a" / "out" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "out" / "ckpt.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_without_a_dtype_resumes_in_float32_on_a_cpu(tmp_path, corpus, monkeypatch):
    """Checkpoints written before CPUs trained in bfloat16 saved dtype "" and trained in float32:
    resumed on a CPU that would now pick bfloat16, they go on in float32, as they began."""
    run(tmp_path, corpus, "--max-iters", "2")
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    checkpoint["train_config"]["dtype"] = ""
    torch.save(checkpoint, tmp_path / "out" / "ckpt.pt")
    monkeypatch.setattr(train, "default_dtype", lambda device: "bfloat16")
    without_dtype = [flag for flag in TINY if flag not in ("--dtype", "float32")]
    train.main(["--data", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--out-dir",
                str(tmp_path / "out"), *without_dtype, "--max-iters", "3", "--resume"])
    resumed = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert resumed["step"] == 3 and resumed["train_config"]["dtype"] == "float32"


def test_shape_flags_make_the_model_and_a_resumed_run_keeps_them(tmp_path, corpus):
    """nanoGPT's knobs over the preset (gpt-nano: 2 layers, 2 heads, 64 wide, biases, GELU tanh),
    stored with the run's settings: --resume builds the same model, and refuses another one."""
    shape = ["--n-layer", "1", "--n-head", "4", "--n-embd", "32", "--no-bias", "--activation", "relu"]
    run(tmp_path, corpus, "--max-iters", "2", *shape)
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    weights = checkpoint["model"]
    assert weights["transformer.wte.weight"].shape == (300, 32)
    assert weights["transformer.h.0.mlp.c_fc.weight"].shape == (4 * 32, 32)
    assert not any(name.startswith("transformer.h.1.") for name in weights)  # one block
    assert not any(name.endswith(".bias") for name in weights)
    model = GPT.from_checkpoint_dict(checkpoint)
    assert model.transformer.h[0].attn.n_head == 4 and isinstance(model.transformer.h[0].mlp.act, torch.nn.ReLU)
    stored = checkpoint["train_config"]
    assert (stored["n_layer"], stored["n_head"], stored["n_embd"], stored["bias"], stored["activation"]) == (1, 4, 32, False, "relu")

    run(tmp_path, corpus, "--max-iters", "3", "--resume")
    resumed = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert resumed["step"] == 3 and resumed["config"] == checkpoint["config"]
    for flag, value in [("--n-layer", "2"), ("--n-head", "2"), ("--n-embd", "64"), ("--bias", None), ("--activation", "gelu"), ("--dropout", "0.1")]:
        with pytest.raises(SystemExit) as error:
            run(tmp_path, corpus, "--max-iters", "4", "--resume", *shape, flag, *([value] if value else []))
        message = str(error.value.code)
        assert message.startswith("error: ") and "was trained with other " + flag[2:].replace("-", "_") in message, message


@pytest.mark.parametrize("flags, words", [
    (["--n-embd", "30", "--n-head", "4"], ["n_embd (30) must be a multiple of n_head (4)"]),
    (["--n-layer", "-1"], ["--n-layer -1", ">= 0"]),
    (["--activation", "swish"], ["--activation 'swish'", "gelu_tanh, gelu, relu, silu"]),
    (["--init-from", "gpt2", "--n-layer", "3"], ["--n-layer 3", "--init-from"]),
])
def test_a_shape_that_cannot_be_is_a_one_line_error_before_the_data(tmp_path, corpus, flags, words):
    with pytest.raises(SystemExit) as error:
        run(tmp_path, corpus, *flags)
    message = str(error.value.code)
    assert message.startswith("error: ") and "\n" not in message and all(w in message for w in words), message
    assert not (tmp_path / "cache").exists()  # failed before preparing the data


def test_two_processes_give_the_loss_curve_of_one(tmp_path, corpus):
    """torchrun with 2 CPU processes (gloo) against 1 process, with the same global batch of 2
    micro-batches: each process reads its own micro-batch and DDP averages the gradients, so the
    losses and the final weights are those of the single process."""
    batch = ["--max-iters", "6", "--batch-tokens", str(2 * 4 * 32), "--eval-interval", "100"]
    one = run(tmp_path / "one", corpus, *batch)
    # PYTHONFAULTHANDLER: a worker that dies of a signal prints the Python stack of every thread
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "train.py"), "--data", str(corpus), "--cache-dir", str(tmp_path / "cache"),
                             "--out-dir", str(tmp_path / "two"), *TINY, *batch],
                            capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr  # all of it: a worker's error precedes the summary
    two = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert "2 process(es)" in result.stdout
    for (step_one, loss_one), (step_two, loss_two) in zip(losses(one), losses(two), strict=True):
        assert step_one == step_two and math.isclose(loss_one, loss_two, rel_tol=1e-4)
    weights_one = torch.load(tmp_path / "one" / "out" / "ckpt.pt", weights_only=True)["model"]
    weights_two = torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)["model"]
    for name, weight in weights_one.items():
        torch.testing.assert_close(weights_two[name], weight, rtol=1e-4, atol=1e-5, msg=name)


# ---------------------------------------------------------------- bad input: one line, non-zero exit, nothing lost

def cli(*args, cwd):
    command = [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_one_line_error(result, *words):
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip()
    assert message.startswith("error: ") and len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message


def test_bad_input_errors(tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"caf\xe9 \xff\xfe")
    assert_one_line_error(cli("--data", str(tmp_path / "missing.txt"), cwd=tmp_path), "not found")
    assert_one_line_error(cli("--data", str(empty), cwd=tmp_path), "empty")
    assert_one_line_error(cli("--data", str(binary), cwd=tmp_path), "UTF-8")
    assert_one_line_error(cli("--data", str(corpus), "--model", "gpt5", *TINY[2:], cwd=tmp_path), "unknown preset", "gpt2-medium")
    assert_one_line_error(cli("--config", str(empty), cwd=tmp_path), "--config")


def test_broken_checkpoints_give_one_line_errors_and_stay_untouched(tmp_path, corpus):
    run(tmp_path, corpus, "--max-iters", "2")
    checkpoint = tmp_path / "out" / "ckpt.pt"
    whole = checkpoint.read_bytes()
    common = ["--data", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path / "out"), *TINY, "--resume"]
    assert_one_line_error(cli(*common, "--model", "gpt-micro", cwd=tmp_path), "model")  # a different model
    for broken in (whole[:len(whole) // 2], b"not a checkpoint at all"):
        checkpoint.write_bytes(broken)
        assert_one_line_error(cli(*common, "--max-iters", "4", cwd=tmp_path), str(checkpoint), "corrupt")
        assert checkpoint.read_bytes() == broken  # left as it was
    checkpoint.unlink()
    assert_one_line_error(cli(*common, cwd=tmp_path), "no checkpoint")


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, corpus):
    command = [sys.executable, "-u", str(ROOT / "train.py"), "--data", str(corpus), "--cache-dir", str(tmp_path / "cache"),
               "--out-dir", str(tmp_path / "out"), *TINY, "--max-iters", "100000", "--eval-interval", "100000"]
    output = tmp_path / "output.txt"  # a file, not a pipe: reading it never blocks on the child
    with open(output, "w") as file:
        process = subprocess.Popen(command, stdout=file, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while "step 3/" not in output.read_text() and process.poll() is None:
            assert time.monotonic() < deadline, output.read_text()[-2000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, output.read_text()[-2000:]
    finally:
        process.kill()  # a no-op once it has exited
    assert "interrupted: saved" in output.read_text()
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] >= 3


def test_init_from_gpt2_weights(tmp_path, corpus):
    """Continued pretraining from a Hugging Face GPT-2 folder (a tiny random one, with GPT-2's vocabulary)."""
    transformers = pytest.importorskip("transformers")
    vocabulary = ROOT.parent / "shared" / "data" / "gpt2"
    if not (vocabulary / "encoder.json").is_file():
        pytest.skip(f"GPT-2 vocabulary files not found in {vocabulary} (../shared/data)")
    folder = tmp_path / "gpt2-tiny"
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64, vocab_size=50257)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    (folder / "vocab.json").write_bytes((vocabulary / "encoder.json").read_bytes())
    (folder / "merges.txt").write_bytes((vocabulary / "vocab.bpe").read_bytes())
    log = run(tmp_path, corpus, "--init-from", f"gpt2:{folder}", "--max-iters", "3", "--eval-interval", "3")
    assert [step for step, _ in losses(log)] == [1, 2, 3]
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert checkpoint["config"]["vocab_size"] == 50257 and checkpoint["config"]["n_embd"] == 16
    assert Tokenizer.loads(checkpoint["tokenizer"]).encode("Hello world") == [15496, 995]
