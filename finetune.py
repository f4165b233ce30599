"""
Fine-tune a pretrained GPT on a labelled task: the second stage of GPT-1 (sections 3.2 and 3.3),
and, on the same data, GPT-2's zero-shot alternative (section 3) that trains nothing.

    python finetune.py --task sst2 --data ../shared/data/glue/SST-2 --init-from out/ckpt.pt
    python finetune.py --task rte --data ../shared/data/glue/RTE --init-from HF_GPT2_DIR
    python finetune.py --task rocstories --init-from openai-gpt --data ROCSTORIES_CSV
    python finetune.py --task sst2 --init-from out-finetune/best.pt --predict SST-2/test.tsv
    python finetune.py --task sst2 --data ../shared/data/glue/SST-2 --init-from gpt2 --zero-shot

Tasks: the GLUE TSV files as distributed (cola sst2 mrpc qqp stsb mnli qnli rte: --data is the
folder with train.tsv and dev.tsv), the ROCStories cloze CSV (rocstories: --data is the file
"cloze_test_val__spring2016 - cloze_test_ALL_val.csv"), and your own JSONL
(--data is a folder with train.jsonl and dev.jsonl, one object per line):
    custom-classification   {"text": "...", "label": "positive"}
    custom-entailment       {"premise": "...", "hypothesis": "...", "label": "entailment"}
    custom-similarity       {"a": "...", "b": "...", "label": 1}
    custom-multiple-choice  {"context": "...", "choices": ["...", "..."], "label": 0}
                            (the label of a choice: its index)

Reading order: the settings; the tasks and their readers; the input transformations (Figure 1);
the model head and the losses L2 and L3 = L2 + λ·L1; training and evaluation; zero-shot scoring;
the command line.
"""

import argparse
import csv
import dataclasses
import io
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from bpe import one_line_errors
from gpt import INIT_FROM_HELP, add_tokens, load_model
from train import (add_flags, check_settings, flag, locked, make_optimizer, pick_device,
                   previous_run, save_checkpoint)


@dataclass
class FinetuneConfig:  # the defaults are GPT-1's (section 4.1, "Fine-tuning details")
    task: str = flag("", "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, rocstories or custom-KIND "
                         "(see above)")
    data: str = flag("", "the task's folder (train and dev files) or, for rocstories, its CSV file")
    init_from: str = flag("out/ckpt.pt", INIT_FROM_HELP)
    out_dir: str = flag("out-finetune", "best.pt, log.jsonl and predictions go here")
    overwrite: bool = flag(False, "train in an out_dir that holds a run, replacing its files")
    learning_rate: float = flag(6.25e-5, "peak learning rate")
    batch_size: int = flag(32, "examples per step")
    epochs: int = flag(3, "passes over the training set")
    warmup: float = flag(0.002, "fraction of the steps with a linear warmup; then linear decay "
                                "to 0")
    dropout: float = flag(0.1, "dropout in the model and before the task head")
    weight_decay: float = flag(0.01, "AdamW weight decay on matrices (GPT-1: L2 of 0.01 on "
                                     "non-bias weights)")
    lm_coef: float = flag(0.5, "λ in L3 = L2 + λ·L1, the weight of the auxiliary LM loss; 0: off")
    grad_clip: float = flag(1.0, "clip the gradient norm to this; 0: off")
    max_train_rows: int = flag(0, "train on a random subset of this many rows; 0: all")
    skip_bad_rows: bool = flag(False, "skip malformed rows (and count them) instead of stopping")
    predict: str = flag("", "a file of rows (e.g. test.tsv) to label with the best model (a "
                            "choice: its index from 0)")
    zero_shot: bool = flag(False, "no training: score label words or choices by the LM's "
                                  "likelihood")
    device: str = flag("", "cuda, mps or cpu; empty: the best available")
    seed: int = flag(1337, "random seed")
    log_interval: int = flag(10, "print progress every this many steps")


# -----------------------------------------------------------------------------
# Tasks: which columns hold the inputs and the label, and the metric GLUE reports

@dataclass(frozen=True)
class Task:
    kind: str  # classification, entailment, similarity or multiple-choice (GPT-1's Figure 1)
    inputs: tuple  # the columns of the input texts
    label: str  # the column of the label
    labels: tuple | None  # the label values, in class order; None: a score, or a choice's index;
    #                       (): the labels of the training file (custom tasks)
    metric: str  # what GLUE reports: accuracy, f1, matthews or pearson


YES_NO, NLI = ("0", "1"), ("entailment", "not_entailment")
TASKS = {
    "cola": Task("classification", ("sentence",), "label", YES_NO, "matthews"),
    "sst2": Task("classification", ("sentence",), "label", YES_NO, "accuracy"),
    "mrpc": Task("similarity", ("#1 String", "#2 String"), "Quality", YES_NO, "f1"),
    "qqp": Task("similarity", ("question1", "question2"), "is_duplicate", YES_NO, "f1"),
    "stsb": Task("similarity", ("sentence1", "sentence2"), "score", None, "pearson"),
    "mnli": Task("entailment", ("sentence1", "sentence2"), "gold_label",
                 ("contradiction", "entailment", "neutral"), "accuracy"),
    "qnli": Task("entailment", ("question", "sentence"), "label", NLI, "accuracy"),
    "rte": Task("entailment", ("sentence1", "sentence2"), "label", NLI, "accuracy"),
    "rocstories": Task("multiple-choice", ("context", "choices"), "AnswerRightEnding", None,
                       "accuracy"),
    "custom-classification": Task("classification", ("text",), "label", (), "accuracy"),
    "custom-entailment": Task("entailment", ("premise", "hypothesis"), "label", (), "accuracy"),
    "custom-similarity": Task("similarity", ("a", "b"), "label", (), "accuracy"),
    "custom-multiple-choice": Task("multiple-choice", ("context", "choices"), "label", None,
                                   "accuracy"),
}
COLA_COLUMNS = ["source", "label", "original_label", "sentence"]  # CoLA's train, dev: no header


def read_utf8(path):
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")  # utf-8-sig: MRPC starts with a BOM
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not valid UTF-8 (byte {error.start}); "
                         "convert the file to UTF-8") from None


# the story's four sentences, then its two endings
ROCSTORIES_COLUMNS = [*(f"InputSentence{i}" for i in range(1, 5)), "RandomFifthSentenceQuiz1",
                      "RandomFifthSentenceQuiz2"]


def read_records(path, task):
    """(line number, {column: value}) for each row of a GLUE TSV, the ROCStories CSV or a JSONL
    file; (line number, the problem) for a malformed one."""
    with io.StringIO(read_utf8(path), newline="") as file:
        if task.startswith("custom-"):
            for number, line in enumerate(file, start=1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as error:
                        yield number, f"not JSON ({error.msg})"
        elif task == "rocstories":
            reader = csv.DictReader(file)  # quoted CSV; the story is the first four sentences
            if missing := [c for c in ROCSTORIES_COLUMNS if c not in (reader.fieldnames or [])]:
                raise ValueError(f"{path}: no column {missing[0]}: not the ROCStories cloze CSV")
            for row in reader:
                if empty := [c for c in ROCSTORIES_COLUMNS if not (row[c] or "").strip()]:
                    yield reader.line_num, f"empty {empty[0]}"
                    continue
                label = row.get("AnswerRightEnding")  # 1 or 2; None in a file without answers
                if label not in (None, "1", "2"):
                    yield reader.line_num, f"AnswerRightEnding {label!r} is not 1 or 2"
                    continue
                yield reader.line_num, {"context": " ".join(row[c] for c in ROCSTORIES_COLUMNS[:4]),
                                        "choices": [row[c] for c in ROCSTORIES_COLUMNS[4:]],
                                        "AnswerRightEnding": label and str(int(label) - 1)}
        else:  # GLUE: tab-separated with quoting off, since some fields begin with a '"'
            rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, [])
            if task == "cola" and header[:1] != ["index"]:  # only CoLA's test.tsv has a header
                header, rows = COLA_COLUMNS, [header, *rows]
            for number, row in enumerate(rows, start=2 if header is not COLA_COLUMNS else 1):
                yield number, (dict(zip(header, row)) if len(row) == len(header) else
                               f"{len(row)} fields, the header has {len(header)}")


def read_examples(path, task, labels, skip_bad_rows=False, need_labels=True, log=print):
    """Examples (inputs, label) of a task; the label is the index of its value in labels, a score,
    a choice's index, or None when the file has no labels (a test.tsv to --predict). Malformed rows
    stop with their line, or are skipped."""
    kind, columns, label_column = TASKS[task].kind, TASKS[task].inputs, TASKS[task].label
    if not Path(path).is_file():
        raise ValueError(f"{path} not found: --data must hold the task's files (see --help)")
    examples, bad = [], []
    for line, record in read_records(path, task):
        try:
            if isinstance(record, str):
                raise ValueError(record)
            if not isinstance(record, dict) or any(column not in record for column in columns):
                raise ValueError(f"expected the fields {list(columns)}")
            inputs = [record[column] for column in columns]
            if kind == "multiple-choice" and not isinstance(inputs[1], list):
                raise ValueError(f"{columns[1]!r} must be a list of answers")
            texts = [inputs[0], *inputs[1]] if kind == "multiple-choice" else inputs
            if not all(isinstance(text, str) and text.strip() for text in texts):
                raise ValueError("empty or missing text")
            if kind == "multiple-choice" and examples and len(texts) - 1 != len(examples[0][0][1]):
                raise ValueError(f"{len(texts) - 1} choices, the first row has "
                                 f"{len(examples[0][0][1])}")
            label = record.get(label_column)
            if label is None and need_labels:
                raise ValueError(f"no label ({label_column!r})")
            if label is not None:
                label = parse_label(str(label), labels, kind, len(texts) - 1)
            examples.append((inputs, label))
        except ValueError as error:
            bad.append(f"{path}: line {line}: {error}")
    if bad and not skip_bad_rows:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"{bad[0]}{more}; fix the file or use --skip-bad-rows")
    if bad:
        log(f"data: skipped {len(bad)} malformed rows of {path}, the first: {bad[0]}")
    if not examples:
        raise ValueError(f"{path} has no examples")
    return examples


def parse_label(label, labels, kind, n_choices):
    if kind == "multiple-choice":  # the index of the right choice
        if not label.isdigit() or int(label) >= n_choices:
            raise ValueError(f"label {label!r} is not the index of one of the {n_choices} choices")
        return int(label)
    if labels is None:  # a similarity score (STS-B: 0 to 5); float() names a bad one
        if not math.isfinite(score := float(label)):
            raise ValueError(f"score {label!r} is not a number (it would train to nan)")
        return score
    if label not in labels:
        raise ValueError(f"label {label!r} is not one of {list(labels)}")
    return labels.index(label)


def task_files(config):
    """The training and dev files of --data: a GLUE folder (train.tsv, dev.tsv; MNLI's is
    dev_matched.tsv) or a JSONL folder (train.jsonl, dev.jsonl); None for a missing dev file."""
    data = Path(config.data)
    if not data.is_dir():
        raise ValueError(f"--data {data}: expected a folder with the train and dev files of "
                         f"--task {config.task}")
    suffix = ".jsonl" if config.task.startswith("custom-") else ".tsv"
    dev_file = data / ("dev_matched.tsv" if config.task == "mnli" else f"dev{suffix}")
    return data / f"train{suffix}", dev_file if dev_file.is_file() else None


def training_labels(config):
    """A custom task's classes: the labels of its training file, in order of first appearance (a
    dev label among none of them is a bad row)."""
    train_file, _ = task_files(config)
    column = TASKS[config.task].label
    if not train_file.is_file():
        return ()  # read_examples names the missing file
    records = read_records(train_file, config.task)
    return tuple(dict.fromkeys(str(record[column]) for _, record in records
                               if isinstance(record, dict) and record.get(column) is not None))


def task_examples(config, labels):
    """The training and dev examples of --data. GPT-1 trained on ROCStories' validation stories:
    like finetune-transformer-lm, a seeded shuffle cuts them into 1497 for training and 374 for
    validation."""
    if config.task == "rocstories":
        stories = read_examples(config.data, config.task, labels, config.skip_bad_rows)
        random.Random(3535999445).shuffle(stories)  # finetune-transformer-lm's seed
        return stories[:1497], stories[1497:]
    train_file, dev_file = task_files(config)
    read = lambda path: read_examples(path, config.task, labels, config.skip_bad_rows)
    return read(train_file), read(dev_file) if dev_file else []


# -----------------------------------------------------------------------------
# Input transformations (GPT-1 section 3.3, Figure 1): every task becomes token sequences
# [start] ... [extract], the pieces of a pair separated by [delim]

START, DELIM, EXTRACT = "<|start|>", "<|delim|>", "<|extract|>"


def transform(tokenizer, kind, inputs, block_size):
    """The token sequences of one example: one sequence, both orders of a similarity pair, or one
    sequence per choice. Users' text is plain text: special-token text in it is not special."""
    start, delim, extract = (tokenizer.special_tokens[token] for token in (START, DELIM, EXTRACT))
    encode = tokenizer.encode_ordinary
    if kind == "classification":
        return [[start, *encode(inputs[0])[:block_size - 2], extract]]

    def pair(first, second):
        first, second = fit(encode(first), encode(second), block_size - 3)
        return [start, *first, delim, *second, extract]

    if kind == "entailment":
        return [pair(*inputs)]
    if kind == "similarity":  # no natural order between the two: both, their states added later
        return [pair(*inputs), pair(*reversed(inputs))]
    context, choices = inputs
    return [pair(context, choice) for choice in choices]


def fit(first, second, room):
    """Cut a pair to `room` tokens. The first part (context, premise) gives way first and loses
    its beginning, so the answer stays whole and next to the words just before it; the second is
    only cut (at its end) when it alone is longer than the room."""
    second = second[:room]
    return first[max(0, len(first) - (room - len(second))):], second


def add_task_tokens(gpt, tokenizer):
    """The model and tokenizer with START, DELIM and EXTRACT added (see gpt.add_tokens)."""
    return add_tokens(gpt, tokenizer, [START, DELIM, EXTRACT])


def make_batch(examples, device):
    """Pad the sequences of a batch to its longest (not to the context length). Returns idx
    (B, S, T), the position of each extract token (B, S), the LM targets (the next token, -1 on
    padding and after the end), and the labels (None when there are none)."""
    B, S = len(examples), len(examples[0][0])
    T = max(len(sequence) for sequences, _ in examples for sequence in sequences)
    idx = torch.zeros(B, S, T, dtype=torch.long)
    targets = torch.full((B, S, T), -1, dtype=torch.long)
    extract = torch.zeros(B, S, dtype=torch.long)
    for b, (sequences, _) in enumerate(examples):
        for s, sequence in enumerate(sequences):
            idx[b, s, :len(sequence)] = torch.tensor(sequence)
            targets[b, s, :len(sequence) - 1] = torch.tensor(sequence[1:])
            extract[b, s] = len(sequence) - 1
    labels = [label for _, label in examples]
    labels = None if None in labels else torch.tensor(labels, device=device)
    return idx.to(device), extract.to(device), targets.to(device), labels


# -----------------------------------------------------------------------------
# The model: the pretrained GPT and a linear head on the final hidden state at the extract
# token (GPT-1 section 3.2: P(y | x¹..xᵐ) = softmax(h_l^m W_y))

class TaskModel(nn.Module):
    def __init__(self, gpt, kind, n_outputs, dropout):
        super().__init__()
        self.gpt, self.kind = gpt, kind
        self.dropout = nn.Dropout(dropout)  # "dropout to the classifier with a rate of 0.1" (4.1)
        self.head = nn.Linear(gpt.config.n_embd, n_outputs)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, extract, lm_targets=None, labels=None, lm_coef=0.0):
        """Returns the task logits (B, classes), or (B, choices) for multiple choice, or (B, 1)
        scores, and with labels the losses (L3, L2, L1)."""
        B, S, T = idx.shape
        hidden = self.gpt.hidden_states(idx.view(B * S, T))
        h = hidden[torch.arange(B * S, device=idx.device), extract.view(-1)]  # at [extract]
        h = h.view(B, S, -1)
        if self.kind == "multiple-choice":  # one score per choice, a softmax over the choices
            logits = self.head(self.dropout(h)).squeeze(-1)
        else:  # one sequence; or a similarity pair's two orders, added: the order does not matter
            logits = self.head(self.dropout(h.sum(dim=1)))
        if labels is None:
            return logits, None
        if labels.is_floating_point():  # a similarity score (STS-B): regression
            task_loss = F.mse_loss(logits.squeeze(-1), labels)
        else:
            task_loss = F.cross_entropy(logits, labels)  # -L2, L2 = Σ log P(y | x¹..xᵐ), averaged
        lm_loss = torch.zeros((), device=idx.device)
        if lm_coef:  # L1 on the same sequences, averaged over the real tokens (section 3.2)
            lm_logits = self.gpt.lm_head(hidden)
            lm_loss = F.cross_entropy(lm_logits.flatten(0, 1), lm_targets.reshape(-1),
                                      ignore_index=-1)
        return logits, (task_loss + lm_coef * lm_loss, task_loss, lm_loss)  # L3 = L2 + λ·L1


# -----------------------------------------------------------------------------
# Training and evaluation

def lr_schedule(step, total_steps, config):
    """GPT-1's schedule: linear warmup over the first 0.2% of the steps, then linear decay to 0."""
    warmup_steps = max(1, round(config.warmup * total_steps))
    if step < warmup_steps:
        return config.learning_rate * (step + 1) / warmup_steps
    return config.learning_rate * (total_steps - step) / max(1, total_steps - warmup_steps)


@torch.no_grad()
def predict(model, encoded, batch_size, device):
    """The model's answer for each example: a class or choice index, or a score."""
    model.eval()
    answers = []
    for i in range(0, len(encoded), batch_size):
        batch = [(sequences, 0) for sequences, _ in encoded[i:i + batch_size]]
        idx, extract, _, _ = make_batch(batch, device)
        logits, _ = model(idx, extract)
        answers += (logits.squeeze(-1) if logits.size(-1) == 1 and model.kind != "multiple-choice"
                    else logits.argmax(-1)).tolist()
    model.train()
    return answers


def metrics(answers, labels, metric):
    """GLUE's metrics: accuracy; F1 of the positive class (MRPC, QQP); Matthews correlation
    (CoLA); Pearson and Spearman correlations (STS-B)."""
    x, y = torch.tensor(answers, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    if metric == "pearson":
        return {"pearson": pearson(x, y), "spearman": pearson(ranks(x), ranks(y))}
    result = {"accuracy": (x == y).double().mean().item()}
    tp, fp = ((x == 1) & (y == 1)).sum().item(), ((x == 1) & (y == 0)).sum().item()
    fn, tn = ((x == 0) & (y == 1)).sum().item(), ((x == 0) & (y == 0)).sum().item()
    if metric == "f1":
        result = {"f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0, **result}
    if metric == "matthews":
        denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
        result = {"matthews": (tp * tn - fp * fn) / denominator if denominator else 0.0, **result}
    return result


def pearson(x, y):
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt().item()
    return (x * y).sum().item() / denominator if denominator else 0.0


def ranks(x):
    """Ranks 0..n-1, tied values sharing their average rank (as Spearman's correlation wants)."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    first = counts.cumsum(0) - counts
    return (first + (counts - 1) / 2).double()[inverse]


def check_config(config):
    """Settings and files, checked before anything is loaded. A run that trains (one with --data)
    never replaces another's best.pt by accident; predicting with a run's best.pt, into its own
    folder, replaces nothing."""
    at_least_0 = ("weight_decay", "lm_coef", "grad_clip")
    check_settings(config, [("epochs", config.epochs > 0, "> 0 (to only --predict: no --data)")]
                   + [(k, getattr(config, k) > 0, "> 0") for k in ("learning_rate", "batch_size")]
                   + [(k, getattr(config, k) >= 0, ">= 0") for k in at_least_0]
                   + [("warmup", 0 <= config.warmup <= 1, "in [0, 1]"),
                      ("dropout", 0 <= config.dropout < 1, "in [0, 1)"),
                      ("max_train_rows", config.max_train_rows >= 0, ">= 0 (0: all)"),
                      ("log_interval", config.log_interval > 0, "> 0")])
    if config.predict and not Path(config.predict).is_file():
        raise ValueError(f"--predict {config.predict}: no such file")
    found = previous_run(Path(config.out_dir), ["best.pt", "log.jsonl"])
    if found and config.data and not config.zero_shot and not config.overwrite:
        raise ValueError(f"{config.out_dir} holds a fine-tuning run ({', '.join(found)}): "
                         "replace it with --overwrite, or use another --out-dir")


def finetune(config):
    """Fine-tune on --data (or score it, --zero-shot), then label --predict's rows with the best
    epoch's model."""
    if config.task not in TASKS:
        raise ValueError(f"--task {config.task!r}: choose one of {', '.join(TASKS)}")
    task = TASKS[config.task]
    check_config(config)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    gpt, tokenizer, checkpoint = load_model(config.init_from, dropout=config.dropout,
                                            fix="give a train.py or finetune.py checkpoint")
    if config.zero_shot:
        return zero_shot(config, gpt.to(device), tokenizer)
    # A finetune.py checkpoint of the same task goes on with its head and its labels.
    previous = checkpoint if checkpoint and checkpoint.get("task") == config.task else None
    if not config.data and not (previous and config.predict):
        raise ValueError("--data is needed to train; to only --predict, --init-from a finetune.py "
                         "checkpoint of this task")
    labels = task.labels
    if labels is not None:  # the classes: the checkpoint's, the task's, or its training file's
        labels = tuple(previous["labels"]) if previous else labels or training_labels(config)
    train_examples, dev_examples = task_examples(config, labels) if config.data else ([], [])
    if labels is not None and len(labels) < 2:
        raise ValueError(f"{config.data}: the training file has one label only ({list(labels)}); "
                         "a classifier needs two or more")
    if config.max_train_rows:
        rows = min(config.max_train_rows, len(train_examples))
        train_examples = random.Random(config.seed).sample(train_examples, rows)

    gpt, tokenizer = add_task_tokens(gpt, tokenizer)
    n_outputs = 1 if labels is None else len(labels)  # one score: per choice, or of similarity
    model = TaskModel(gpt, task.kind, n_outputs, config.dropout).to(device)
    if previous:
        model.head.load_state_dict(previous["head"])
    print(f"model: {gpt.num_params() / 1e6:.2f}M parameters from {config.init_from}; "
          f"{config.task} ({task.kind}, {n_outputs} outputs); {len(train_examples)} training and "
          f"{len(dev_examples)} dev examples")
    encode = lambda examples: [(transform(tokenizer, task.kind, inputs, gpt.config.block_size),
                                label) for inputs, label in examples]
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if train_examples:
        saved = {"tokenizer": tokenizer.dumps(), "task": config.task,
                 "labels": None if labels is None else list(labels),
                 "finetune_config": dataclasses.asdict(config)}
        train_epochs(config, model, encode(train_examples), encode(dev_examples), task.metric,
                     saved, device)
        best = torch.load(out_dir / "best.pt", map_location=device, weights_only=True)
        gpt.load_state_dict(best["model"])  # --predict labels with the best epoch's model
        model.head.load_state_dict(best["head"])
    if config.predict:
        examples = read_examples(config.predict, config.task, labels, config.skip_bad_rows,
                                 need_labels=False)
        answers = predict(model, encode(examples), config.batch_size, device)
        path = out_dir / f"{Path(config.predict).stem}_predictions.tsv"
        names = [labels[a] if labels else str(a) if task.kind == "multiple-choice" else f"{a:.4f}"
                 for a in answers]  # a class's label, a choice's index, or a score
        path.write_text("index\tprediction\n" + "".join(f"{i}\t{name}\n"
                                                       for i, name in enumerate(names)))
        print(f"wrote {len(answers)} predictions to {path} (GLUE's format: row index, predicted "
              "label)")


def train_epochs(config, model, train_set, dev_set, metric, saved, device):
    """AdamW on L3, evaluating on the dev set after every epoch and keeping the best as best.pt,
    with the entries of `saved` (the tokenizer, the task and its labels, the settings)."""
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay, (0.9, 0.999),
                               device)
    total_steps, step, best = config.epochs * -(-len(train_set) // config.batch_size), 0, None
    generator = torch.Generator().manual_seed(config.seed)
    out_dir, start_time = Path(config.out_dir), time.time()
    (out_dir / "best.pt").unlink(missing_ok=True)  # an old run's (--overwrite): not taken for ours
    with open(out_dir / "log.jsonl", "w") as log_file:
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(train_set), generator=generator).tolist()
            for i in range(0, len(order), config.batch_size):
                lr = lr_schedule(step, total_steps, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = make_batch([train_set[j] for j in order[i:i + config.batch_size]], device)
                _, (loss, task_loss, lm_loss) = model(*batch, lm_coef=config.lm_coef)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % config.log_interval == 0 or step == total_steps:
                    elapsed = time.time() - start_time
                    print(f"step {step}/{total_steps} | loss {loss.item():.4f} (task "
                          f"{task_loss.item():.4f}, LM {lm_loss.item():.4f}) | lr {lr:.2e} | "
                          f"{elapsed / 60:.1f} min, ETA "
                          f"{elapsed / step * (total_steps - step) / 60:.1f} min")
                    log_file.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr,
                                               "task_loss": task_loss.item(),
                                               "lm_loss": lm_loss.item()}) + "\n")
            scores = {}
            if dev_set:
                answers = predict(model, dev_set, config.batch_size, device)
                scores = metrics(answers, [y for _, y in dev_set], metric)
                print(f"eval epoch {epoch}: " + ", ".join(f"{name} {value:.4f}"
                                                          for name, value in scores.items()))
                log_file.write(json.dumps({"step": step, "epoch": epoch, **scores}) + "\n")
            log_file.flush()
            score = scores.get(next(iter(scores), None))  # the main metric; no dev set: the last
            if best is None or score is None or score > best:
                best = score
                save_checkpoint(out_dir / "best.pt", {
                    "model": model.gpt.state_dict(), "config": dataclasses.asdict(model.gpt.config),
                    "head": model.head.state_dict(), **saved, "epoch": epoch, "metrics": scores})
                print(f"saved {out_dir / 'best.pt'}")


# -----------------------------------------------------------------------------
# Zero-shot (GPT-2 section 3): no training, no new tokens. Each answer is scored by the
# pretrained LM's log-likelihood of its words after the input; the likeliest one wins.

PROMPTS = {  # task: (prompt, the input columns as {0}, {1}; the words of each label, in order)
    "cola": ("{0}\nIs this sentence grammatical? Answer:", [" no", " yes"]),
    "sst2": ("{0}\nSentiment:", [" negative", " positive"]),
    "mrpc": ("{0}\n{1}\nDo both sentences mean the same thing? Answer:", [" no", " yes"]),
    "qqp": ("{0}\n{1}\nDo both questions ask the same thing? Answer:", [" no", " yes"]),
    "mnli": ("{0}\nQuestion: {1} True, False or Neither?\nAnswer:",
             [" False", " True", " Neither"]),
    "qnli": ("{1}\nQuestion: {0} Does the sentence answer the question?\nAnswer:", [" yes", " no"]),
    "rte": ("{0}\nQuestion: {1} True or False?\nAnswer:", [" True", " False"]),
}


@torch.no_grad()
def log_likelihoods(gpt, prompt, continuations):
    """log P(continuation | prompt) = the sum of log P(token | all tokens before it) over the
    continuation's tokens, for each continuation (lists of ids); one forward pass for all. A long
    prompt loses its beginning, so that every continuation fits in the context whole."""
    block_size = gpt.config.block_size
    sequences, starts = [], []
    for continuation in continuations:
        continuation = continuation[:block_size - 1]
        sequences.append(prompt[-(block_size - len(continuation)):] + continuation)
        starts.append(len(sequences[-1]) - len(continuation))
    idx = make_batch([(sequences, None)], next(gpt.parameters()).device)[0][0]  # padded at the end
    log_probs = F.log_softmax(gpt(idx)[0].float(), dim=-1)
    return [sum(log_probs[row, t - 1, sequence[t]].item() for t in range(start, len(sequence)))
            for row, (sequence, start) in enumerate(zip(sequences, starts))]


def zero_shot_answer(gpt, tokenizer, task, inputs):
    """The index of the likeliest label word, or of the likeliest choice (multiple choice)."""
    encode = tokenizer.encode_ordinary
    if TASKS[task].kind == "multiple-choice":
        context, choices = inputs
        scores = log_likelihoods(gpt, encode(context), [encode(" " + choice) for choice in choices])
    else:
        template, words = PROMPTS[task]
        scores = log_likelihoods(gpt, encode(template.format(*inputs)), list(map(encode, words)))
    return max(range(len(scores)), key=scores.__getitem__)


def zero_shot(config, gpt, tokenizer):
    """Score the dev examples of --data (ROCStories: the same 374 stories as fine-tuning)."""
    task = TASKS[config.task]
    if config.task not in PROMPTS and task.kind != "multiple-choice":
        raise ValueError(f"--zero-shot works for multiple choice and for {', '.join(PROMPTS)}, not "
                         f"{config.task}")
    _, examples = task_examples(config, task.labels)
    gpt.eval()
    start_time = time.time()
    answers = [zero_shot_answer(gpt, tokenizer, config.task, inputs) for inputs, _ in examples]
    scores = metrics(answers, [label for _, label in examples], task.metric)
    print(f"zero-shot on {len(examples)} dev examples ({time.time() - start_time:.0f} s): "
          + ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
    return scores


# -----------------------------------------------------------------------------
# Command line: one flag per FinetuneConfig field

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return FinetuneConfig(**vars(add_flags(parser, FinetuneConfig).parse_args(argv)))


def main(argv=None):
    try:
        with one_line_errors():
            config = parse_args(argv)
            with nullcontext() if config.zero_shot else locked(Path(config.out_dir)):
                return finetune(config)
    except KeyboardInterrupt:  # best.pt, written after each epoch, is whole
        sys.exit("interrupted: best.pt, if written, holds the best epoch finished so far")


if __name__ == "__main__":
    main()
