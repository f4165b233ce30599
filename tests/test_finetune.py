"""Tests for finetune.py: GPT-1's input transformations token by token, the head and the losses
against hand computations, learning on real GLUE rows, the task readers, the checkpoint round trip,
zero-shot scoring, and the one-line errors users get for bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import finetune
from bpe import ENDOFTEXT, Tokenizer
from finetune import DELIM, EXTRACT, START, TaskModel, make_batch, transform
from gpt import GPT, GPTConfig
from shared_data import DATA, ROCSTORIES, needs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]
GLUE = DATA / "glue"


@pytest.fixture(scope="module")
def pretrained_tokenizer():
    """A 300-token BPE (<|endoftext|> is 299) trained on this project's README."""
    return Tokenizer.train((ROOT / "README.md").read_text(encoding="utf-8"), 300, special_tokens=[ENDOFTEXT])


@pytest.fixture(scope="module")
def tokenizer(pretrained_tokenizer):
    return pretrained_tokenizer.with_special_tokens([START, DELIM, EXTRACT])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pretrained_tokenizer):
    """A train.py-style checkpoint of a random tiny GPT, without the task tokens."""
    torch.manual_seed(0)
    base = pretrained_tokenizer
    config = GPTConfig.preset("gpt-nano", vocab_size=base.vocab_size)
    path = tmp_path_factory.mktemp("pretrained") / "ckpt.pt"
    torch.save({"model": GPT(config).state_dict(), "config": vars(config), "tokenizer": base.dumps()}, path)
    return path


def tiny_model(tokenizer, kind, n_outputs, dropout=0.0):
    torch.manual_seed(0)
    return TaskModel(GPT(GPTConfig.preset("gpt-nano", vocab_size=tokenizer.vocab_size)), kind, n_outputs, dropout)


# ---------------------------------------------------------------- input transformations (Figure 1)

def test_each_task_kind_becomes_the_papers_token_sequences(tokenizer):
    start, delim, extract = 300, 301, 302  # after the 300 tokens of the pretrained vocabulary
    assert tokenizer.special_tokens == {ENDOFTEXT: 299, START: start, DELIM: delim, EXTRACT: extract}
    a, b, c = (tokenizer.encode_ordinary(text) for text in ("the model", " reads text", " and <|delim|> tokens"))
    assert transform(tokenizer, "classification", ["the model"], 64) == [[start, *a, extract]]
    assert transform(tokenizer, "entailment", ["the model", " reads text"], 64) == [[start, *a, delim, *b, extract]]
    assert transform(tokenizer, "similarity", ["the model", " reads text"], 64) == [
        [start, *a, delim, *b, extract], [start, *b, delim, *a, extract]]
    assert transform(tokenizer, "multiple-choice", ["the model", [" reads text", " and <|delim|> tokens"]], 64) == [
        [start, *a, delim, *b, extract], [start, *a, delim, *c, extract]]
    assert delim not in c  # special-token text written by a user is plain text


def test_long_inputs_lose_the_start_of_the_context_and_keep_the_answer(tokenizer):
    context, answer = list(range(100)), list(range(1000, 1010))
    assert finetune.fit(context, answer, 30) == (list(range(80, 100)), answer)  # the last 20 tokens, next to the answer
    assert finetune.fit(context, list(range(50)), 30) == ([], list(range(30)))  # an answer alone too long is cut at its end
    text = "the model reads text " * 40
    sequences = transform(tokenizer, "multiple-choice", [text, ["short answer", text]], 64)
    assert all(len(sequence) == 64 for sequence in sequences)
    assert sequences[0][-len(tokenizer.encode_ordinary("short answer")) - 1:-1] == tokenizer.encode_ordinary("short answer")
    assert len(transform(tokenizer, "classification", [text], 64)[0]) == 64


def test_task_tokens_grow_the_tied_embedding_with_contiguous_ids(checkpoint):
    saved = torch.load(checkpoint, weights_only=True)
    gpt = GPT.from_checkpoint_dict(saved)
    grown_gpt, grown = finetune.add_task_tokens(gpt, Tokenizer.loads(saved["tokenizer"]))
    assert [grown.special_tokens[t] for t in (START, DELIM, EXTRACT)] == [300, 301, 302]
    assert grown_gpt.config.vocab_size == 303 and gpt.config.vocab_size == 300  # a new model
    weight = grown_gpt.transformer.wte.weight
    assert weight.shape == (303, 64) and torch.equal(weight[:300], saved["model"]["transformer.wte.weight"])
    assert 0.005 < weight[300:].std() < 0.05  # N(0, 0.02) like the rest
    assert grown_gpt.lm_head.weight is grown_gpt.transformer.wte.weight  # still tied
    assert finetune.add_task_tokens(grown_gpt, grown) == (grown_gpt, grown)  # a second time adds nothing


# ---------------------------------------------------------------- the head and the losses

def test_similarity_is_the_same_in_both_orders(tokenizer):
    model = tiny_model(tokenizer, "similarity", 2).eval()
    one = [(transform(tokenizer, "similarity", ["the model", "reads text"], 64), 0)]
    other = [(transform(tokenizer, "similarity", ["reads text", "the model"], 64), 0)]
    logits, _ = model(*make_batch(one, "cpu")[:2])
    assert torch.allclose(logits, model(*make_batch(other, "cpu")[:2])[0], atol=1e-6)
    assert not torch.allclose(model(*make_batch([(one[0][0][:1] * 2, 0)], "cpu")[:2])[0], logits)  # not trivially so


@pytest.mark.parametrize("kind", ["entailment", "multiple-choice"])
def test_combined_loss_equals_its_parts_computed_by_hand(tokenizer, kind):
    """L3 = L2 + λ·L1 on a padded batch, against one unpadded sequence at a time."""
    model = tiny_model(tokenizer, kind, 3 if kind == "entailment" else 1).eval()
    texts = ["the model", "reads text and more text", "GPT", "a longer piece of the readme text here"]
    inputs = ([[texts[0], texts[1]], [texts[2], texts[3]]] if kind == "entailment" else
              [[texts[0], [texts[1], texts[2]]], [texts[3], [texts[0], texts[2]]]])
    examples = [(transform(tokenizer, kind, x, 64), label) for x, label in zip(inputs, [2, 1] if kind == "entailment" else [1, 0])]
    _, (total, task_loss, lm_loss) = model(*make_batch(examples, "cpu"), lm_coef=0.5)

    lm_sum, lm_count, task_sum = 0.0, 0, 0.0
    for sequences, label in examples:
        scores = []
        for sequence in sequences:
            hidden = model.gpt.hidden_states(torch.tensor([sequence]))[0]  # (T, C), no padding
            log_probs = F.log_softmax(model.gpt.lm_head(hidden), dim=-1)
            lm_sum -= sum(log_probs[t, sequence[t + 1]] for t in range(len(sequence) - 1))
            lm_count += len(sequence) - 1
            scores.append(hidden[-1] @ model.head.weight.T + model.head.bias)  # the extract token
        logits = scores[0] if kind == "entailment" else torch.cat(scores)
        task_sum -= F.log_softmax(logits, dim=-1)[label]
    assert task_loss.item() == pytest.approx(task_sum.item() / 2, rel=1e-5)
    assert lm_loss.item() == pytest.approx(lm_sum.item() / lm_count, rel=1e-5)  # averaged per real token
    assert total.item() == pytest.approx(task_loss.item() + 0.5 * lm_loss.item(), rel=1e-6)
    _, (total, task_only, lm_off) = model(*make_batch(examples, "cpu"), lm_coef=0.0)
    assert total.item() == pytest.approx(task_only.item()) and lm_off.item() == 0


def test_regression_uses_mean_squared_error(tokenizer):
    model = tiny_model(tokenizer, "similarity", 1).eval()
    examples = [(transform(tokenizer, "similarity", ["the model", "reads"], 64), 3.5)]
    logits, (_, task_loss, _) = model(*make_batch(examples, "cpu"))
    assert task_loss.item() == pytest.approx((logits.item() - 3.5) ** 2, rel=1e-5)


def test_a_few_steps_on_real_sst2_and_rte_rows_lower_the_loss(tokenizer):
    for task, kind in (("sst2", "classification"), ("rte", "entailment")):
        rows = finetune.read_examples(needs(GLUE / task.upper().replace("SST2", "SST-2") / "train.tsv"), task,
                                      finetune.TASKS[task].labels)[:16]
        batch = make_batch([(transform(tokenizer, kind, x, 64), y) for x, y in rows], "cpu")
        model = tiny_model(tokenizer, kind, 2, dropout=0.1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(15):
            _, (loss, _, _) = model(*batch, lm_coef=0.5)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < 0.8 * losses[0], (task, losses)


# ---------------------------------------------------------------- training, checkpoints, predictions

class GradientRecorder(torch.optim.SGD):
    """Stands in for AdamW: keeps a copy of each step's gradient and leaves the weights alone."""

    def __init__(self, params, **options):
        super().__init__(params, lr=0.0)
        self.gradients = []

    def step(self, closure=None):
        parameters = (p for group in self.param_groups for p in group["params"])
        self.gradients.append({id(p): p.grad.clone() for p in parameters})


@pytest.mark.parametrize("lm_coef", [0.0, 0.5])
def test_a_training_step_follows_the_gradient_of_l3(tmp_path, checkpoint, monkeypatch, lm_coef):
    """GPT-1 section 3.2: fine-tuning minimizes L3 = L2 + λ·L1, the task loss plus λ times the
    language modelling loss of the same sequences; --lm-coef is λ, and 0 leaves L1 out."""
    optimizers, calls, forward = [], [], TaskModel.forward

    def record_forward(model, *args, **kwargs):
        calls.append((model, args))
        return forward(model, *args, **kwargs)

    def record_gradients(params, **options):
        optimizers.append(GradientRecorder(params))
        return optimizers[-1]

    monkeypatch.setattr(TaskModel, "forward", record_forward)
    monkeypatch.setattr(torch.optim, "AdamW", record_gradients)
    rows = [("a fine film", "good"), ("dull and long", "bad"), ("the model reads text", "good"),
            ("no", "bad")]
    write(tmp_path / "data" / "train.jsonl",
          "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    finetune.main(["--task", "custom-classification", "--data", str(tmp_path / "data"),
                   "--init-from", str(checkpoint), "--out-dir", str(tmp_path / "out"),
                   "--epochs", "1", "--batch-size", "4", "--dropout", "0", "--grad-clip", "0",
                   "--lm-coef", str(lm_coef), "--device", "cpu"])
    [optimizer], (model, batch) = optimizers, calls[0]
    [gradient] = optimizer.gradients  # one step: 4 rows, batches of 4
    _, (_, task_loss, lm_loss) = model(*batch, lm_coef=1.0)  # L2 and L1, checked by hand above
    expected = torch.autograd.grad(task_loss + lm_coef * lm_loss, list(model.parameters()))
    for (name, parameter), reference in zip(model.named_parameters(), expected):
        torch.testing.assert_close(gradient[id(parameter)], reference, rtol=1e-4, atol=1e-7,
                                   msg=name)


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    config = finetune.FinetuneConfig(learning_rate=1e-3, warmup=0.02)
    rates = [finetune.lr_schedule(step, 1000, config) for step in range(1000)]
    assert rates[0] == pytest.approx(5e-5) and rates[19] == pytest.approx(1e-3)
    assert rates[20] == pytest.approx(1e-3) and rates[510] == pytest.approx(0.5e-3) and rates[-1] == pytest.approx(1e-3 / 980)


def test_finetune_keeps_the_best_checkpoint_which_predicts_again(tmp_path, checkpoint):
    glue = tmp_path / "SST-2"
    glue.mkdir()
    lines = needs(GLUE / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    (glue / "train.tsv").write_text("\n".join(lines[:97]) + "\n", encoding="utf-8")
    (glue / "dev.tsv").write_text("\n".join(lines[:1] + lines[97:137]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    finetune.main(["--task", "sst2", "--data", str(glue), "--init-from", str(checkpoint), "--out-dir", str(out),
                   "--epochs", "2", "--batch-size", "16", "--learning-rate", "1e-3", "--device", "cpu"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evaluations = [entry for entry in log if "accuracy" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1, 2] and log[-2]["step"] == 12  # 2 epochs of 6 steps
    best = torch.load(out / "best.pt", weights_only=True)  # plain tensors and strings
    assert best["task"] == "sst2" and best["labels"] == ["0", "1"] and best["config"]["vocab_size"] == 303
    assert best["metrics"]["accuracy"] == max(entry["accuracy"] for entry in evaluations)

    finetune.main(["--task", "sst2", "--init-from", str(out / "best.pt"), "--out-dir", str(tmp_path / "again"),
                   "--predict", str(glue / "dev.tsv"), "--device", "cpu"])
    predictions = (tmp_path / "again" / "dev_predictions.tsv").read_text().splitlines()
    labels = [line.split("\t")[1] for line in lines[97:137]]
    assert predictions[0] == "index\tprediction" and len(predictions) == 41
    accuracy = sum(p.split("\t")[1] == y for p, y in zip(predictions[1:], labels)) / 40
    assert accuracy == pytest.approx(best["metrics"]["accuracy"])  # the same model, read back


def extract_states(gpt, sequences):
    """h_l^m of GPT-1 section 3.2: the final hidden state at the last ([extract]) token of each
    sequence, one unpadded sequence at a time."""
    return torch.stack([gpt.hidden_states(torch.tensor([s]))[0, -1] for s in sequences])


def saved_model(path):
    """The GPT, its task head (as a function), the tokenizer and the checkpoint in a best.pt."""
    best = torch.load(path, weights_only=True)
    head = lambda h: h @ best["head"]["weight"].T + best["head"]["bias"]
    return GPT.from_checkpoint_dict(best).eval(), head, Tokenizer.loads(best["tokenizer"]), best


def test_custom_multiple_choice_and_a_regression_task_end_to_end(tmp_path, checkpoint):
    """GPT-1 section 3.3: a multiple-choice answer is the choice with the highest score (a softmax
    over the choices); a similarity score is the head on the states of both orders, added."""
    choices = ["It learns.", "It sleeps.", "It reads."]
    rows = [{"context": f"The model reads {n} texts.", "choices": choices[n % 3:] + choices[:n % 3],
             "label": n % 3} for n in range(12)]
    jsonl = write(tmp_path / "mc" / "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    write(tmp_path / "mc" / "dev.jsonl", jsonl.read_text())
    common = ["--init-from", str(checkpoint), "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    finetune.main(["--task", "custom-multiple-choice", "--data", str(jsonl.parent),
                   "--out-dir", str(tmp_path / "out-mc"), "--predict", str(jsonl), *common])
    predictions = (tmp_path / "out-mc" / "train_predictions.tsv").read_text().splitlines()[1:]
    gpt, head, tokenizer, _ = saved_model(tmp_path / "out-mc" / "best.pt")
    with torch.no_grad():
        scores = [head(extract_states(gpt, transform(tokenizer, "multiple-choice",
                                                     [row["context"], row["choices"]], 64)))
                  for row in rows]
    answers = [score.argmax().item() for score in scores]
    assert [line.split("\t")[1] for line in predictions] == [str(answer) for answer in answers]
    assert len(set(answers)) > 1  # not one answer for all

    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    pairs = [(f"A man plays {n}.", "A man plays.", n % 6) for n in range(8)]
    sts = "".join(f"{n}\tg\tf\t2012\t{n}\tnone\tnone\t{a}\t{b}\t{score}.000\n"
                  for n, (a, b, score) in enumerate(pairs))
    write(tmp_path / "STS-B" / "train.tsv", header + sts)
    write(tmp_path / "STS-B" / "dev.tsv", header + sts)
    finetune.main(["--task", "stsb", "--data", str(tmp_path / "STS-B"), "--out-dir", str(tmp_path / "out-sts"),
                   "--predict", str(tmp_path / "STS-B" / "dev.tsv"), *common])
    lines = (tmp_path / "out-sts" / "dev_predictions.tsv").read_text().splitlines()[1:]
    gpt, head, tokenizer, best = saved_model(tmp_path / "out-sts" / "best.pt")
    with torch.no_grad():
        states = [extract_states(gpt, transform(tokenizer, "similarity", [a, b], 64))
                  for a, b, _ in pairs]
    expected = [head(both_orders.sum(0)).item() for both_orders in states]
    predicted = [float(line.split("\t")[1]) for line in lines]
    assert predicted == pytest.approx(expected, abs=1e-4)  # written with 4 decimals
    labels = [score for _, _, score in pairs]
    pearson = torch.corrcoef(torch.tensor([expected, labels]))[0, 1].item()
    # abs 1e-4: the untrained model's predictions lie close together, so float32 rounding in them
    # moves the correlation by ~1e-5 (the tokenizer is trained on README.md: it changes with it)
    assert best["metrics"]["pearson"] == pytest.approx(pearson, abs=1e-4)


# ---------------------------------------------------------------- metrics

def test_metrics_against_hand_computations():
    answers, labels = [1, 1, 0, 0, 1, 0, 1, 1], [1, 0, 0, 1, 1, 0, 1, 0]  # tp 3, fp 2, fn 1, tn 2
    assert finetune.metrics(answers, labels, "f1") == pytest.approx({"f1": 6 / 9, "accuracy": 5 / 8})
    assert finetune.metrics(answers, labels, "matthews")["matthews"] == pytest.approx((3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3))
    x, y = [1.0, 2.0, 2.0, 5.0, 3.0], [2.0, 1.0, 4.0, 4.0, 5.0]
    mx, my = sum(x) / 5, sum(y) / 5
    pearson = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    rank_x, rank_y = [0, 1.5, 1.5, 4, 3], [1, 0, 2.5, 2.5, 4]  # ties share their average rank
    scores = finetune.metrics(x, y, "pearson")
    assert scores["pearson"] == pytest.approx(pearson)
    assert scores["spearman"] == pytest.approx(finetune.pearson(torch.tensor(rank_x), torch.tensor(rank_y)))
    assert finetune.ranks(torch.tensor(x)).tolist() == rank_x


# ---------------------------------------------------------------- readers

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_glue_layouts_of_the_tasks_not_in_shared_data(tmp_path):
    cola = write(tmp_path / "cola.tsv", "gj04\t1\t\tThe boy ran .\ngj04\t0\t*\tRan boy the .\n")  # no header
    assert finetune.read_examples(cola, "cola", ["0", "1"]) == [(["The boy ran ."], 1), (["Ran boy the ."], 0)]
    cola_test = write(tmp_path / "cola_test.tsv", "index\tsentence\n0\tThe boy ran .\n")
    assert finetune.read_examples(cola_test, "cola", ["0", "1"], need_labels=False) == [(["The boy ran ."], None)]
    stsb = write(tmp_path / "stsb.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                                        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n")
    assert finetune.read_examples(stsb, "stsb", None) == [(["A plane is taking off.", "An air plane is taking off."], 5.0)]
    mnli = write(tmp_path / "MNLI" / "dev_matched.tsv", "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                 "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
                 "0\t1\t1n\tfiction\t(x)\t(y)\t(X)\t(Y)\tThe cat sat.\tA cat sat.\tentailment\tentailment\tneutral\tentailment\tentailment\tentailment\n")
    write(tmp_path / "MNLI" / "train.tsv", mnli.read_text())
    train, dev = finetune.task_examples(finetune.FinetuneConfig(task="mnli", data=str(tmp_path / "MNLI")), ["contradiction", "entailment", "neutral"])
    assert train == dev == [(["The cat sat.", "A cat sat."], 1)]
    qnli = write(tmp_path / "qnli.tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\t\"Me\", he said.\tnot_entailment\n")
    assert finetune.read_examples(qnli, "qnli", ["entailment", "not_entailment"]) == [(["Who?", '"Me", he said.'], 1)]
    qqp = write(tmp_path / "qqp.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tWhy?\tHow?\t0\n")
    assert finetune.read_examples(qqp, "qqp", ["0", "1"]) == [(["Why?", "How?"], 0)]


def test_real_mrpc_rte_and_rocstories_files():
    mrpc = finetune.read_examples(needs(GLUE / "MRPC" / "dev.tsv"), "mrpc", ["0", "1"])  # header with a BOM
    assert len(mrpc) == 408 and sum(label for _, label in mrpc) == 279
    rte = finetune.read_examples(needs(GLUE / "RTE" / "dev.tsv"), "rte", ["entailment", "not_entailment"])
    assert len(rte) == 277 and sum(label == 0 for _, label in rte) == 146
    train, dev = finetune.task_examples(finetune.FinetuneConfig(task="rocstories", data=str(needs(ROCSTORIES))), None)
    assert len(train) == 1497 and len(dev) == 374  # finetune-transformer-lm's split sizes
    (context, choices), label = dev[0]
    assert context.count(".") >= 4 and len(choices) == 2 and label in (0, 1)


def test_custom_jsonl_of_each_kind(tmp_path):
    rows = {"custom-classification": {"text": "good", "label": "positive"},
            "custom-entailment": {"premise": "It rains.", "hypothesis": "It is wet.", "label": "yes"},
            "custom-similarity": {"a": "hi", "b": "hello", "label": 1},
            "custom-multiple-choice": {"context": "Pick one.", "choices": ["a", "b", "c"], "label": 2}}
    for task, row in rows.items():
        file = write(tmp_path / task / "train.jsonl", json.dumps(row) + "\n")
        config = finetune.FinetuneConfig(task=task, data=str(file.parent))
        labels = None if task.endswith("choice") else finetune.training_labels(config)
        examples = finetune.read_examples(file, task, labels)
        assert examples[0][1] == (2 if labels is None else 0) and labels in (None, (str(row["label"]),))


# ---------------------------------------------------------------- zero-shot (GPT-2 section 3)

def test_zero_shot_score_is_the_summed_log_probability_of_the_answer(tokenizer):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.preset("gpt-nano", vocab_size=tokenizer.vocab_size)).eval()
    prompt = tokenizer.encode_ordinary("the model reads text\nSentiment:")
    answers = [tokenizer.encode_ordinary(" positive"), tokenizer.encode_ordinary(" the text and the model")]
    scores = finetune.log_likelihoods(gpt, prompt, answers)
    for answer, score in zip(answers, scores):
        sequence = prompt + answer
        logits, _ = gpt(torch.tensor([sequence]))
        probabilities = torch.softmax(logits[0].double(), dim=-1)
        by_hand = sum(math.log(probabilities[t - 1, sequence[t]].item()) for t in range(len(prompt), len(sequence)))
        assert score == pytest.approx(by_hand, abs=1e-4)
    assert finetune.zero_shot_answer(gpt, tokenizer, "sst2", ["the model reads text"]) == \
        max((0, 1), key=lambda k: finetune.log_likelihoods(gpt, prompt, [tokenizer.encode_ordinary([" negative", " positive"][k])])[0])


def test_zero_shot_runs_on_rte_dev(tmp_path, checkpoint, capsys):
    """The accuracy is that of the likelier label word, " True" or " False", after the prompt, each
    scored with its own forward pass over the last block_size tokens (40 real RTE dev rows)."""
    lines = needs(GLUE / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    write(tmp_path / "RTE" / "train.tsv", "".join(lines[:41]))
    dev = write(tmp_path / "RTE" / "dev.tsv", "".join(lines[:41]))  # the header and 40 rows
    scores = finetune.main(["--task", "rte", "--data", str(tmp_path / "RTE"), "--zero-shot",
                            "--init-from", str(checkpoint), "--device", "cpu"])
    assert "zero-shot on 40 dev examples" in capsys.readouterr().out
    saved = torch.load(checkpoint, weights_only=True)
    gpt, tokenizer = GPT.from_checkpoint_dict(saved).eval(), Tokenizer.loads(saved["tokenizer"])
    template, words = finetune.PROMPTS["rte"]
    correct = 0
    examples = finetune.read_examples(dev, "rte", ["entailment", "not_entailment"])
    for (premise, hypothesis), label in examples:
        prompt = tokenizer.encode_ordinary(template.format(premise, hypothesis))
        log_likelihoods = []
        for word in words:
            answer = tokenizer.encode_ordinary(word)
            sequence = (prompt + answer)[-gpt.config.block_size:]
            with torch.no_grad():
                log_probs = F.log_softmax(gpt(torch.tensor([sequence]))[0][0].double(), dim=-1)
            log_likelihoods.append(sum(log_probs[t - 1, sequence[t]].item()
                                       for t in range(len(sequence) - len(answer), len(sequence))))
        correct += max(range(len(words)), key=log_likelihoods.__getitem__) == label
    assert scores["accuracy"] == pytest.approx(correct / 40)


# ---------------------------------------------------------------- errors

def one_line_error(argv):
    with pytest.raises(SystemExit) as exit:
        finetune.main(argv)
    message = str(exit.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_malformed_rows_name_the_file_and_line_or_are_skipped(tmp_path, checkpoint, capsys):
    bad = write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t7\nno label\n   \t0\nfine\t0\n")
    with pytest.raises(ValueError, match=r"train.tsv: line 3: label '7' is not one of \['0', '1'\] \(and 2 more\)"):
        finetune.read_examples(bad, "sst2", ["0", "1"])
    assert len(finetune.read_examples(bad, "sst2", ["0", "1"], skip_bad_rows=True)) == 2
    assert "skipped 3 malformed rows" in capsys.readouterr().out
    jsonl = write(tmp_path / "custom" / "train.jsonl", '{"text": "ok", "label": 1}\n{"text": 3, "label": 1}\n{oops\n')
    message = one_line_error(["--task", "custom-classification", "--data", str(jsonl.parent), "--init-from", str(checkpoint)])
    assert "train.jsonl: line 2: empty or missing text" in message and "--skip-bad-rows" in message


def test_bad_command_lines_give_one_line_errors(tmp_path, checkpoint):
    assert "choose one of" in one_line_error(["--task", "imdb", "--data", str(tmp_path)])
    assert "no such checkpoint" in one_line_error(["--task", "sst2", "--data", str(tmp_path), "--init-from", str(tmp_path / "none.pt")])
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert "cannot be read" in one_line_error(["--task", "sst2", "--data", str(tmp_path), "--init-from", str(tmp_path / "broken.pt")])
    assert "not found" in one_line_error(["--task", "sst2", "--data", str(tmp_path), "--init-from", str(checkpoint)])
    assert "expected a folder" in one_line_error(["--task", "rte", "--data", str(tmp_path / "x.tsv"), "--init-from", str(checkpoint)])
    assert "--data is needed" in one_line_error(["--task", "sst2", "--init-from", str(checkpoint)])
    assert "--zero-shot works for" in one_line_error(["--task", "stsb", "--data", str(tmp_path), "--init-from", str(checkpoint), "--zero-shot"])
