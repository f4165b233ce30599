"""Decoding strategies in sample.py, checked by their defining property against a
full (uncached) forward pass or brute force, and the command line end to end."""

import itertools
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bpe import Tokenizer
from gpt import GPT, GPTConfig
from sample import (apply_repetition_penalty, beam_search, encode_prompt, filter_logits, generate,
                    main, stop_strings, write_sample)

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

def tiny_gpt(seed=0, vocab_size=101, block_size=16):
    """A random model in float64, so cached and uncached logits agree to ~1e-15 and no
    argmax is decided by rounding."""
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=vocab_size)
    return GPT(config).double().eval()


def prompt(batch=1, length=4, vocab_size=101, seed=1):
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- the KV cache -------------------------------------------------------------


def test_greedy_with_cache_equals_without_also_past_the_context():
    model = tiny_gpt()  # block_size 16: 40 new tokens go well past it
    idx = prompt(batch=3)
    cached = generate(model, idx, 40, temperature=0, use_kv_cache=True)
    uncached = generate(model, idx, 40, temperature=0, use_kv_cache=False)
    assert cached.shape == (3, 44)
    assert torch.equal(cached, uncached)


def test_sampling_with_cache_equals_without():
    model = tiny_gpt()
    idx = prompt(batch=2)
    a = generate(model, idx, 30, top_k=20, generator=torch.Generator().manual_seed(5))
    b = generate(model, idx, 30, top_k=20, generator=torch.Generator().manual_seed(5), use_kv_cache=False)
    assert torch.equal(a, b)


# --- sampling strategies --------------------------------------------------------


def logits_before_each_new_token(model, out, prompt_length):
    """Reference: one full forward pass over the finished sequences."""
    logits, _ = model(out)
    return logits[:, prompt_length - 1:-1, :]


def nucleus(probs, top_p):
    """Holtzman et al. 2019, section 3.1: the smallest set of most likely tokens whose probabilities
    add up to at least top_p; the token whose probability crosses top_p is in it."""
    kept, mass = [], 0.0
    for token in probs.argsort(descending=True).tolist():
        kept.append(token)
        mass += probs[token].item()
        if mass >= top_p:
            break
    return kept


def ctrl_penalty(logits, context, penalty):
    """CTRL (Keskar et al. 2019) section 4.1: the logit of a token already in the context is divided
    by the penalty when it is positive and multiplied by it when it is negative."""
    logits = logits.clone()
    for token in set(context):
        logits[token] = logits[token] / penalty if logits[token] > 0 else logits[token] * penalty
    return logits


def reference_distribution(logits, context, temperature=1.0, top_k=None, top_p=None,
                           repetition_penalty=1.0):
    """What the next token is drawn from, written out for one row: the penalty, the temperature,
    then the k most likely tokens (Fan et al. 2018) and the nucleus of the tempered distribution."""
    probs = F.softmax(ctrl_penalty(logits, context, repetition_penalty) / temperature, dim=-1)
    kept = probs.argsort(descending=True)[:top_k].tolist() if top_k else list(range(len(probs)))
    if top_p is not None:
        renormalized = torch.zeros_like(probs)
        renormalized[kept] = probs[kept] / probs[kept].sum()
        kept = nucleus(renormalized, top_p)
    out = torch.zeros_like(probs)
    out[kept] = probs[kept] / probs[kept].sum()
    return out


def greedy_reference(model, ids, steps, penalty=1.0, stop=None):
    """Greedy decoding written out: a full forward pass over the last block_size tokens for every
    new token, CTRL's penalty on every token seen so far; the new tokens, up to `stop`."""
    ids, new = list(ids), []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(torch.tensor([ids[-model.config.block_size:]]))[0][0, -1]
        token = ctrl_penalty(logits, ids, penalty).argmax().item()
        if token == stop:
            break
        ids.append(token)
        new.append(token)
    return new


def test_top_k_never_emits_a_token_outside_the_k_most_likely():
    model = tiny_gpt()
    out = generate(model, prompt(batch=8), 12, top_k=3, temperature=2.0,
                   generator=torch.Generator().manual_seed(0))
    logits = logits_before_each_new_token(model, out, 4)
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == out[:, 4:, None]).any(dim=-1).all()


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(top_p):
    torch.manual_seed(0)
    logits = torch.randn(20, 50, dtype=torch.float64) * 2
    kept = filter_logits(logits, top_p=top_p) > float("-inf")
    for row, keep in zip(F.softmax(logits, dim=-1), kept):
        order = row.argsort(descending=True).tolist()
        mass, smallest = 0.0, []
        for token in order:  # take the most likely tokens until their mass reaches p
            smallest.append(token)
            mass += row[token].item()
            if mass >= top_p:
                break
        assert set(keep.nonzero().flatten().tolist()) == set(smallest)


def test_top_p_samples_stay_in_the_nucleus():
    model = tiny_gpt()
    out = generate(model, prompt(batch=8), 12, top_p=0.2, generator=torch.Generator().manual_seed(0))
    probs = F.softmax(logits_before_each_new_token(model, out, 4), dim=-1)
    for row_probs, row_tokens in zip(probs, out[:, 4:].tolist()):
        assert all(token in nucleus(p, 0.2) for p, token in zip(row_probs, row_tokens))


SAMPLING = {"penalty": dict(repetition_penalty=3.0), "cold-top-p": dict(temperature=0.5, top_p=0.6),
            "hot-top-k": dict(temperature=2.0, top_k=5),
            "all": dict(temperature=0.7, top_k=40, top_p=0.5, repetition_penalty=1.5)}


@pytest.mark.parametrize("name", SAMPLING)
def test_each_token_is_drawn_from_the_distribution_the_options_define(name, monkeypatch):
    """The probabilities generate() hands to torch.multinomial, step by step, against the
    distribution written out in reference_distribution: the penalty (logits of both signs),
    temperature before top-k / top-p, and the token that crosses top_p kept."""
    model, sampled_from, multinomial = tiny_gpt(), [], torch.multinomial

    def spy(probs, num_samples, generator=None):
        sampled_from.append(probs)
        return multinomial(probs, num_samples, generator=generator)

    monkeypatch.setattr(torch, "multinomial", spy)
    generator = torch.Generator().manual_seed(0)
    out = generate(model, prompt(batch=2), 6, generator=generator, **SAMPLING[name])
    assert len(sampled_from) == 6
    for step, probs in enumerate(sampled_from):
        context = out[:, :4 + step]
        logits = model(context)[0][:, -1]
        for row in range(2):
            expected = reference_distribution(logits[row], context[row].tolist(), **SAMPLING[name])
            torch.testing.assert_close(probs[row], expected.float())  # sampled in float32


def test_greedy_with_repetition_penalty_follows_ctrl():
    model, idx = tiny_gpt(), prompt(batch=1)
    out = generate(model, idx, 12, temperature=0, repetition_penalty=5.0)
    expected = greedy_reference(model, idx[0].tolist(), 12, penalty=5.0)
    assert out[0, 4:].tolist() == expected != greedy_reference(model, idx[0].tolist(), 12)


def test_temperature_towards_zero_equals_greedy():
    model = tiny_gpt()
    idx = prompt(batch=4)
    greedy = generate(model, idx, 12, temperature=0)
    cold = generate(model, idx, 12, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, greedy)
    logits = logits_before_each_new_token(model, greedy, 4)
    assert torch.equal(greedy[:, 4:], logits.argmax(dim=-1))  # greedy is the argmax of a full forward


def test_a_fixed_seed_reproduces_and_another_seed_differs():
    model = tiny_gpt()
    idx = prompt(batch=2)
    runs = [generate(model, idx, 20, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_repetition_penalty_follows_ctrl():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen = torch.tensor([[0, 1, 1]])
    expected = torch.tensor([[1.0, -4.0, 1.0, 0.5]])  # positive / 2, negative * 2, unseen kept
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), expected)


def test_generation_stops_when_every_row_has_stopped():
    model = tiny_gpt()
    idx = prompt(batch=2)
    free = generate(model, idx, 10, temperature=0)
    stop = free[0, 6].item()  # make the third new token of row 0 a stop token
    out = generate(model, idx, 10, temperature=0, stop_ids=[stop])
    for row, free_row in zip(out[:, 4:].tolist(), free[:, 4:].tolist()):
        end = free_row.index(stop) + 1 if stop in free_row else len(free_row)
        assert row[:end] == free_row[:end]
        assert all(token == stop for token in row[end:])  # filled up after stopping
    stopped = [r.index(stop) + 1 if stop in r else 10 for r in free[:, 4:].tolist()]
    assert out.size(1) == 4 + max(stopped)


# --- beam search ----------------------------------------------------------------


def test_beam_search_of_width_1_is_greedy():
    model = tiny_gpt()
    idx = prompt()
    greedy = generate(model, idx, 30, temperature=0)
    assert torch.equal(beam_search(model, idx, 30, beam_width=1), greedy)
    stop = greedy[0, 10].item()
    assert torch.equal(beam_search(model, idx, 30, 1, stop_ids=[stop]),
                       generate(model, idx, 30, temperature=0, stop_ids=[stop])[:, :11])


def test_wide_beam_finds_the_most_likely_sequence_by_brute_force():
    model = tiny_gpt(vocab_size=5)
    idx = prompt(vocab_size=5)
    best, best_logprob = None, float("-inf")
    for continuation in itertools.product(range(5), repeat=3):
        seq = torch.cat([idx, torch.tensor([continuation])], dim=1)
        logprobs = F.log_softmax(model(seq)[0], dim=-1)[0, 3:-1]
        total = logprobs.gather(-1, seq[0, 4:, None]).sum().item()
        if total > best_logprob:
            best, best_logprob = seq, total
    assert torch.equal(beam_search(model, idx, 3, beam_width=25), best)  # 25 = every 2-token prefix


def test_beam_search_divides_by_length_to_the_penalty():
    """Finished sequences compete by log P / length**length_penalty (Wu et al. 2016, section 7,
    simplified). 64 beams keep every continuation of a 5-token vocabulary for 3 steps, so beam
    search must return the best of them all by that score: short answers win at 0, long at 2."""
    model, idx, stop = tiny_gpt(vocab_size=5), prompt(vocab_size=5), 0
    candidates = [(*tokens, stop) for length in (0, 1, 2)
                  for tokens in itertools.product(range(1, 5), repeat=length)]
    candidates += list(itertools.product(range(1, 5), repeat=3))  # still going after max_new_tokens

    def log_prob(continuation):
        sequence = torch.cat([idx, torch.tensor([continuation])], dim=1)
        log_probs = F.log_softmax(model(sequence)[0], dim=-1)[0, 3:-1]
        return log_probs.gather(-1, sequence[0, 4:, None]).sum().item()

    winners = []
    for length_penalty in (0.0, 1.0, 2.0):
        best = max(candidates, key=lambda c: log_prob(c) / len(c) ** length_penalty)
        found = beam_search(model, idx, 3, 64, length_penalty=length_penalty, stop_ids=[stop])
        assert found[0, 4:].tolist() == list(best), length_penalty
        winners.append(best)
    assert len(winners[0]) < len(winners[2])


def test_beam_search_with_cache_equals_without():
    model = tiny_gpt()
    idx = prompt()
    assert torch.equal(beam_search(model, idx, 30, 4), beam_search(model, idx, 30, 4, use_kv_cache=False))


# --- streaming output -------------------------------------------------------------


def byte_tokenizer():
    return Tokenizer.train("hello world", vocab_size=257, special_tokens=["<|endoftext|>"])  # bytes only


def test_stream_cuts_before_the_stop_string_and_keeps_split_characters(capsys):
    tok = byte_tokenizer()
    tokens = tok.encode_ordinary("naïve café STOP never printed")
    write_sample(tok, tokens, ["STOP"], stream=True)
    assert capsys.readouterr().out == "naïve café \n"


def test_stop_strings_default_to_the_end_of_a_python_definition_and_read_escapes():
    assert "\n\n\n" in stop_strings(None)  # two blank lines end a top-level def or class (PEP 8)
    assert stop_strings(["\\n\\n", "café", "", "\\t中"]) == ["\n\n", "café", "\t中"]  # as a shell passes them
    assert stop_strings([""]) == []  # none: run for --max-new-tokens


# --- the command line -------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """A tiny checkpoint in train.py's format: model, config and tokenizer."""
    out_dir = tmp_path_factory.mktemp("out")
    tok = Tokenizer.train("the quick brown fox jumps over the lazy dog. " * 20, vocab_size=270,
                          special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=tok.vocab_size)
    model = GPT(config)
    torch.save({"model": model.state_dict(), "config": asdict(config), "tokenizer": tok.dumps(),
                "step": 0}, out_dir / "ckpt.pt")
    return out_dir


def test_cli_end_to_end(checkpoint_dir):
    command = [sys.executable, "sample.py", "--out-dir", str(checkpoint_dir), "--prompt", "the quick",
               "--max-new-tokens", "20", "--seed", "1", "--num-samples", "2", "--top-k", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread above
    runs = [subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout.startswith("the quick")
    assert runs[0].stdout == runs[1].stdout  # --seed reproduces


def run_main(args, capsys):
    main(args)
    return capsys.readouterr()


def test_cli_greedy_equals_beam_1(checkpoint_dir, capsys):
    base = ["--out-dir", str(checkpoint_dir), "--prompt", "the lazy", "--max-new-tokens", "15", "--no-stream"]
    assert run_main(base + ["--greedy"], capsys).out == run_main(base + ["--beam", "1"], capsys).out


def test_cli_samples_at_temperature_0_8_from_the_50_likeliest_tokens_unless_told(checkpoint_dir,
                                                                                  monkeypatch):
    """As train.py's closing sample (nanoGPT's temperature too): a small model's tail of unlikely tokens
    is mostly noise. --temperature 1 --top-k 0 samples the model's own distribution."""
    import sample
    asked = []
    monkeypatch.setattr(sample, "generate_stream",
                        lambda model, idx, n, **sampling: asked.append(sampling) or iter(()))
    base = ["--out-dir", str(checkpoint_dir), "--prompt", "the", "--no-stream"]
    main(base)
    main(base + ["--temperature", "1", "--top-k", "0"])
    assert (asked[0]["temperature"], asked[0]["top_k"]) == (0.8, 50)
    assert (asked[1]["temperature"], asked[1]["top_k"]) == (1.0, 0)
    logits = torch.randn(1, 300)
    assert torch.equal(sample.filter_logits(logits, top_k=0), logits)  # 0: every token stays


def load(checkpoint_dir):
    checkpoint = torch.load(checkpoint_dir / "ckpt.pt", weights_only=True)
    return GPT.from_checkpoint_dict(checkpoint).eval(), Tokenizer.loads(checkpoint["tokenizer"])


def test_cli_empty_prompt_and_long_prompt(checkpoint_dir, capsys):
    base = ["--out-dir", str(checkpoint_dir), "--max-new-tokens", "5", "--no-stream", "--greedy"]
    model, tok = load(checkpoint_dir)
    empty = run_main(base + ["--prompt", ""], capsys).out  # starts from <|endoftext|>
    assert empty == tok.decode(greedy_reference(model, [tok.eot_id], 5, stop=tok.eot_id)) + "\n"
    long = "the lazy dog jumps over the quick brown fox. " * 2 + "the quick brown fox"
    ids = tok.encode(long)
    assert len(ids) > 32 and ids[:32] != ids[-32:]
    captured = run_main(base + ["--prompt", long], capsys)
    assert "keeping the last 32" in captured.err  # the context is 32 tokens: the model sees the end
    continuation = greedy_reference(model, ids[-32:], 5, stop=tok.eot_id)
    assert captured.out == long + tok.decode(continuation) + "\n"
    assert encode_prompt(tok, long, 32) == ids[-32:]


def test_cli_repetition_penalty_follows_ctrl(checkpoint_dir, capsys):
    model, tok = load(checkpoint_dir)
    out = run_main(["--out-dir", str(checkpoint_dir), "--prompt", "the quick", "--no-stream",
                    "--max-new-tokens", "12", "--greedy", "--repetition-penalty", "5"], capsys).out
    ids = tok.encode("the quick")
    expected = greedy_reference(model, ids, 12, penalty=5.0, stop=tok.eot_id)
    assert out == "the quick" + tok.decode(expected) + "\n"
    assert expected != greedy_reference(model, ids, 12, stop=tok.eot_id)  # the penalty matters


def test_cli_ends_the_sample_at_endoftext(tmp_path, checkpoint_dir, capsys):
    """<|endoftext|> separates the documents a GPT-2 is trained on: a sample ends where the model
    writes it, and the token itself is not printed."""
    checkpoint = torch.load(checkpoint_dir / "ckpt.pt", weights_only=True)
    model, tok = load(checkpoint_dir)
    ids = tok.encode("the quick")
    greedy = greedy_reference(model, ids, 4)
    assert greedy[3] not in greedy[:3]
    # <|endoftext|>'s (tied) embedding made 1.01 times the fourth greedy token's: it wins there
    wte = checkpoint["model"]["transformer.wte.weight"].clone()
    wte[tok.eot_id] = 1.01 * wte[greedy[3]]
    checkpoint["model"]["transformer.wte.weight"] = checkpoint["model"]["lm_head.weight"] = wte
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    ending = GPT.from_checkpoint_dict(checkpoint).eval()
    assert greedy_reference(ending, ids, 4) == greedy[:3] + [tok.eot_id]
    out = run_main(["--out-dir", str(tmp_path), "--prompt", "the quick", "--max-new-tokens", "10",
                    "--greedy", "--no-stream"], capsys).out
    assert out == "the quick" + tok.decode(greedy[:3]) + "\n"


def test_cli_stops_after_a_definition_unless_told_otherwise(checkpoint_dir, capsys, monkeypatch):
    """After the default run (Python's source) `--prompt "def "` prints one function, not a text cut
    mid-line: the model's tokens are made up here, the rest is sample.py's command line."""
    _, tok = load(checkpoint_dir)
    base = ["--out-dir", str(checkpoint_dir), "--prompt", "def ", "--no-stream"]
    for text in ("f():\n\n    return 1\n\n\nx = 1\n",  # PEP 8: two blank lines
                 "f():\n    return 1\n\n@cache\ndef g():\n"):  # one, before the next definition
        ids = tok.encode_ordinary(text)
        monkeypatch.setattr("sample.generate_stream", lambda *args, **kwargs: (torch.tensor([t]) for t in ids))
        assert run_main(base, capsys).out == "def " + text[:text.index("return 1") + 8] + "\n"
        assert run_main(base + ["--stop", ""], capsys).out == "def " + text + "\n"  # none
    assert run_main(base + ["--stop", "\\n@"], capsys).out == "def f():\n    return 1\n\n"  # as a shell passes it


@pytest.mark.parametrize("make_bad", ["missing", "garbage", "truncated"])
def test_cli_bad_checkpoint_is_a_one_line_error(tmp_path, checkpoint_dir, make_bad):
    if make_bad == "garbage":
        (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    elif make_bad == "truncated":
        data = (checkpoint_dir / "ckpt.pt").read_bytes()
        (tmp_path / "ckpt.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as exit_info:
        main(["--out-dir", str(tmp_path), "--prompt", "hi"])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "python train.py" in message


GPT2_FILES = ROOT.parent / "shared" / "data" / "gpt2"


def test_cli_init_from_a_hugging_face_directory(tmp_path, capsys):
    if not (GPT2_FILES / "encoder.json").is_file():
        pytest.skip(f"GPT-2 vocabulary files not found in {GPT2_FILES}")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32))
    hf.eval().save_pretrained(tmp_path)  # the layout of a Hugging Face snapshot folder
    (tmp_path / "vocab.json").write_bytes((GPT2_FILES / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((GPT2_FILES / "vocab.bpe").read_bytes())
    out = run_main(["--init-from", str(tmp_path), "--prompt", "Hello world", "--max-new-tokens", "8",
                    "--greedy", "--no-stream"], capsys).out
    # The reference: greedy decoding with transformers itself, decoded by our tokenizer.
    tok = Tokenizer.from_gpt2(tmp_path / "vocab.json", tmp_path / "merges.txt")
    ids = torch.tensor([tok.encode("Hello world")])
    expected = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=50256)[0, 2:].tolist()
    if 50256 in expected:
        expected = expected[:expected.index(50256)]
    assert out == "Hello world" + tok.decode(expected) + "\n"


def test_cli_missing_tokenizer_next_to_weights_is_named(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16)).save_pretrained(tmp_path)
    with pytest.raises(SystemExit, match="vocab.json is missing"):
        main(["--init-from", str(tmp_path), "--prompt", "hi"])
