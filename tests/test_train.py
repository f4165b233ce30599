"""Tests for train.py on tiny settings: data preparation, the schedule, learning, exact resume,
DistributedDataParallel equivalence, and the one-line errors users get for bad input."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from bpe import Tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "gpt-nano", "--block-size", "32", "--batch-size", "4", "--vocab-size", "300",
        "--eval-iters", "2", "--log-interval", "1", "--sample-tokens", "0", "--device", "cpu"]


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
    assert meta["val_bytes"] == len((corpus / "doc10.txt").read_bytes())

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


# ---------------------------------------------------------------- training

def test_loss_goes_down_and_a_plot_is_written(tmp_path, corpus):
    log = run(tmp_path, corpus, "--max-iters", "40", "--learning-rate", "3e-3", "--plot")
    train_losses = [loss for _, loss in losses(log)]
    assert sum(train_losses[-5:]) / 5 < sum(train_losses[:5]) / 5 - 0.5
    evals = [entry for entry in log if "val_loss" in entry]
    assert evals and all(e["val_bpb"] > 0 for e in evals)
    assert (tmp_path / "out" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 40 and not any(k.startswith("_orig_mod") for k in checkpoint["model"])
    assert (tmp_path / "out" / "best.pt").is_file()


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


def test_two_processes_give_the_loss_curve_of_one(tmp_path, corpus):
    """torchrun with 2 CPU processes (gloo) and the same global batch as 1 process."""
    batch = ["--max-iters", "6", "--batch-tokens", str(2 * 4 * 32), "--eval-interval", "100"]  # 2 micro-batches
    one = run(tmp_path / "one", corpus, *batch)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "train.py"), "--data", str(corpus), "--cache-dir", str(tmp_path / "cache"),
                             "--out-dir", str(tmp_path / "two"), *TINY, *batch],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    two = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert "2 process(es)" in result.stdout
    for (step_one, loss_one), (step_two, loss_two) in zip(losses(one), losses(two), strict=True):
        assert step_one == step_two and math.isclose(loss_one, loss_two, rel_tol=1e-4)


# ---------------------------------------------------------------- bad input: one line, non-zero exit, nothing lost

def cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=cwd)


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
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("step 3/"):
            process.send_signal(signal.SIGINT)
            break
    output = process.stdout.read()
    assert process.wait(timeout=60) == 130, process.stderr.read()
    assert "interrupted: saved" in output
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
