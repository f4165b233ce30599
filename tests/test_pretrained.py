"""Starting from the real GPT-2 and GPT-1 (gpt.py's from_pretrained and resolve_model): Hub names
through a fake Hugging Face cache, GPT-1 in Hugging Face's format and in OpenAI's original release,
each checked against transformers' OpenAIGPTLMHeadModel; then finetune.py and sample.py on GPT-1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import finetune
import sample
from bpe import GPT1Tokenizer, Tokenizer
from gpt import GPT, GPTConfig, resolve_model
from shared_data import DATA, ROCSTORIES, needs

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=2, n_head=2, n_embd=128, n_positions=16, vocab_size=101)  # heads of 64: GPT-1


def random_hf_gpt1(cls=None, **overrides):
    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(**{**TINY, **overrides})
    return (cls or transformers.OpenAIGPTLMHeadModel)(config).eval()


def logits_difference(model, hf, vocab_size=101, length=16):
    idx = torch.randint(0, vocab_size, (2, length))
    with torch.no_grad():
        return (model(idx)[0] - hf(idx).logits).abs().max().item()


# ---------------------------------------------------------------- GPT-1 in Hugging Face's format

@pytest.mark.parametrize("afn", ["gelu", "relu", "silu"])
def test_gpt1_folder_gives_the_logits_of_openai_gpt_lm_head_model(tmp_path, afn):
    hf = random_hf_gpt1(afn=afn)
    hf.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path).eval()
    assert model.config.ln_position == "post" and model.config.block_size == 16
    assert logits_difference(model, hf) <= 1e-4
    # modeling_openai.ACT_FNS["gelu"] is the tanh form: erf's differs by up to 5e-4, not seen above
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(model.transformer.h[0].mlp.act(x), hf.transformer.h[0].mlp.act(x))


def test_gpt1_base_model_without_the_transformer_prefix(tmp_path):
    hf = random_hf_gpt1(transformers.OpenAIGPTModel)  # OpenAI's own conversion wrote this class
    hf.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        assert "tokens_embed.weight" in weights.keys()
    model = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        assert (model.hidden_states(idx) - hf(idx).last_hidden_state).abs().max().item() <= 1e-4


@pytest.mark.parametrize("activation", ["gelu_tanh", "relu"])
def test_save_pretrained_writes_gpt1_that_transformers_opens(tmp_path, activation):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=128, block_size=16, vocab_size=101,
                          ln_position="post", activation=activation)).eval()
    model.save_pretrained(tmp_path)
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path).eval()
    assert logits_difference(model, hf) <= 1e-4
    with pytest.raises(ValueError, match="afn"):  # no name for erf's GELU in GPT-1's format
        GPT(GPTConfig(**{**model.config.__dict__, "activation": "gelu"})).save_pretrained(tmp_path)


# ---------------------------------------------------------------- GPT-1 as OpenAI released it

def release_shapes(n_layer=2, n_ctx=16, n_vocab=101, n_embd=128):
    block = [[1, n_embd, 3 * n_embd], [3 * n_embd], [1, n_embd, n_embd], [n_embd], [n_embd],
             [n_embd], [1, n_embd, 4 * n_embd], [4 * n_embd], [1, 4 * n_embd, n_embd], [n_embd],
             [n_embd], [n_embd]]
    return [[n_ctx, n_embd], [n_vocab, n_embd]] + block * n_layer


def test_the_small_release_has_the_layout_of_the_real_one():
    real = json.loads(needs(DATA / "gpt1" / "params_shapes.json").read_text())
    assert release_shapes(n_layer=12, n_ctx=512, n_vocab=40478, n_embd=768) == real


def release_arrays(n_layer=2, seed=0):
    """Random arrays in the order and shapes of params_shapes.json (GPT-1's model, smaller)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 0.1 + (0.5 if len(shape) == 1 else 0)).astype(np.float32)
            for shape in release_shapes(n_layer)]


def write_release(folder, arrays):
    """As finetune-transformer-lm's train.py reads them: shapes in params_shapes.json, the arrays
    flattened, concatenated and cut into ten .npy shards."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    for i, shard in enumerate(np.array_split(flat, 10)):
        np.save(folder / f"params_{i}.npy", shard)
    return folder


def hf_model_from_release(arrays, n_layer=2):
    """The reference: the arrays put into OpenAIGPTLMHeadModel by Hugging Face's documented
    mapping (load_tf_weights_in_openai_gpt): positions, tokens, then per block
    attn/c_attn w b, attn/c_proj w b, ln_1 g b, mlp/c_fc w b, mlp/c_proj w b, ln_2 g b."""
    hf = random_hf_gpt1(n_layer=n_layer)
    t = [torch.from_numpy(a).squeeze(0) for a in arrays]  # Conv1D keeps the (in, out) layout
    state = {"transformer.positions_embed.weight": t[0], "transformer.tokens_embed.weight": t[1],
             "lm_head.weight": t[1]}
    names = ["attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
             "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
             "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"]
    for layer in range(n_layer):
        for j, name in enumerate(names):
            state[f"transformer.h.{layer}.{name}"] = t[2 + 12 * layer + j]
    hf.load_state_dict(state)
    return hf


def test_original_release_gives_the_logits_of_the_same_arrays_in_hugging_face(tmp_path):
    arrays = release_arrays()
    model = GPT.from_pretrained(write_release(tmp_path / "model", arrays)).eval()
    config = model.config
    assert (config.n_head, config.ln_position, config.activation) == (2, "post", "gelu_tanh")
    assert logits_difference(model, hf_model_from_release(arrays)) <= 1e-4


def test_broken_releases_are_named(tmp_path):
    folder = write_release(tmp_path / "model", release_arrays(n_layer=1))
    (folder / "params_3.npy").rename(tmp_path / "aside.npy")
    with pytest.raises(FileNotFoundError, match=r"params_3.npy is missing"):
        GPT.from_pretrained(folder)
    np.save(folder / "params_3.npy", np.load(tmp_path / "aside.npy")[:-5])  # five numbers short
    with pytest.raises(ValueError, match=r"hold [\d,]+ numbers, params_shapes.json lists"):
        GPT.from_pretrained(folder)
    (folder / "params_3.npy").write_bytes((tmp_path / "aside.npy").read_bytes()[:-40])  # cut short
    with pytest.raises(ValueError, match=r"params_3.npy cannot be read"):
        GPT.from_pretrained(folder)


def test_folders_of_neither_format_and_unknown_model_types_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json .* or params_shapes.json"):
        GPT.from_pretrained(tmp_path)
    random_hf_gpt1().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama' is neither"):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="openai-gpt"):  # the accepted forms are listed
        resolve_model(tmp_path / "missing")


def test_from_pretrained_also_reads_a_train_py_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("gpt-nano", vocab_size=101)).eval()
    torch.save({"model": model.state_dict(), "config": vars(model.config)}, tmp_path / "ckpt.pt")
    idx = torch.randint(0, 101, (1, 16))
    again = GPT.from_pretrained(tmp_path / "ckpt.pt").eval()
    torch.testing.assert_close(again(idx)[0], model(idx)[0])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt cannot be read"):
        GPT.from_pretrained(tmp_path / "bad.pt")


# ---------------------------------------------------------------- Hub names, through the cache only

def fake_hub_snapshot(cache, name):
    """huggingface_hub's cache layout: models--ORG--NAME/refs/main names a snapshot folder."""
    repo, commit = cache / f"models--openai-community--{name}", "0123456789abcdef" * 2 + "01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def offline_run(args, tmp_path, **env):
    """A script run with the network forbidden (HF_HUB_OFFLINE=1) and its own cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | env
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


def test_hub_name_loads_from_the_cache_under_hf_home_without_network(tmp_path):
    pytest.importorskip("huggingface_hub")
    gpt2_files = needs(DATA / "gpt2")
    snapshot = fake_hub_snapshot(tmp_path / "home" / "hub", "gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32)
    hf = transformers.GPT2LMHeadModel(config)
    hf.eval().save_pretrained(snapshot)
    (snapshot / "vocab.json").write_bytes((gpt2_files / "encoder.json").read_bytes())
    (snapshot / "merges.txt").write_bytes((gpt2_files / "vocab.bpe").read_bytes())
    run = offline_run(["sample.py", "--init-from", "gpt2", "--prompt", "Hello world", "--greedy",
                       "--max-new-tokens", "6", "--no-stream", "--device", "cpu"],
                      tmp_path, HF_HOME=str(tmp_path / "home"))
    assert run.returncode == 0, run.stderr
    tok = Tokenizer.from_gpt2(snapshot / "vocab.json", snapshot / "merges.txt")
    expected = hf.generate(torch.tensor([tok.encode("Hello world")]), max_new_tokens=6,
                           do_sample=False, pad_token_id=50256)[0, 2:].tolist()
    assert run.stdout == "Hello world" + tok.decode(expected) + "\n"


def test_hub_name_offline_and_not_cached_is_one_line_naming_the_model(tmp_path):
    pytest.importorskip("huggingface_hub")
    run = offline_run(["sample.py", "--init-from", "gpt2-xl", "--prompt", "Hello"], tmp_path,
                      HF_HUB_CACHE=str(tmp_path / "empty"))
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "gpt2-xl is not in the Hugging Face cache" in run.stderr
    assert "HF_HUB_OFFLINE" in run.stderr


# ---------------------------------------------------------------- finetune.py, sample.py on GPT-1

@pytest.fixture(scope="module")
def gpt1_hub_cache(tmp_path_factory):
    """openai-gpt in a fake Hub cache: a small random GPT-1 with the real 512 positions and the
    real 40,478-token vocabulary, as Hugging Face's openai-community/openai-gpt folder holds it."""
    pytest.importorskip("huggingface_hub")
    vocab = needs(DATA / "gpt1")
    cache = tmp_path_factory.mktemp("hub")
    snapshot = fake_hub_snapshot(cache, "openai-gpt")
    hf = random_hf_gpt1(n_layer=1, n_embd=64, n_head=1, n_positions=512, vocab_size=40478)
    hf.save_pretrained(snapshot)
    (snapshot / "vocab.json").write_bytes((vocab / "encoder_bpe_40000.json").read_bytes())
    (snapshot / "merges.txt").write_bytes((vocab / "vocab_40000.bpe").read_bytes())
    return cache


def gpt1_snapshot(cache):
    return next((cache / "models--openai-community--openai-gpt" / "snapshots").iterdir())


def test_finetune_from_openai_gpt_has_gpt1s_tokenizer_positions_tokens(tmp_path, gpt1_hub_cache):
    """GPT-1 section 3.3 on ROCStories, started by name: GPT-1's ids, 512 positions, and
    <|start|>, <|delim|>, <|extract|> as ids 40478-40480, after the vocabulary, as in
    finetune-transformer-lm."""
    run = offline_run(["finetune.py", "--task", "rocstories", "--init-from", "openai-gpt",
                       "--data", str(needs(ROCSTORIES)), "--max-train-rows", "8", "--epochs", "1",
                       "--lm-coef", "0", "--out-dir", str(tmp_path / "out"), "--device", "cpu"],
                      tmp_path, HF_HUB_CACHE=str(gpt1_hub_cache))
    assert run.returncode == 0, run.stderr
    best = torch.load(tmp_path / "out" / "best.pt", weights_only=True)
    assert best["config"]["block_size"] == 512 and best["config"]["vocab_size"] == 40481
    tokenizer = Tokenizer.loads(best["tokenizer"])
    assert isinstance(tokenizer, GPT1Tokenizer)
    start, delim, extract = (tokenizer.special_tokens[token]
                             for token in (finetune.START, finetune.DELIM, finetune.EXTRACT))
    assert (start, delim, extract) == (40478, 40479, 40480)
    hf_tokenizer = transformers.OpenAIGPTTokenizer.from_pretrained(gpt1_snapshot(gpt1_hub_cache))
    story = "Karen was assigned a roommate her first year of college."
    ending = "Karen became good friends with her roommate."
    expected = [40478, *hf_tokenizer.encode(story), 40479, *hf_tokenizer.encode(ending), 40480]
    assert finetune.transform(tokenizer, "multiple-choice", [story, [ending]], 512) == [expected]


def test_sample_from_gpt1_continues_the_prompts_last_word(tmp_path, gpt1_hub_cache, capsys):
    snapshot = gpt1_snapshot(gpt1_hub_cache)
    sample.main(["--init-from", str(snapshot), "--prompt", "The night was", "--greedy",
                 "--max-new-tokens", "3", "--no-stream", "--device", "cpu"])
    out = capsys.readouterr().out
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(snapshot).eval()
    tokenizer = transformers.OpenAIGPTTokenizer.from_pretrained(snapshot)
    ids = tokenizer.encode("The night was")
    expected = hf.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)[0, len(ids):]
    words = "".join(tokenizer.convert_ids_to_tokens(expected.tolist())).replace("</w>", " ")
    assert out == "The night was " + words + "\n"  # lowercase words, a space after each


def test_sample_init_from_a_checkpoint_file_equals_out_dir(tmp_path, capsys):
    tokenizer = Tokenizer.train((ROOT / "README.md").read_text(encoding="utf-8"), 300,
                                special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("gpt-nano", vocab_size=tokenizer.vocab_size))
    torch.save({"model": model.state_dict(), "config": vars(model.config),
                "tokenizer": tokenizer.dumps()}, tmp_path / "ckpt.pt")
    common = ["--prompt", "The model", "--greedy", "--max-new-tokens", "8", "--no-stream"]
    sample.main(["--out-dir", str(tmp_path), *common])
    first = capsys.readouterr().out
    sample.main(["--init-from", str(tmp_path / "ckpt.pt"), *common])
    assert capsys.readouterr().out == first and first.startswith("The model")
