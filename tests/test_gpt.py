"""gpt.py checked against independent references: Hugging Face's GPT-2 and GPT-1
(OpenAI GPT) implementations and attention written out in plain PyTorch."""

import json
import math
import types

import pytest
import torch

import gpt
from gpt import GPT, MLP, GPTConfig, dispatch_attention

try:
    import transformers
except ImportError:  # only the comparisons with Hugging Face need it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not "
                                        "installed: the comparisons with Hugging Face skip")

TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=101)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


# --- configuration and size -------------------------------------------------


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="gpt2-medium"):
        GPTConfig.preset("gpt3")


@needs_transformers
@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_gpt2_parameter_counts_match_hugging_face(name):
    config = GPTConfig.preset(name)
    hf_config = transformers.GPT2Config(n_layer=config.n_layer, n_head=config.n_head,
                                        n_embd=config.n_embd, n_positions=config.block_size)
    with torch.device("meta"):  # shapes only
        ours = GPT(config).num_params()
        theirs = transformers.GPT2LMHeadModel(hf_config).num_parameters()
    assert ours == theirs
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168,
                "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    assert ours == expected[name]


def test_table_2_of_the_gpt2_paper_counts_gpt1_vocabulary():
    sizes = []
    for name in ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]:
        with torch.device("meta"):
            sizes.append(round(GPT(GPTConfig.preset(name, vocab_size=40478)).num_params() / 1e6))
    assert sizes == [117, 345, 762, 1542]


def test_initialization_scales_residual_projections():
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=32, vocab_size=512))
    blocks = model.transformer.h
    assert blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for proj in (blocks[0].attn.c_proj, blocks[0].mlp.c_proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.05)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_post_ln_model_has_no_final_layernorm():
    model = tiny_gpt(ln_position="post")
    assert not any(name.startswith("transformer.ln_f") for name in model.state_dict())


def test_loss_is_cross_entropy_of_the_logits():
    """GPT-1 section 3.1: the mean of -log P(target | context) over the positions, written out; a
    target of -1 (padding, e.g. finetune.py's batches) is left out of the mean."""
    model = tiny_gpt()
    idx = torch.randint(0, 101, (2, 16))
    targets = torch.randint(0, 101, (2, 16))
    targets[1, 11:] = -1
    logits, loss = model(idx, targets)
    log_probs = logits.double().log_softmax(dim=-1)
    kept = [(b, t) for b in range(2) for t in range(16) if targets[b, t] != -1]
    expected = -sum(log_probs[b, t, targets[b, t]] for b, t in kept) / len(kept)
    assert len(kept) == 27 and loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_loss_in_chunks_has_the_loss_and_gradients_of_the_logits():
    """return_logits=False (train.py on a CPU) computes the loss in chunks of 1,024 rows (their
    softmax 128 rows at a time) and takes its gradient on the way (gpt.LinearCrossEntropy);
    checked against F.cross_entropy of the whole logits, through autograd. 2,500 rows: three
    chunks, the last one short, and so is its last piece; padding targets of -1."""
    torch.manual_seed(0)
    h = torch.randn(2500, 32, requires_grad=True)
    weight = (0.3 * torch.randn(101, 32)).requires_grad_()
    targets = torch.randint(0, 101, (2500,))
    targets[::9] = -1
    expected = torch.nn.functional.cross_entropy(h @ weight.T, targets, ignore_index=-1)
    expected_h, expected_weight = torch.autograd.grad(2.5 * expected, (h, weight))
    loss = gpt.linear_cross_entropy(h, weight, targets)
    grad_h, grad_weight = torch.autograd.grad(2.5 * loss, (h, weight))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(grad_h, expected_h, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_weight, expected_weight, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # evaluation: the loss alone
        assert gpt.linear_cross_entropy(h, weight, targets).item() == pytest.approx(expected.item(),
                                                                                    rel=1e-6)
    with pytest.raises(ValueError, match="or -1 to ignore"):  # e.g. Hugging Face's -100
        gpt.linear_cross_entropy(h, weight, targets.masked_fill(targets == -1, -100))
    # Under bfloat16 autocast, as F.cross_entropy of autocast's bfloat16 logits: close, not equal.
    with torch.autocast("cpu", torch.bfloat16):
        loss = gpt.linear_cross_entropy(h, weight, targets)
    grad_h, grad_weight = torch.autograd.grad(loss, (h, weight))
    assert loss.item() == pytest.approx(expected.item(), abs=2e-3)
    torch.testing.assert_close(grad_weight, expected_weight / 2.5, rtol=0.02, atol=2e-4)
    # And the model gives the same loss either way.
    model = tiny_gpt()
    idx, targets = torch.randint(0, 101, (2, 16)), torch.randint(0, 101, (2, 16))
    assert model(idx, targets, return_logits=False)[1].item() == pytest.approx(
        model(idx, targets)[1].item(), rel=1e-6)
    # with the same gradients, into the tied embedding too (read by wte and lm_head)
    model(idx, targets, return_logits=False)[1].backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(idx, targets)[1].backward()
    for got, expected in zip(chunked, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)

def tanh_gelu(x):
    """GELU with the tanh approximation (Hendrycks & Gimpel 2016, section 2), as OpenAI's GPT-1 and
    GPT-2 code computes it: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("name", ["gpt1", "gpt2"])
def test_mlp_uses_the_tanh_gelu(name):
    """The MLP's activation where it differs from the exact (erf) GELU, by up to 1e-3 at inputs of
    order 1; at the 0.02 scale of a fresh model the two agree to 1e-6: a model test cannot tell."""
    torch.manual_seed(0)
    mlp = MLP(GPTConfig.preset(name, n_embd=32, n_head=4)).double().eval()  # GPT-1 has dropout
    x = torch.randn(5, 32, dtype=torch.float64)
    hidden = mlp.c_fc(x)
    assert hidden.abs().max() > 1  # where the two GELUs differ
    torch.testing.assert_close(mlp(x), mlp.c_proj(tanh_gelu(hidden)), rtol=1e-12, atol=1e-12)


# --- attention backends and the KV cache ------------------------------------


def reference_attention(q, k, v):
    """Causal attention, one query at a time: query i of T_q sees keys 0 .. T_k - T_q + i."""
    T_q, T_k = q.size(-2), k.size(-2)
    out = torch.empty_like(q)
    for i in range(T_q):
        last = T_k - T_q + i
        w = torch.softmax(q[..., i:i + 1, :] @ k[..., :last + 1, :].transpose(-2, -1) / q.size(-1) ** 0.5, -1)
        out[..., i:i + 1, :] = w @ v[..., :last + 1, :]
    return out


@pytest.mark.parametrize("backend", ["math", "sdpa", "auto"])
@pytest.mark.parametrize("T_q,T_k", [(7, 7), (1, 9), (3, 9)])
def test_attention_backends_match_reference(backend, T_q, T_k):
    torch.manual_seed(0)
    q = torch.randn(2, 3, T_q, 8)
    k, v = torch.randn(2, 3, T_k, 8), torch.randn(2, 3, T_k, 8)
    torch.testing.assert_close(dispatch_attention(q, k, v, backend), reference_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_math_attention_gradients_and_bfloat16_match_reference():
    """The math path is what a CPU trains with under bfloat16 autocast: its gradients (float64, with
    a KV cache's offset) and its bfloat16 output are checked against the loop above."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 8, dtype=torch.float64, requires_grad=True)
               for T in (5, 9, 9))
    grads = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    got = torch.autograd.grad(dispatch_attention(q, k, v, "math"), (q, k, v), grads)
    expected = torch.autograd.grad(reference_attention(q, k, v), (q, k, v), grads)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    q, k, v = (t.detach().float() for t in (q, k, v))
    with torch.autocast("cpu", torch.bfloat16):
        out = dispatch_attention(q, k, v, "auto")  # "auto" takes the math path here
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference_attention(q, k, v), rtol=0.02, atol=0.02)


def test_unknown_backend_is_a_clear_error():
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(ValueError, match="unknown attention backend"):
        dispatch_attention(q, q, q, "flash")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            dispatch_attention(q, q, q, "triton")
    # where the kernel does not apply (attention dropout), "triton" falls back to SDPA
    torch.manual_seed(0)
    expected = torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.5, is_causal=True)
    torch.manual_seed(0)
    torch.testing.assert_close(dispatch_attention(q, q, q, "triton", dropout=0.5), expected)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernels_in_the_model_match_pytorch_on_gpu():
    """On a GPU the model runs kernels/ (flash attention and LayerNorm): same loss and gradients
    as the plain PyTorch model on the CPU."""
    pytest.importorskip("triton")
    idx = torch.randint(0, 101, (2, 16))
    losses, grads = [], []
    for device, backend in (("cpu", "math"), ("cuda", "triton"), ("cuda", "auto")):
        model = tiny_gpt().train().to(device)
        model.attention = backend
        _, loss = model(idx.to(device), idx.to(device))
        loss.backward()
        losses.append(loss.item())
        grads.append(model.transformer.h[0].attn.c_attn.weight.grad.cpu())
    for loss, grad in zip(losses[1:], grads[1:]):
        assert loss == pytest.approx(losses[0], rel=1e-4)
        torch.testing.assert_close(grad, grads[0], atol=1e-4, rtol=1e-3)


def test_kernels_are_an_attribute_of_the_model():
    """model.kernels = False switches every LayerNorm to PyTorch's (train.py --no-kernels); a model
    grown by add_tokens keeps the choice."""
    from gpt import LayerNorm, add_tokens
    from bpe import ENDOFTEXT, Tokenizer
    model = GPT(GPTConfig(**{**TINY, "vocab_size": 256}), kernels=False)
    layer_norms = [m for m in model.modules() if isinstance(m, LayerNorm)]
    assert len(layer_norms) == 2 * TINY["n_layer"] + 1 and not any(m.kernel for m in layer_norms)
    model.kernels = True
    assert all(m.kernel for m in layer_norms)
    model.kernels = False
    grown, _ = add_tokens(model, Tokenizer({}), [ENDOFTEXT])  # 256 bytes, then <|endoftext|>
    assert not grown.kernels and not any(m.kernel for m in grown.modules()
                                         if isinstance(m, LayerNorm))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_without_kernels_the_model_calls_none_of_them(monkeypatch):
    import gpt
    pytest.importorskip("triton")
    kernels, calls = gpt.triton_kernels(), []
    spy = lambda name: (lambda *args, **kwargs: calls.append(name)
                        or getattr(kernels, name)(*args, **kwargs))
    monkeypatch.setattr(gpt, "triton_kernels", lambda: types.SimpleNamespace(
        flash_attention=spy("flash_attention"), layer_norm=spy("layer_norm")))
    model = tiny_gpt().cuda()
    idx = torch.randint(0, 101, (2, 16), device="cuda")
    model(idx)
    assert set(calls) == {"flash_attention", "layer_norm"}
    calls.clear()
    model.kernels = False
    model(idx)
    assert calls == []


@pytest.mark.parametrize("ln_position", ["pre", "post"])
def test_model_logits_same_for_every_backend(ln_position):
    model = tiny_gpt(ln_position=ln_position)
    idx = torch.randint(0, 101, (3, 16))
    model.attention = "math"
    expected, _ = model(idx)
    model.attention = "sdpa"
    torch.testing.assert_close(model(idx)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ln_position", ["pre", "post"])
@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_kv_cache_gives_the_same_logits_as_a_full_forward(backend, ln_position):
    model = tiny_gpt(ln_position=ln_position)
    model.attention = backend
    idx = torch.randint(0, 101, (2, 16))
    full, _ = model(idx)
    cache = model.new_kv_cache()
    pieces = [model(idx[:, :5], kv_cache=cache)[0]]  # a prompt of 5 tokens, then one at a time
    pieces += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_input_longer_than_context_is_an_error():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


# --- Hugging Face checkpoints -----------------------------------------------


def random_hf_gpt2(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=16, vocab_size=101)
    return transformers.GPT2LMHeadModel(config).eval()


@needs_transformers
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_from_pretrained_matches_hugging_face_logits(tmp_path, safe):
    hf = random_hf_gpt2()
    hf.save_pretrained(tmp_path)
    if not safe:
        # transformers 5 only writes safetensors: write the older pickle format ourselves.
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    model = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = model(idx)
    assert (logits - expected).abs().max().item() < 1e-4


@needs_transformers
def test_from_pretrained_matches_hugging_face_at_realistic_weight_scales(tmp_path):
    """Released GPT-2 weights are far from the 0.02 of initialization. At 10 times that scale the
    MLP's inputs are of order 1, where the exact and tanh GELUs move the logits by ~1e-3: Hugging
    Face's gelu_new (the tanh form, GPT-2's) must be read as ours."""
    hf = random_hf_gpt2()
    with torch.no_grad():
        for parameter in hf.parameters():
            if parameter.dim() == 2:
                parameter.mul_(10)
    hf.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        assert (model(idx)[0] - hf(idx).logits).abs().max().item() < 1e-4


@needs_transformers
def test_save_pretrained_opens_in_transformers(tmp_path):
    hf = random_hf_gpt2()
    hf.save_pretrained(tmp_path / "hf")
    model = GPT.from_pretrained(tmp_path / "hf").eval()
    model.save_pretrained(tmp_path / "ours")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    idx = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        assert (back(idx).logits - hf(idx).logits).abs().max().item() < 1e-4


def test_a_model_trained_here_round_trips(tmp_path):
    model = tiny_gpt()
    model.save_pretrained(tmp_path)
    again = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 101, (1, 16))
    torch.testing.assert_close(again(idx)[0], model(idx)[0])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    tiny_gpt().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GPT.from_pretrained(tmp_path)


def test_corrupt_weights_are_named(tmp_path):
    tiny_gpt().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors cannot be read"):
        GPT.from_pretrained(tmp_path)


def test_mismatched_config_is_named(tmp_path):
    tiny_gpt().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_embd"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wte.weight has shape"):
        GPT.from_pretrained(tmp_path)


@needs_transformers
def test_post_ln_block_matches_hugging_face_gpt1():
    """GPT-1 (ln_position="post") against transformers' OpenAI GPT, weights copied across."""
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        n_layer=2, n_head=4, n_embd=32, n_positions=16, vocab_size=101, afn="gelu")).eval()  # "gelu" is the tanh form there
    model = tiny_gpt(ln_position="post")
    state = {}
    for name, w in hf.state_dict().items():
        name = name.replace("tokens_embed", "wte").replace("positions_embed", "wpe")
        state[name] = w.t() if name.endswith(GPT.CONV1D) else w
    model.load_state_dict(state)
    idx = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        assert (model(idx)[0] - hf(idx).logits).abs().max().item() < 1e-4
