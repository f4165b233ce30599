"""GPT-1 and GPT-2 in one readable file.

Papers:
  GPT-1: Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training"
  GPT-2: Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"

Read top to bottom: the configuration, attention, the transformer block, the model, pretrained
weights (checkpoints, Hugging Face's GPT-2 and GPT-1, GPT-1's original release, Hub names), and
a smoke test (`python gpt.py`).
Text generation (greedy, sampling, beam search) lives in sample.py; it uses the KV cache
of GPT.forward, which keeps the cost of each new token flat (figures in bench/RESULTS.md).
"""

import dataclasses
import functools
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from bpe import Tokenizer, first_line, load_tokenizer


# -----------------------------------------------------------------------------
# Configuration


@dataclass
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # the context length: how many tokens the model can look at
    vocab_size: int = 50257  # GPT-2's BPE: 256 bytes + 50,000 merges + <|endoftext|>
    dropout: float = 0.0
    bias: bool = True  # biases in the Linear layers and LayerNorms, as in GPT-1 and GPT-2
    ln_position: str = "pre"  # "post" (GPT-1): LayerNorm after the residual add; "pre" (GPT-2)
    activation: str = "gelu_tanh"  # "gelu_tanh" (GPT-1, GPT-2), "gelu" (exact, erf), "relu", "silu"

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.ln_position not in ("pre", "post"):
            raise ValueError(f"ln_position must be 'pre' or 'post', not {self.ln_position!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"not {self.activation!r}")

    @classmethod
    def preset(cls, name, **overrides):
        """A named configuration, e.g. GPTConfig.preset("gpt2", dropout=0.1)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS = {
    # GPT-1 (section 4.1 of the paper): 12 layers, 768 wide, 12 heads, 512 tokens of context,
    # dropout 0.1, GELU, and a BPE vocabulary of 40,000 merges (40,478 tokens in OpenAI's
    # release). Here GPT-1 is normally trained with our own tokenizer: override vocab_size.
    "gpt1": dict(n_layer=12, n_head=12, n_embd=768, block_size=512, vocab_size=40478,
                 dropout=0.1, ln_position="post"),
    # GPT-2 (Table 2 of the paper), named by their true sizes (`python gpt.py` prints them).
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # Small models that train on a laptop CPU (GPT-2's architecture); vocab_size: your tokenizer's.
    "gpt-mini": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.1),
    "gpt-micro": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
    # train.py's defaults on a CPU, in bfloat16 and in float32 (bench/sweep.py: at their budget, two
    # wide layers beat more narrow ones); the exact GELU, as nanoGPT's, because PyTorch's CPU kernel
    # of the tanh one is 5x slower
    "gpt-tiny": dict(n_layer=2, n_head=4, n_embd=256, block_size=256, activation="gelu"),
    "gpt-tiny-128": dict(n_layer=2, n_head=4, n_embd=128, block_size=256, activation="gelu"),
    "gpt-nano": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
}


# -----------------------------------------------------------------------------
# Attention


def attend(q, k, v, dropout=0.0):
    """softmax(Q Kᵀ / √d + mask) V for (batch, n_head, length, head_size) tensors (Vaswani et al.
    2017, section 3.2.1), spelled out. GPUs compute the same with faster kernels; on a CPU under
    bfloat16 autocast this is what the model trains with (see dispatch_attention, at the end of
    this file), so it is written with an eye on speed too.

    The causal mask lets each query see its own position and everything before it: it is added
    to the scores, 0 where a query may look and -inf where it may not (softmax makes those 0).
    With a KV cache, k and v hold past positions too: query i of T_q is then
    position (T_k - T_q + i), and it sees keys 0 .. T_k - T_q + i.
    """
    *batch, T_q, head_size = q.shape
    T_k = k.size(-2)
    # -inf where key j > T_k - T_q + i: triu keeps the entries with j - i >= its diagonal
    mask = torch.full((T_q, T_k), float("-inf"), dtype=q.dtype, device=q.device)
    mask = mask.triu(diagonal=T_k - T_q + 1)
    # Every head of every sequence as one batch of matrices (reshape copies q, k and v, which
    # arrive as transposed views). baddbmm adds Q Kᵀ / √d onto the mask in one call, where
    # product, scale and masked_fill were three passes over the T x T scores, and bmm reads
    # transposed operands in place, where the 4-d matmuls' backward copied the scores
    # (bench/RESULTS.md: attention 1.3 to 1.6 times as fast on a CPU in bfloat16).
    q, k, v = (t.reshape(-1, t.size(-2), head_size) for t in (q, k, v))
    att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=1 / math.sqrt(head_size))
    att = F.dropout(F.softmax(att, dim=-1), p=dropout)
    return torch.bmm(att, v).view(*batch, T_q, head_size)


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention (Vaswani et al. 2017, section 3.2)."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v: one
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, backend="auto", past=None):
        """Returns the output and the (keys, values) of all positions so far, for the cache."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): each head attends on its own slice of C.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        y = dispatch_attention(q, k, v, backend, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), (k, v)


# -----------------------------------------------------------------------------
# The transformer block


# OpenAI's GPT-1 and GPT-2 code computes GELU with the tanh approximation; the exact erf GELU
# (nanoGPT's choice) gives slightly wrong logits with released weights. GPT-1's code also offered
# ReLU and swish (SiLU), and Hugging Face's GPT-1 configs may name them.
ACTIVATIONS = {"gelu_tanh": functools.partial(nn.GELU, approximate="tanh"), "gelu": nn.GELU,
               "relu": nn.ReLU, "silu": nn.SiLU}


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wider inside (GPT-1 section 4.1: 3072 = 4 * 768)."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Attention then MLP, each wrapped in a residual connection and a LayerNorm.

    GPT-1 puts the LayerNorm after the residual add ("post-LN", as in the original
    Transformer). GPT-2 section 2.3 moves it to the input of each sub-block ("pre-LN"),
    which leaves a clean residual path from the embeddings to the output and trains
    deep models more stably.
    """

    def __init__(self, config):
        super().__init__()
        self.post_ln = config.ln_position == "post"
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, backend="auto", past=None):
        if self.post_ln:
            a, present = self.attn(x, backend, past)
            x = self.ln_1(x + a)
            x = self.ln_2(x + self.mlp(x))
        else:
            a, present = self.attn(self.ln_1(x), backend, past)
            x = x + a
            x = x + self.mlp(self.ln_2(x))
        return x, present


# -----------------------------------------------------------------------------
# The loss, computed in chunks

class LinearCrossEntropy(torch.autograd.Function):
    """The mean cross-entropy of softmax(h Wᵀ) against targets, and its gradients, without ever
    holding all the logits: a small model's logits are its largest tensor (4,096 tokens x 4,096
    words: 64 MB in float32, more than the rest of the step's activations together), and on a CPU
    writing and re-reading them costs more than the multiplications that make them. The
    gradients are computed right here: the loss is a scalar, so backward only scales them, and
    the logits are never made twice. The cost: both gradients are held until backward. Liger
    Kernel's fused linear cross-entropy does the same; Apple's Cut Cross-Entropy (Wijmans et al.
    2024) recomputes the logits in backward instead.

    For a row with logits z = h Wᵀ and target t: loss = logsumexp(z) - z_t, and
    ∂loss/∂z = softmax(z) - onehot(t), so ∂loss/∂h = (softmax(z) - onehot(t)) W and
    ∂loss/∂W = (softmax(z) - onehot(t))ᵀ h, summed over rows. Targets of -1 are left out.

    Two sizes of chunk: the products take 1,024 rows at a time (fewer rows leave the CPU's
    matrix units idle: 256 rows ran at half the rate), and the softmax 128 of those rows at a
    time, in float32 (a few MB, where the whole chunk would be 16 MB; 64 rows were slower);
    ∂loss/∂z overwrites the logits it came from, in the products' dtype."""

    @staticmethod
    def forward(ctx, h, weight, targets, with_grad, chunk_rows=1024, softmax_rows=128):
        # Under autocast (bfloat16 on a CPU with AMX) the products run in its dtype, the softmax
        # in float32, as autocast does for F.cross_entropy.
        device = h.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
        w = weight.to(dtype)
        count = (targets != -1).sum()
        loss = torch.zeros((), device=h.device)
        if with_grad:
            grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        for start in range(0, h.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            h_rows, t_rows = h[rows].to(dtype), targets[rows]
            logits = h_rows @ w.T
            for piece in range(0, len(logits), softmax_rows):
                z, t = logits[piece:piece + softmax_rows], t_rows[piece:piece + softmax_rows]
                ignored, t = (t == -1).nonzero()[:, 0], t.clamp(min=0)
                log_p = torch.log_softmax(z, dim=-1, dtype=torch.float32)
                loss -= log_p.gather(1, t[:, None]).index_fill_(0, ignored, 0).sum()
                if with_grad:
                    grad = log_p.exp_()  # softmax(z), in place
                    grad[torch.arange(len(t), device=t.device), t] -= 1  # - onehot(t)
                    grad.index_fill_(0, ignored, 0)  # rows without a target add nothing
                    z.copy_(grad)  # the logits' rows become ∂loss/∂z
            if with_grad:
                grad_h[rows] = logits @ w
                grad_w += logits.T @ h_rows
        count = count.clamp(min=1)  # every target ignored: a loss of 0, not 0 / 0
        if with_grad:
            ctx.save_for_backward(grad_h.div_(count), grad_w.div_(count))
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None, None


def linear_cross_entropy(h, weight, targets):
    """F.cross_entropy(h @ weight.T, targets, ignore_index=-1), in chunks (LinearCrossEntropy)."""
    if targets.numel() and targets.min() < -1:  # F.cross_entropy would refuse them too
        raise ValueError(f"target {targets.min().item()}: targets are token ids, or -1 to ignore")
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    if not with_grad:
        # evaluation: a row without a target needs no logits (train.py's evaluate_whole scores
        # only the second half of each window after the first)
        kept = targets != -1
        h, targets = h[kept], targets[kept]
    return LinearCrossEntropy.apply(h, weight, targets, with_grad)


# -----------------------------------------------------------------------------
# The model


class GPT(nn.Module):
    """A decoder-only transformer language model.

    attention: how attention is computed, "auto" | "math" | "sdpa" | "triton" (see
    dispatch_attention); kernels: whether LayerNorm and "auto" attention run the Triton kernels of
    kernels/ on a GPU (False: PyTorch's own, to compare). Both change speed, not results, and can
    be changed any time: model.attention = "math", model.kernels = False.
    """

    def __init__(self, config, attention="auto", kernels=True):
        super().__init__()
        self.config = config
        self.attention = attention
        # The names follow OpenAI's GPT-2 checkpoint, so loading it is a plain loop.
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            # GPT-2 section 2.3 adds a LayerNorm after the last block; post-LN GPT-1 ends on one.
            ln_f=LayerNorm(config.n_embd, bias=config.bias) if config.ln_position == "pre"
            else nn.Identity(),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (GPT-1 section 3.1, P(u) = softmax(h W_eᵀ)): the output layer reuses
        # the token embedding matrix, so a token is read and written with the same vector.
        self.transformer.wte.weight = self.lm_head.weight

        # Initialization: N(0, 0.02) everywhere (GPT-1 section 4.1), and GPT-2 section 2.3 scales
        # the weights of the layers that write into the residual stream by 1/sqrt(N), N = the
        # number of residual layers (2 per block), so that the stream's variance does not grow
        # with depth.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.kernels = kernels

    @property
    def kernels(self):
        return self._kernels

    @kernels.setter
    def kernels(self, on):
        self._kernels = on
        for module in self.modules():
            if isinstance(module, LayerNorm):
                module.kernel = on

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self):
        """Number of parameters: every weight and bias, position embeddings included, and the
        token embedding counted once although the output layer shares it (nanoGPT's count
        leaves the position embeddings out)."""
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self):
        """An empty KV cache: one slot per layer for the (keys, values) of past positions."""
        return [None] * self.config.n_layer

    def forward(self, idx, targets=None, *, kv_cache=None, return_logits=True):
        """idx: (B, T) token ids. Returns logits (B, T, vocab_size) and the mean cross-entropy
        loss against targets (B, T) if given (targets of -1 are ignored).

        kv_cache: None, or a list from new_kv_cache(), filled in place. The keys and values of
        every position are kept there, so the next call only feeds the new tokens: idx is then
        the continuation of what the cache has seen, at positions past .. past + T - 1.

        return_logits=False, with targets: the logits are not returned (None), and the loss is
        computed in chunks that never hold them all (LinearCrossEntropy: train.py does so on a CPU).
        """
        h = self.hidden_states(idx, kv_cache=kv_cache)
        if targets is not None and not return_logits:
            return None, linear_cross_entropy(h.flatten(0, 1), self.lm_head.weight,
                                              targets.reshape(-1))
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def hidden_states(self, idx, *, kv_cache=None):
        """The final hidden states h_n (B, T, n_embd) that the output layer reads (after ln_f).
        GPT-1's fine-tuning (section 3.2) puts its task head on them instead."""
        B, T = idx.size()
        past = 0 if kv_cache is None or kv_cache[0] is None else kv_cache[0][0].size(2)
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size "
                             f"{self.config.block_size}; crop the input (sample.py does)")
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        attention = "sdpa" if self.attention == "auto" and not self.kernels else self.attention
        for i, block in enumerate(self.transformer.h):
            x, present = block(x, attention, None if kv_cache is None else kv_cache[i])
            if kv_cache is not None:
                kv_cache[i] = present
        return self.transformer.ln_f(x)

    # -------------------------------------------------------------------------
    # Checkpoints: ours (train.py, finetune.py), Hugging Face's GPT-2 and GPT-1, GPT-1's release

    @classmethod
    def from_checkpoint_dict(cls, checkpoint, **overrides):
        """The model stored in a train.py checkpoint: {"model": state_dict, "config": dict, ...}."""
        model = cls(GPTConfig(**{**checkpoint["config"], **overrides}))
        model.load_state_dict(checkpoint["model"])
        return model

    # Hugging Face stores these four as Conv1D, a Linear with the weight transposed.
    CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

    @classmethod
    def from_pretrained(cls, spec, **overrides):
        """The model that `spec` names (any form of resolve_model): a train.py or finetune.py
        checkpoint, a Hugging Face folder of GPT-2 or GPT-1 (config.json plus model.safetensors
        or pytorch_model.bin, e.g. a snapshot folder in ~/.cache/huggingface), GPT-1's original
        release folder, or a Hub name. Only a Hub name that is not in the cache uses the network.
        overrides: GPTConfig fields to change, e.g. dropout=0.1."""
        path = resolve_model(spec)
        if path.is_file():
            return cls.from_checkpoint_dict(read_checkpoint(path), **overrides)
        release = (path / "params_shapes.json").is_file()
        config, state, source = (read_openai_release if release else read_hugging_face)(path)
        model = cls(dataclasses.replace(config, **overrides))
        with torch.no_grad():
            for name, param in model.named_parameters():  # lm_head.weight is wte.weight: once
                key = name.removeprefix("transformer.")
                if key not in state:
                    raise ValueError(f"{source} has no tensor {key!r}: not GPT-2 or GPT-1?")
                weight = state[key].t() if name.endswith(cls.CONV1D) else state[key]
                if weight.shape != param.shape:
                    raise ValueError(f"{source}: {key} has shape {tuple(weight.shape)}, its config "
                                     f"implies {tuple(param.shape)}")
                param.copy_(weight)
        return model

    def save_pretrained(self, path):
        """Write config.json and model.safetensors in Hugging Face's format: GPT-2's for a pre-LN
        model, GPT-1's ("openai-gpt") for a post-LN one, so that transformers' GPT2LMHeadModel or
        OpenAIGPTLMHeadModel.from_pretrained(path) opens the model."""
        from safetensors.torch import save_file
        config = self.config
        model_type = "gpt2" if config.ln_position == "pre" else "openai-gpt"
        key, _, names, _ = HF_FORMATS[model_type]
        if not config.bias or config.activation not in names.values():
            raise ValueError(f"Hugging Face's {model_type} needs biases and an activation that its "
                             f"{key} names ({', '.join(names)}); this model has "
                             f"bias={config.bias}, activation={config.activation!r}")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        hf_config = dict(model_type=model_type, n_layer=config.n_layer, n_head=config.n_head,
                         n_embd=config.n_embd, n_positions=config.block_size,
                         vocab_size=config.vocab_size, resid_pdrop=config.dropout,
                         embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                         layer_norm_epsilon=1e-5, tie_word_embeddings=True)
        hf_config[key] = next(name for name, ours in names.items() if ours == config.activation)
        hf_config["architectures"] = ["GPT2LMHeadModel" if model_type == "gpt2"
                                      else "OpenAIGPTLMHeadModel"]
        (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        state = {}
        for name, param in self.named_parameters():  # the tied lm_head is not stored twice
            weight = param.detach().t() if name.endswith(self.CONV1D) else param.detach()
            if model_type == "openai-gpt":
                name = name.replace(".wte.", ".tokens_embed.").replace(".wpe.", ".positions_embed.")
            state[name] = weight.to("cpu").contiguous()
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})


# -----------------------------------------------------------------------------
# Finding and reading pretrained weights: the one place that turns --init-from into weights

HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "openai-gpt")  # openai-community/NAME
MODEL_FORMS = ("a checkpoint of train.py or finetune.py (out/ckpt.pt), a Hugging Face folder of "
               "GPT-2 or GPT-1 (DIR or gpt2:DIR), GPT-1's release folder (params_shapes.json + "
               f"params_*.npy), or a Hugging Face Hub name: {', '.join(HUB_NAMES)}")
INIT_FROM_HELP = f"the model to start from: {MODEL_FORMS}"  # train.py, finetune.py, sample.py


def resolve_model(spec):
    """The file or folder that `spec` names on this machine: a Hub name is looked up in (or added
    to) the Hugging Face cache; `gpt2:DIR`, the older spelling of a folder, is DIR. A folder that
    shares a Hub name is reached as ./gpt2."""
    spec = str(spec)
    if spec in HUB_NAMES:
        return hub_snapshot(spec)
    path = Path(spec.removeprefix("gpt2:")).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such checkpoint file or model folder; give "
                                f"{MODEL_FORMS}")
    return path


HUB_FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]  # no other formats


def hub_snapshot(name):
    """The local folder of openai-community/NAME in the Hugging Face cache (HF_HOME, HF_HUB_CACHE),
    downloaded on first use. huggingface_hub is imported only here: it is worth installing for the
    cache that every Hugging Face tool shares, downloads that resume, and HF_HUB_OFFLINE."""
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError(f"{name}: the Hub needs `pip install huggingface_hub`, or give a local "
                         "folder with the model") from None
    repo = f"openai-community/{name}"
    try:  # the cache first: a model downloaded once loads with no network at all
        folder = Path(huggingface_hub.snapshot_download(repo, allow_patterns=HUB_FILES,
                                                        local_files_only=True))
        if all((folder / file).is_file() for file in HUB_FILES):
            return folder
    except FileNotFoundError:  # not in the cache, or only part of it
        pass
    cache = huggingface_hub.constants.HF_HUB_CACHE
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ValueError(f"{name} is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE=1 "
                         f"forbids downloading it: run once without HF_HUB_OFFLINE to fetch {repo}")
    try:
        return Path(huggingface_hub.snapshot_download(repo, allow_patterns=HUB_FILES))
    except Exception as error:  # no network, a proxy, a full disk: say what and where
        raise ValueError(f"cannot download {repo} into {cache} ({first_line(error)[:200]}); check "
                         "the network, or give a local folder with the model") from None


def read_checkpoint(path, fix=None):
    """A checkpoint of train.py or finetune.py, read with torch.load(weights_only=True): tensors,
    numbers and strings, never code. torch's advice on failure, to retry with weights_only=False,
    would run whatever the file holds: it is never repeated. fix: what the user can do about it."""
    fix = fix or f"give {MODEL_FORMS}"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "GLOBAL" in str(error):  # a class or function the safe unpickler refuses to import
            problem = "holds objects other than tensors (they can run code): it will not be loaded"
        else:  # torch's reason, but not the unpickler's: it advises the unsafe flag
            reason = ("" if isinstance(error, pickle.UnpicklingError)
                      else f" ({first_line(error)[:200]})")
            problem = f"cannot be read{reason}: it is truncated or corrupt, or not a checkpoint"
        raise ValueError(f"{path} {problem}; {fix}") from None
    if not isinstance(checkpoint, dict) or not {"model", "config"} <= checkpoint.keys():
        raise ValueError(f"{path} cannot be read as a checkpoint of train.py or finetune.py (no "
                         f"'model' and 'config'); {fix}")
    return checkpoint


def load_model(spec, fix=None, **overrides):
    """The model that `spec` names (any of MODEL_FORMS), its tokenizer, and the rest of the
    checkpoint when spec is one (a run's step and optimizer, a fine-tuned head; None otherwise).
    train.py, finetune.py and sample.py all start here. overrides: GPTConfig fields to change,
    e.g. dropout=0.1 for fine-tuning (as nanoGPT's from_pretrained allows)."""
    path = resolve_model(spec)
    if not path.is_file():  # pretrained weights: the tokenizer's files lie next to them
        return GPT.from_pretrained(path, **overrides), load_tokenizer(str(path)), None
    checkpoint = read_checkpoint(path, fix)
    try:
        model = GPT.from_checkpoint_dict(checkpoint, **overrides)
        tokenizer = Tokenizer.loads(checkpoint["tokenizer"], source=str(path))
    except Exception as error:  # another format: a missing key, other shapes
        raise ValueError(f"{path} is not a usable checkpoint ({first_line(error)[:200]}); "
                         f"{fix or 'give ' + MODEL_FORMS}") from None
    del checkpoint["model"]  # the weights are in the model now; one copy is enough
    return model, tokenizer, checkpoint


def add_tokens(model, tokenizer, tokens):
    """The model and tokenizer with special tokens added after the vocabulary, each with a new row
    of the (tied) embedding matrix drawn from N(0, 0.02) like the rest (GPT-1 section 4.1). GPT-1's
    fine-tuning adds its start, delimiter and extract tokens so (section 3.3); train.py gives GPT-1,
    which has none, an <|endoftext|>. Tokens the tokenizer has already add nothing."""
    new = [token for token in dict.fromkeys(tokens) if token not in tokenizer.special_tokens]
    if not new:
        return model, tokenizer
    config = model.config
    if config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"the model has {config.vocab_size} token embeddings, its tokenizer "
                         f"{tokenizer.vocab_size}: the new tokens' ids would not match new rows")
    state = model.state_dict()
    rows = torch.randn(len(new), config.n_embd) * 0.02
    state["lm_head.weight"] = torch.cat([state["lm_head.weight"], rows.to(state["lm_head.weight"])])
    state["transformer.wte.weight"] = state["lm_head.weight"]
    grown = GPT(dataclasses.replace(config, vocab_size=config.vocab_size + len(new)),
                model.attention, model.kernels)
    grown.load_state_dict(state)
    return grown, tokenizer.with_special_tokens(new)


# Hugging Face's formats: model_type -> (activation key, its default, activation names -> ours,
# LayerNorm position). GPT-1's modeling_openai.ACT_FNS calls the tanh GELU "gelu", as OpenAI did.
HF_FORMATS = {
    "gpt2": ("activation_function", "gelu_new", {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh":
             "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"}, "pre"),
    "openai-gpt": ("afn", "gelu", {"gelu": "gelu_tanh", "relu": "relu", "silu": "silu",
                   "swish": "silu"}, "post"),
}


def read_hugging_face(path):
    """GPTConfig and tensors of a Hugging Face GPT-2 or GPT-1 folder, keyed by our names."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json (Hugging Face) or params_shapes.json "
                                f"(GPT-1's release): give {MODEL_FORMS}")
    hf_config = json.loads(config_file.read_text())
    model_type = hf_config.get("model_type", "gpt2")
    if model_type not in HF_FORMATS:
        raise ValueError(f"{config_file}: model_type {model_type!r} is neither GPT-2 ('gpt2') nor "
                         "GPT-1 ('openai-gpt')")
    key, default, names, ln_position = HF_FORMATS[model_type]
    sizes = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
    missing = [size for size in sizes if size not in hf_config]
    if missing:
        raise ValueError(f"{config_file} has no {', '.join(missing)}: not a {model_type} config")
    activation = hf_config.get(key, default)
    if activation not in names:
        raise ValueError(f"{config_file}: unknown {key} {activation!r} (known: {', '.join(names)})")
    config = GPTConfig(n_layer=hf_config["n_layer"], n_head=hf_config["n_head"],
                       n_embd=hf_config["n_embd"], block_size=hf_config["n_positions"],
                       vocab_size=hf_config["vocab_size"], ln_position=ln_position,
                       dropout=hf_config.get("resid_pdrop", 0.1), activation=names[activation])

    weights_file = path / "model.safetensors"
    if not weights_file.is_file():
        weights_file = path / "pytorch_model.bin"
    if not weights_file.is_file():
        raise FileNotFoundError(f"{path} has no model.safetensors or pytorch_model.bin")
    try:
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(weights_file)
        else:  # weights_only: unpickle tensors only, never run code from the file
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{weights_file} cannot be read ({first_line(error)[:200]}): truncated, "
                         "corrupt?") from None
    # Base models (GPT2Model, OpenAIGPTModel) have no "transformer." prefix; *LMHeadModel ones do.
    # GPT-1's embeddings are named tokens_embed and positions_embed there.
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    renames = {"tokens_embed.weight": "wte.weight", "positions_embed.weight": "wpe.weight"}
    state = {renames.get(k, k): v for k, v in state.items()}
    return config, state, weights_file


# GPT-1's release (finetune-transformer-lm/model/) names no arrays: params_shapes.json lists their
# shapes in order, the positions (n_ctx, n_embd) and tokens (n_vocab, n_embd) first, then twelve
# per block, in this order; weights are (1, in, out), the Linear layers being 1x1 convolutions.
RELEASE_BLOCK = [f"{module}.{p}" for module in ("attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc",
                                                "mlp.c_proj", "ln_2") for p in ("weight", "bias")]


def read_openai_release(folder):
    """GPTConfig and tensors of GPT-1 as OpenAI released it: the 146 arrays of params_shapes.json,
    flattened, concatenated and cut into params_0.npy .. params_9.npy, read as its train.py does."""
    import numpy as np
    shapes_file = folder / "params_shapes.json"
    try:
        shapes = [tuple(map(int, shape)) for shape in json.loads(shapes_file.read_text())]
        assert len(shapes) > 2 and (len(shapes) - 2) % 12 == 0 and len(shapes[0]) == 2
    except (ValueError, TypeError, AssertionError):
        raise ValueError(f"{shapes_file}: expected a list of 2 + 12 * n_layer shapes") from None
    shards = []
    for i in range(10):
        shard = folder / f"params_{i}.npy"
        if not shard.is_file():
            raise FileNotFoundError(f"{shard} is missing: GPT-1's release has params_0..9.npy")
        try:
            shards.append(np.load(shard).reshape(-1))  # no pickles: allow_pickle is off
        except (ValueError, OSError) as error:
            raise ValueError(f"{shard} cannot be read ({str(error)[:200]}): truncated?") from None
    flat, sizes = np.concatenate(shards), [math.prod(shape) for shape in shapes]
    if flat.size != sum(sizes):
        raise ValueError(f"{folder}: params_*.npy hold {flat.size:,} numbers, {shapes_file.name} "
                         f"lists {sum(sizes):,}: a shard is truncated or of another model")
    arrays = [torch.from_numpy(a).reshape(shape[-2:]).float()
              for a, shape in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]
    (n_ctx, n_embd), n_layer = shapes[0], (len(shapes) - 2) // 12
    # The release does not store n_head: GPT-1 has 12 heads of 64 (section 4.1); so do small copies.
    config = GPTConfig.preset("gpt1", n_layer=n_layer, n_head=max(1, n_embd // 64), n_embd=n_embd,
                              block_size=n_ctx, vocab_size=shapes[1][0])
    state = {"wpe.weight": arrays[0], "wte.weight": arrays[1]}
    for i in range(n_layer):
        state.update({f"h.{i}.{name}": a for name, a in zip(RELEASE_BLOCK, arrays[2 + 12 * i:])})
    return config, state, folder


# -----------------------------------------------------------------------------
# Backends: the same attention and LayerNorm, computed faster (the model above calls them)


def dispatch_attention(q, k, v, backend="auto", dropout=0.0):
    """attend(q, k, v, dropout), computed by a backend: "math" is attend itself, "sdpa" PyTorch's
    fused kernel (same result, less memory, faster), "triton" our kernel in kernels/, "auto" the
    fastest available."""
    T_q, T_k = q.size(-2), k.size(-2)
    past = T_k - T_q
    if backend == "auto":
        if past == 0 and dropout == 0 and q.is_cuda and triton_kernels():
            backend = "triton"  # our kernel, on a GPU where it applies (no cache, no dropout)
        elif q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # the backward of PyTorch's CPU flash kernel in bfloat16 made train.py's CPU step
            # 1.15x slower than the math at T = 256 (bench/RESULTS.md)
            backend = "math"
        else:
            backend = "sdpa"
    if backend == "math":
        return attend(q, k, v, dropout)
    if backend == "triton" and past == 0 and dropout == 0:  # no cache, no attention dropout
        return triton_attention(q, k, v)
    if backend in ("sdpa", "triton"):
        # is_causal=True aligns the mask at the top-left corner: right only without a cache.
        if past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        if T_q == 1:  # one new token with a cache: it sees every key, so no mask to build
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        allowed = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(diagonal=past)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
    raise ValueError(f"unknown attention backend {backend!r}; use 'auto', 'math', 'sdpa' or "
                     "'triton'")


@functools.cache
def triton_kernels():
    """The Triton kernels of kernels/, or None where they cannot run (no CUDA GPU, no triton:
    CPU machines, macOS). Imported on first use, so the CPU path never loads triton."""
    if not torch.cuda.is_available():
        return None
    try:
        from kernels import flash_attention, layer_norm
    except ImportError:
        return None
    return SimpleNamespace(flash_attention=flash_attention.flash_attention,
                           layer_norm=layer_norm.layer_norm)


def triton_attention(q, k, v):
    """Causal flash attention from kernels/flash_attention.py (FlashAttention-2 in Triton). It has
    no attention dropout and no offset mask: with either, dispatch_attention uses PyTorch's SDPA."""
    if not q.is_cuda or triton_kernels() is None:
        raise RuntimeError("attention='triton' needs a CUDA GPU and the triton package; use "
                           "attention='sdpa'")
    return triton_kernels().flash_attention(q, k, v, causal=True)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm, computed on a GPU by the fused Triton kernel of kernels/layer_norm.py (same
    parameters, same result, one pass through memory each way) unless kernel is False."""
    kernel = True  # GPT.kernels sets it in every LayerNorm of the model

    def forward(self, x):
        if self.kernel and x.is_cuda and triton_kernels():
            return triton_kernels().layer_norm(x, self.weight, self.bias, self.eps)
        return super().forward(x)


# -----------------------------------------------------------------------------
# python gpt.py: parameter counts and a smoke test

if __name__ == "__main__":
    # GPT-2's Table 2 says 117M, 345M, 762M, 1542M. Those figures are reproduced exactly when the
    # count uses GPT-1's 40,478-token vocabulary instead of GPT-2's 50,257 (printed below);
    # the released models are the sizes in the first column.
    paper = {"gpt2": "117M", "gpt2-medium": "345M", "gpt2-large": "762M", "gpt2-xl": "1542M"}
    print(f"{'preset':<12} {'parameters':>14}  {'with vocab 40,478':>17}  GPT-2 Table 2")
    for name in PRESETS:
        with torch.device("meta"):  # shapes only: no memory, no time
            n = GPT(GPTConfig.preset(name)).num_params()
            n_old_vocab = GPT(GPTConfig.preset(name, vocab_size=40478)).num_params()
        if name in paper:
            print(f"{name:<12} {n:>14,}  {n_old_vocab:>17,}  {paper[name]:>12}")
        else:
            print(f"{name:<12} {n:>14,}")

    torch.manual_seed(0)
    config = GPTConfig.preset("gpt-nano", vocab_size=256)
    for ln_position in ("pre", "post"):
        model = GPT(dataclasses.replace(config, ln_position=ln_position))
        idx = torch.randint(0, config.vocab_size, (4, config.block_size))
        targets = torch.randint(0, config.vocab_size, (4, config.block_size))
        logits, loss = model(idx, targets)
        loss.backward()
        # A freshly initialised model guesses nearly uniformly: loss close to ln(vocab_size).
        print(f"smoke test ({ln_position}-LN): logits {tuple(logits.shape)}, loss "
              f"{loss.item():.3f} (ln {config.vocab_size} = {math.log(config.vocab_size):.3f}), "
              "backward ok")
