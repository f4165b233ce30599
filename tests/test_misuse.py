"""train.py, finetune.py and sample.py used as a careless or unlucky user would (issue 13): reused
folders, interrupted runs, a corpus that changed, wrong settings, hostile files. The standard is the
most trusted trainers' (Hugging Face Trainer refuses a non-empty output folder unless told to
overwrite): a run never destroys another, never silently trains on something other than what was
asked, and bad input gets one line and a non-zero exit."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune
import sample
import train
from bpe import ENDOFTEXT, Tokenizer
from gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TINY = ["--model", "gpt-nano", "--block-size", "32", "--batch-size", "4", "--vocab-size", "300",
        "--eval-iters", "2", "--log-interval", "1", "--sample-tokens", "0", "--device", "cpu"]
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the error given without CUDA")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """25 small documents of real text (this project's own files, cut into pieces)."""
    folder = tmp_path_factory.mktemp("corpus")
    text = "".join((ROOT / name).read_text(encoding="utf-8") 
                   for name in ("bpe.py", "README.md", "gpt.py"))
    for i in range(25):
        (folder / f"doc{i:02d}.txt").write_text(text[i * 3000:(i + 1) * 3000], encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """ckpt.pt of a random gpt-nano and a 300-token BPE (<|endoftext|> is 299): what sample.py
    reads from --out-dir and finetune.py from --init-from."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.train(README, 300, special_tokens=[ENDOFTEXT])
    config = GPTConfig.preset("gpt-nano", vocab_size=tokenizer.vocab_size, block_size=32)
    path = tmp_path_factory.mktemp("pretrained") / "ckpt.pt"
    torch.save({"model": GPT(config).state_dict(), "config": vars(config),
                "tokenizer": tokenizer.dumps()}, path)
    return path


def train_argv(tmp_path, data, *flags, out="out"):
    return ["--data", str(data), "--cache-dir", str(tmp_path / "cache"),
            "--out-dir", str(tmp_path / out), *TINY, *flags]


def one_line_error(main, argv, *words):
    """The rule for bad input: one line naming the problem and the fix; a non-zero exit."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    message = str(exit.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def run_files(out):
    return {name: (out / name).read_bytes() for name in ("ckpt.pt", "best.pt", "log.jsonl")
            if (out / name).is_file()}


def same_weights(checkpoint_a, checkpoint_b):
    a, b = (torch.load(path, weights_only=True)["model"] for path in (checkpoint_a, checkpoint_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------- nothing lost: out dirs, caches, resume

def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path, corpus):
    """Hugging Face Trainer's overwrite_output_dir rule: a folder holding a run is continued
    (--resume) or replaced when asked (--overwrite), never replaced by running a command twice."""
    argv = train_argv(tmp_path, corpus, "--max-iters", "2", "--eval-interval", "2")
    train.main(argv)
    before = run_files(tmp_path / "out")
    assert set(before) == {"ckpt.pt", "best.pt", "log.jsonl"}
    elsewhere = ["--cache-dir", str(tmp_path / "other-cache")]
    one_line_error(train.main, argv + elsewhere, "--resume", "--overwrite")
    assert run_files(tmp_path / "out") == before
    assert not (tmp_path / "other-cache").exists()  # refused before the data was prepared

    (tmp_path / "out" / "loss.png").write_bytes(b"the old run's plot")
    train.main(argv + ["--overwrite", "--max-iters", "3"])
    assert not (tmp_path / "out" / "loss.png").exists()  # none of the old run is left beside it
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3]  # the new run's only
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"] == 3


def test_the_data_cache_is_keyed_by_content_and_reuses_whole_folders_only(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a" / "input.txt", tmp_path / "b" / "input.txt"  # one name, two corpora
    for path, text in ((a, README[:6000]), (b, README[6000:12000])):
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8")
    config = lambda path: train.TrainConfig(data=str(path), cache_dir=str(cache), vocab_size=300)
    folder_a = train.prepare_data(config(a))
    tokens_a = (folder_a / "train.bin").read_bytes()

    def ctrl_c(*args, **kwargs):  # once the token files are written, before the folder is complete
        raise KeyboardInterrupt
    a.write_text(README[:5000], encoding="utf-8")
    with monkeypatch.context() as patch:
        patch.setattr(Tokenizer, "save", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train.prepare_data(config(a))
    a.write_text(README[:6000], encoding="utf-8")
    assert (train.prepare_data(config(a)) / "train.bin").read_bytes() == tokens_a  # no half rebuild

    folder_b = train.prepare_data(config(b))
    assert folder_b != folder_a and (folder_a / "train.bin").read_bytes() == tokens_a
    assert sorted(cache.iterdir()) == sorted([folder_a, folder_b])  # nothing half-built left


def test_resume_refuses_a_corpus_that_changed(tmp_path, corpus):
    """The checkpoint's ids are tokens of the BPE trained on the old corpus: a BPE trained on the
    new one would give them other meanings."""
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    train.main(train_argv(tmp_path, data, "--max-iters", "2"))
    before = run_files(tmp_path / "out")
    (data / "doc03.txt").write_text("A different document. " * 100, encoding="utf-8")
    resume = train_argv(tmp_path, data, "--resume", "--max-iters", "4")
    one_line_error(train.main, resume, "changed", "--out-dir")
    assert run_files(tmp_path / "out") == before


def test_ctrl_c_in_the_middle_of_a_step_resumes_exactly(tmp_path, corpus, monkeypatch):
    """Ctrl-C between two micro-batches: the step is finished and saved, and resuming gives the
    weights of a run never interrupted, bit for bit (dropout on: every generator must match)."""
    common = ["--max-iters", "5", "--batch-tokens", "256", "--dropout", "0.1",  # 2 micro-batches
              "--eval-interval", "2", "--warmup-iters", "2"]  # saved at steps 2 and 4
    train.main(train_argv(tmp_path, corpus, *common, out="straight"))
    batches, get = [], train.Batches.get

    def get_then_ctrl_c(self, split, offsets, device):
        batches.append(split)
        if batches.count("train") == 5 and split == "train":  # step 3's first micro-batch
            signal.raise_signal(signal.SIGINT)
        return get(self, split, offsets, device)
    with monkeypatch.context() as patch:
        patch.setattr(train.Batches, "get", get_then_ctrl_c)
        with pytest.raises(SystemExit) as exit:
            train.main(train_argv(tmp_path, corpus, *common, out="resumed"))
    assert exit.value.code == 130
    assert torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["step"] == 3
    train.main(train_argv(tmp_path, corpus, *common, "--resume", out="resumed"))
    assert same_weights(tmp_path / "straight" / "ckpt.pt", tmp_path / "resumed" / "ckpt.pt")


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    train.save_checkpoint(tmp_path / "ckpt.pt", {"step": torch.tensor(1)})

    def disk_full(state, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        train.save_checkpoint(tmp_path / "ckpt.pt", {"step": torch.tensor(2)})
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt.pt"]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 1


def wait_for_line(process, prefix, timeout):
    """Read the output up to a line starting with prefix; in a thread, so that a hang times out."""
    found = threading.Event()

    def read():
        for line in process.stdout:
            if line.startswith(prefix):
                return found.set()
    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no line starting with {prefix!r} in {timeout} s"


def test_sigterm_saves_like_ctrl_c_and_a_second_run_into_the_folder_is_locked_out(tmp_path, corpus):
    """Cluster schedulers (Slurm, Kubernetes) send SIGTERM, then SIGKILL some seconds later."""
    argv = train_argv(tmp_path, corpus, "--max-iters", "100000", "--eval-interval", "100000")
    process = subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *argv], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for_line(process, "step 2/", timeout=240)
        second = argv + ["--overwrite", "--max-iters", "1"]  # even --overwrite waits for its turn
        one_line_error(train.main, second, "another run")
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM and "interrupted" in output, errors
    step = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"]
    train.main(argv + ["--resume", "--max-iters", str(step + 1)])
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"] == step + 1


# ---------------------------------------------------------- settings: checked once, before the work

@pytest.mark.parametrize("flags, words", [
    (["--dtype", "int8"], ["--dtype", "bfloat16"]),  # used to train in float32 and log int8
    (["--dtype", "nonsense"], ["--dtype"]),
    (["--max-iters", "-5"], ["--max-iters"]),
    (["--learning-rate", "-0.001"], ["--learning-rate"]),
    (["--block-size", "-1"], ["--block-size"]),
    pytest.param(["--device", "cuda"], ["cuda", "--device cpu"], marks=without_cuda),
])
def test_wrong_settings_fail_in_one_line_before_the_data_is_ready(tmp_path, corpus, flags, words):
    one_line_error(train.main, train_argv(tmp_path, corpus, "--max-iters", "1", *flags), *words)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("recipe", [{"resume": "no"}, {"max_iters": 2.5}, {"vocab_size": "big"},
                                    {"bias": "no"}, {"bias": None}])
def test_a_recipe_value_of_the_wrong_type_is_refused(tmp_path, corpus, recipe):
    """JSON has no schema: {"resume": "no"} is a true string, and used to resume."""
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    argv = ["--config", str(tmp_path / "recipe.json"), *train_argv(tmp_path, corpus)]
    one_line_error(train.main, argv, next(iter(recipe)), "must be")


def test_zero_means_chosen_for_the_device_even_when_given():
    """--help says 0 is automatic: an explicit 0 must not train 0 steps at learning rate 0."""
    config, asked = train.parse_args(["--max-iters", "0", "--learning-rate", "0",
                                      "--batch-size", "0"])
    config = train.resolve_settings(config, asked, "cpu")
    cpu = train.DEVICE_DEFAULTS["cpu"]
    assert (config.max_iters, config.learning_rate, config.batch_size) == \
        (cpu["max_iters"], cpu["learning_rate"], cpu["batch_size"])


def test_an_unusable_out_dir_fails_before_the_data_is_prepared(tmp_path, corpus):
    (tmp_path / "out" / "ckpt.pt").mkdir(parents=True)  # a folder where the checkpoint goes
    argv = train_argv(tmp_path, corpus, "--max-iters", "1")
    one_line_error(train.main, argv, "ckpt.pt", "folder")
    (tmp_path / "file").write_text("")
    argv = train_argv(tmp_path, corpus, "--max-iters", "1", out="file")
    one_line_error(train.main, argv, "not a folder")
    assert not (tmp_path / "cache").exists()


def test_bad_data_gets_one_line(tmp_path, monkeypatch, capsys):
    """A prepared folder whose ids the tokenizer does not have; a FIFO; Ctrl-C while preparing."""
    Tokenizer.train(README, 260, special_tokens=[ENDOFTEXT]).save(tmp_path / "tok.bpe")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for split in ("train", "val"):
        (np.arange(2000) % 300).astype(np.uint16).tofile(prepared / f"{split}.bin")  # ids up to 299
    flags = ["--tokenizer", str(tmp_path / "tok.bpe"), "--max-iters", "1"]
    one_line_error(train.main, train_argv(tmp_path, prepared, *flags), "train.bin", "299", "260")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        argv = train_argv(tmp_path, tmp_path / "fifo")
        one_line_error(train.main, argv, "fifo", "not a regular file")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    (tmp_path / "text.txt").write_text(README, encoding="utf-8")
    monkeypatch.setattr(Tokenizer, "train", ctrl_c)
    capsys.readouterr()
    try:
        train.main(train_argv(tmp_path, tmp_path / "text.txt", out="out-ctrl-c"))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while preparing the data ended in a traceback")
    except SystemExit as exit:
        assert exit.code == 130
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").glob("text-*"))  # nothing half-built left behind


# ---------------------------------------------------------------- hostile checkpoints

class Payload:
    """A pickle that calls a function when it is loaded: what a malicious "checkpoint" holds."""
    def __reduce__(self):
        return print, ("the payload ran",)


def test_a_pickle_of_other_objects_is_refused_and_the_unsafe_flag_never_suggested(tmp_path, capsys):
    """PyTorch's own advice (torch.load, weights_only): only weights_only=True is safe on untrusted
    files; retrying with False, as its error message suggests, would run the payload."""
    (tmp_path / "out").mkdir()
    torch.save({"model": Payload(), "config": {}, "tokenizer": ""}, tmp_path / "out" / "ckpt.pt")
    finetune_argv = ["--task", "sst2", "--data", str(tmp_path), "--out-dir", str(tmp_path / "ft"),
                     "--init-from", str(tmp_path / "out" / "ckpt.pt"), "--device", "cpu"]
    messages = [one_line_error(sample.main, ["--out-dir", str(tmp_path / "out"), "--prompt", "hi"]),
                one_line_error(train.main, ["--out-dir", str(tmp_path / "out"), "--resume", *TINY]),
                one_line_error(finetune.main, finetune_argv)]
    for message in messages:
        assert "objects other than tensors" in message and "weights_only" not in message, message
    assert "the payload ran" not in capsys.readouterr().out


# ---------------------------------------------------------------- sample.py

def test_typed_special_token_text_in_a_prompt_is_plain_text_unless_allowed(checkpoint, monkeypatch):
    """tiktoken's rule, and the README's: text from a user must not be able to end a document."""
    prompts, generate_stream = [], sample.generate_stream

    def spy(model, idx, *args, **kwargs):
        prompts.append(idx[0].tolist())
        return generate_stream(model, idx, *args, **kwargs)
    monkeypatch.setattr(sample, "generate_stream", spy)
    argv = ["--out-dir", str(checkpoint.parent), "--prompt", f"end{ENDOFTEXT}",
            "--max-new-tokens", "1", "--no-stream", "--device", "cpu"]
    sample.main(argv)
    sample.main(argv + ["--allow-special"])
    tokenizer = Tokenizer.loads(torch.load(checkpoint, weights_only=True)["tokenizer"])
    assert prompts[0] == tokenizer.encode_ordinary(f"end{ENDOFTEXT}")
    assert tokenizer.eot_id not in prompts[0]
    assert prompts[1] == tokenizer.encode_ordinary("end") + [tokenizer.eot_id]


def test_ctrl_c_without_streaming_prints_the_text_made_so_far(checkpoint, monkeypatch, capsys):
    generate_stream = sample.generate_stream

    def five_tokens_then_ctrl_c(*args, **kwargs):
        for n, token in enumerate(generate_stream(*args, **kwargs)):
            if n == 5:
                raise KeyboardInterrupt
            yield token
    monkeypatch.setattr(sample, "generate_stream", five_tokens_then_ctrl_c)
    with pytest.raises(SystemExit) as exit:
        sample.main(["--out-dir", str(checkpoint.parent), "--prompt", "the", "--greedy",
                     "--no-stream", "--max-new-tokens", "50", "--device", "cpu"])
    assert exit.value.code == 130
    state = torch.load(checkpoint, weights_only=True)
    model, tokenizer = GPT.from_checkpoint_dict(state).eval(), Tokenizer.loads(state["tokenizer"])
    prompt = tokenizer.encode_ordinary("the")
    new = sample.generate(model, torch.tensor([prompt]), 5, temperature=0)[0, len(prompt):].tolist()
    new = new[:new.index(tokenizer.eot_id)] if tokenizer.eot_id in new else new
    assert capsys.readouterr().out == "the" + tokenizer.decode(new) + "\n"


def test_nan_sampling_settings_are_one_line(checkpoint):
    for flag in ("--temperature", "--repetition-penalty"):
        argv = ["--out-dir", str(checkpoint.parent), "--prompt", "hi", flag, "nan"]
        one_line_error(sample.main, argv, flag)


# ---------------------------------------------------------------- finetune.py

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


SST2_ROWS = "sentence\tlabel\n" + "".join(f"a {word} film\t{n % 2}\n"
                                          for n, word in enumerate("good bad ok dull".split() * 3))


def finetune_argv(tmp_path, checkpoint):
    write(tmp_path / "SST-2" / "train.tsv", SST2_ROWS)
    return ["--task", "sst2", "--data", str(tmp_path / "SST-2"), "--init-from", str(checkpoint),
            "--out-dir", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4",
            "--device", "cpu"]


def test_finetune_refuses_to_replace_a_runs_best_pt(tmp_path, checkpoint, monkeypatch):
    """Hugging Face Trainer's overwrite_output_dir rule, as for train.py."""
    argv = finetune_argv(tmp_path, checkpoint)
    finetune.main(argv)
    before = run_files(tmp_path / "out")
    assert "best.pt" in before
    one_line_error(finetune.main, argv, "--overwrite")
    assert run_files(tmp_path / "out") == before

    def fails(*args):
        raise RuntimeError("the new run fails in its first step")
    with monkeypatch.context() as patch:
        patch.setattr(finetune, "make_batch", fails)
        one_line_error(finetune.main, argv + ["--overwrite"], "first step")
    assert not (tmp_path / "out" / "best.pt").exists()  # the old run's: not left beside the new log
    finetune.main(argv + ["--overwrite"])
    # predicting with a run's best.pt, into its own folder, is no new run: allowed
    best, rows = str(tmp_path / "out" / "best.pt"), str(tmp_path / "SST-2" / "train.tsv")
    finetune.main(["--task", "sst2", "--init-from", best, "--out-dir", str(tmp_path / "out"),
                   "--predict", rows, "--device", "cpu"])
    assert (tmp_path / "out" / "train_predictions.tsv").is_file()


def test_finetune_settings_and_files_fail_in_one_line_before_training(tmp_path, checkpoint):
    argv = finetune_argv(tmp_path, checkpoint)
    test = str(tmp_path / "SST-2" / "train.tsv")
    one_line_error(finetune.main, argv + ["--epochs", "0", "--predict", test], "--epochs")
    missing = ["--predict", str(tmp_path / "test.tsv")]
    one_line_error(finetune.main, argv + missing, "--predict", "test.tsv")
    one_line_error(finetune.main, argv + ["--learning-rate", "nan"], "--learning-rate")
    if not torch.cuda.is_available():
        one_line_error(finetune.main, argv + ["--device", "cuda"], "cuda", "--device cpu")
    assert not (tmp_path / "out" / "best.pt").exists()


def test_finetune_rows_that_would_train_to_nonsense_are_bad_rows(tmp_path):
    """GLUE's STS-B scores are numbers from 0 to 5; a custom task's classes, its training labels."""
    sts = write(tmp_path / "sts.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                                      "sentence1\tsentence2\tscore\n"
                                      "0\tg\tf\t2012\t0\tn\tn\tA man.\tA man.\t5.0\n"
                                      "1\tg\tf\t2012\t1\tn\tn\tA dog.\tA cat.\tnan\n"
                                      "2\tg\tf\t2012\t2\tn\tn\tA.\tB.\tinf\n")
    with pytest.raises(ValueError, match=r"sts.tsv: line 3: .*nan.* \(and 1 more\)"):
        finetune.read_examples(sts, "stsb", None)
    rows = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"},
            {"text": "ok", "label": "postive"}]  # the third, in dev only, is misspelt
    write(tmp_path / "custom" / "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows[:2]))
    write(tmp_path / "custom" / "dev.jsonl", "".join(json.dumps(row) + "\n" for row in rows[::2]))
    config = finetune.FinetuneConfig(task="custom-classification", data=str(tmp_path / "custom"))
    with pytest.raises(ValueError, match=r"dev.jsonl: line 2: label 'postive' is not one of \["):
        finetune.task_examples(config, finetune.training_labels(config))


def test_finetune_file_errors_name_the_file_line_and_column(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_bytes(b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n")  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match=r"train.tsv: line 3: not valid UTF-8"):
        finetune.read_examples(tsv, "sst2", ["0", "1"])
    # the ROCStories cloze CSV's columns (Mostafazadeh et al. 2016), one missing at a time
    columns = ["InputStoryid", *(f"InputSentence{i}" for i in range(1, 5)),
               "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
    story = ["id1", "A.", "B.", "C.", "D.", "E.", "F.", "1"]
    for missing in ("AnswerRightEnding", "InputSentence3"):
        keep = [i for i, column in enumerate(columns) if column != missing]
        csv = write(tmp_path / "stories.csv", ",".join(columns[i] for i in keep) + "\n"
                                              + ",".join(story[i] for i in keep) + "\n")
        with pytest.raises(ValueError, match=missing):
            finetune.read_examples(csv, "rocstories", None)
