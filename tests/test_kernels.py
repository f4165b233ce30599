"""Triton kernels against float64 PyTorch references.

On CPU these run through the Triton interpreter (see conftest.py), so shapes
stay small; the same tests run on CUDA tensors when a GPU is present.
"""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="Triton is not installed (it ships for Linux only)")

import kernels.flash_attention as fa  # noqa: E402
import kernels.layer_norm as ln  # noqa: E402
from kernels.flash_attention import flash_attention  # noqa: E402
from kernels.layer_norm import layer_norm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Largest allowed relative error per input dtype. fp16/bf16 kernels round P
# and dS to the input dtype before their tensor-core matmuls (as FlashAttention
# does), so their gradients sit a few bf16 ulps from the float64 reference.
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def rel_err(a, ref):
    # ||a - ref|| / ||ref|| (Frobenius). dq and dk at sequence length 1 are
    # exactly 0, so the denominator is floored at an RMS of 0.1: what remains
    # there is rounding, measured against the scale of the inputs.
    floor = 0.1 * math.sqrt(ref.numel())
    return ((a.double() - ref).norm() / ref.norm().clamp_min(floor)).item()


def assert_close(name, a, ref, tol):
    assert a.shape == ref.shape, f"{name}: shape {tuple(a.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite values (an output element left unwritten?)"
    err = rel_err(a, ref)
    assert err < tol, f"{name}: relative error {err:.2e} >= {tol:.0e}"


@pytest.fixture
def poisoned(monkeypatch):
    """Make torch.empty / torch.empty_like return NaN-filled floating tensors,
    so any output element a kernel forgets to write fails the comparison."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


@pytest.fixture(autouse=True, scope="module")
def one_config_per_kernel():
    """On a GPU, autotuning would compile and time every candidate config for
    every shape the tests use (minutes). Keep each kernel's last, smallest
    config, which fits every dtype and head_dim; the interpreter has only one."""
    import kernels.flash_attention as fa
    import kernels.layer_norm as ln
    tuned = [fa._attn_fwd, fa._attn_bwd_dkdv, fa._attn_bwd_dq, ln._layer_norm_fwd,
             ln._layer_norm_bwd_dx]
    saved = [kernel.configs for kernel in tuned]
    for kernel in tuned:
        kernel.configs = kernel.configs[-1:]
    yield
    for kernel, configs in zip(tuned, saved):
        kernel.configs = configs


# --------------------------------------------------------------------------- #
# LayerNorm
# --------------------------------------------------------------------------- #

def check_layer_norm(x, w, b, eps=1e-5):
    tol = TOL[x.dtype]
    dy = torch.randn_like(x)
    leaves = [t for t in (x, w, b) if t is not None]
    for t in leaves:
        t.requires_grad_(True)
    y = layer_norm(x, w, b, eps)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    x64, w64 = ref_leaves[:2]
    b64 = ref_leaves[2] if b is not None else None
    y64 = F.layer_norm(x64, (x.shape[-1],), w64, b64, eps)
    ref_grads = torch.autograd.grad(y64, ref_leaves, dy.double())
    assert y.dtype == x.dtype
    assert_close("y", y, y64, tol)
    for name, g, g64 in zip(("dx", "dw", "db"), grads, ref_grads):
        assert_close(name, g, g64, tol)


@pytest.mark.parametrize("shape,dtype", [
    ((1, 1), torch.float32),             # hidden size 1: x - mean is exactly 0
    ((3, 5, 7), torch.float16),          # 3-d input, odd width
    ((2, 17, 768), torch.bfloat16),      # GPT-2 small width
    ((9, 1600), torch.float16),          # GPT-2 XL width (not a power of 2)
    ((3, 16384), torch.bfloat16),        # the widest the issue asks for
    ((2, 3000), torch.float32),
])
def test_layer_norm_matches_float64(shape, dtype, poisoned):
    N = shape[-1]
    x = torch.randn(shape, device=DEVICE, dtype=dtype) * 3 + 1
    w = torch.randn(N, device=DEVICE, dtype=dtype)
    b = torch.randn(N, device=DEVICE, dtype=dtype)
    check_layer_norm(x, w, b)


def test_layer_norm_dweight_dbias_many_rows(poisoned):
    # Trap: the tutorial's backward accumulates dw/db under a lock and races
    # without a barrier. Ours writes one partial row per program and reduces
    # them in a second kernel; many rows spread the sum over many partials,
    # several rows each: 1000 on a GPU (4 partials per SM), 160 under the
    # interpreter (16 partials, which it runs one row at a time).
    x = torch.randn(1000 if DEVICE == "cuda" else 160, 96, device=DEVICE)
    w = torch.randn(96, device=DEVICE)
    b = torch.randn(96, device=DEVICE)
    check_layer_norm(x, w, b)


def test_layer_norm_dweight_dbias_reduce_more_partial_rows_than_one_block(monkeypatch, poisoned):
    # The second backward kernel sums the G partial rows BLOCK_G = 32 at a time. On a GPU G is 4
    # per SM (528 on an H100), under the interpreter 16 at most: force 40, the second block ragged.
    monkeypatch.setattr(ln, "_num_partials", lambda x, M: 40)
    x = torch.randn(45, 48, device=DEVICE)
    check_layer_norm(x, torch.randn(48, device=DEVICE), torch.randn(48, device=DEVICE))


def test_layer_norm_without_bias_and_strided_input(poisoned):
    base = torch.randn(6, 4, 40, device=DEVICE, dtype=torch.float16)
    x = base.transpose(0, 1)  # leading dimensions not contiguous
    check_layer_norm(x, torch.randn(40, device=DEVICE, dtype=torch.float16), None)


def test_layer_norm_rejects_wrong_weight_shape():
    x = torch.randn(2, 8, device=DEVICE)
    with pytest.raises(ValueError, match="weight"):
        layer_norm(x, torch.ones(4, device=DEVICE), None)


# --------------------------------------------------------------------------- #
# Flash attention
# --------------------------------------------------------------------------- #

def attention_reference(q, k, v, causal, sm_scale=None):
    q, k, v = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(-2, -1)) * scale
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (q, k, v), torch.softmax(s, dim=-1) @ v


def check_attention(q, k, v, causal, do=None, sm_scale=None, tol=None):
    tol = tol or TOL[q.dtype]
    for t in (q, k, v):
        t.requires_grad_(True)
    do = torch.randn_like(q) if do is None else do
    out = flash_attention(q, k, v, causal=causal, sm_scale=sm_scale)
    grads = torch.autograd.grad(out, (q, k, v), do)
    leaves, ref = attention_reference(q, k, v, causal, sm_scale)
    ref_grads = torch.autograd.grad(ref, leaves, do.double())
    assert out.dtype == q.dtype
    assert_close("out", out, ref, tol)
    for name, g, g64 in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert_close(name, g, g64, tol)


# Every sequence length with both causal flags and both batch*heads sizes,
# every head_dim with every dtype; not the full product, which would take the
# interpreter tens of minutes. 17, 100 and 257 are not multiples of any block
# size, so each exercises the ragged tails (the tutorial backward's trap), and
# the non-causal cases check a backward that is not only right for causal.
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
ATTENTION_CASES = [
    # (batch, heads, seq, head_dim, dtype, causal)
    (1, 1, 1, 16, F32, True),
    (1, 1, 1, 128, BF16, False),
    (2, 3, 1, 64, F16, True),
    (1, 1, 17, 32, F16, False),
    (2, 3, 17, 16, BF16, True),
    (2, 3, 17, 128, F32, False),
    (1, 1, 100, 64, BF16, False),
    (2, 3, 100, 32, F32, True),
    (1, 1, 100, 128, F16, True),
    (2, 3, 100, 16, F16, False),
    (1, 1, 257, 16, BF16, False),
    (2, 3, 257, 64, BF16, True),
    (1, 1, 257, 128, BF16, True),
    (2, 3, 257, 32, BF16, False),
    (1, 1, 257, 64, F32, False),
]


# Lengths that are multiples of 16, as in training (1024): on a GPU Triton compiles a variant of
# each kernel that assumes N_CTX % 16 == 0, and whole tiles leave the masked loops empty.
MULTIPLE_OF_16_CASES = [(1, 2, 64, 32, F32, True), (1, 1, 96, 16, BF16, False),
                        (2, 1, 128, 64, F16, True), (1, 1, 48, 128, F32, False)]


@pytest.mark.parametrize("B,H,T,D,dtype,causal", ATTENTION_CASES + MULTIPLE_OF_16_CASES,
                         ids=[f"B{b}H{h}-T{t}-d{d}-{str(dt)[6:]}-{'causal' if c else 'full'}"
                              for b, h, t, d, dt, c in ATTENTION_CASES + MULTIPLE_OF_16_CASES])
def test_attention_matches_float64(B, H, T, D, dtype, causal, poisoned):
    q, k, v = (torch.randn(B, H, T, D, device=DEVICE, dtype=dtype) for _ in range(3))
    check_attention(q, k, v, causal)


def configs_on_a_gpu(module):
    """A kernels/ module as a GPU sees it, for its autotune candidates. Under the interpreter each
    kernel keeps one (it would run them all), so the file is executed a second time with the
    interpreter off, only to read its lists: nothing is compiled."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return module
    spec = importlib.util.spec_from_file_location(f"{module.__name__}_on_a_gpu", module.__file__)
    on_a_gpu = importlib.util.module_from_spec(spec)
    saved = os.environ.pop("TRITON_INTERPRET")
    try:
        spec.loader.exec_module(on_a_gpu)
    finally:
        os.environ["TRITON_INTERPRET"] = saved
    return on_a_gpu


FA_ON_A_GPU, LN_ON_A_GPU = configs_on_a_gpu(fa), configs_on_a_gpu(ln)
ATTENTION_CONFIGS = [(fa._attn_fwd, FA_ON_A_GPU.FWD_CONFIGS),
                     (fa._attn_bwd_dq, FA_ON_A_GPU.DQ_CONFIGS),
                     (fa._attn_bwd_dkdv, FA_ON_A_GPU.DKDV_CONFIGS)]


@pytest.mark.parametrize("i", range(max(len(configs) for _, configs in ATTENTION_CONFIGS)))
def test_every_autotune_config_of_flash_attention(i, monkeypatch, poisoned):
    """Whatever tile the autotuner picks on a GPU, the result is the same: config i of each kernel
    (its last where it has fewer), forward and backward, causal and not, against float64. Length
    130 leaves a ragged tile for every BLOCK_M and BLOCK_N."""
    for kernel, configs in ATTENTION_CONFIGS:
        monkeypatch.setattr(kernel, "configs", [configs[min(i, len(configs) - 1)]])
    for causal in (True, False):
        q, k, v = (torch.randn(1, 1, 130, 32, device=DEVICE, dtype=F16) for _ in range(3))
        check_attention(q, k, v, causal)


@pytest.mark.parametrize("i", range(len(LN_ON_A_GPU._warps_configs())))
def test_every_autotune_config_of_layer_norm(i, monkeypatch, poisoned):
    """LayerNorm's candidates differ in num_warps only: one compilation each on a GPU (the
    interpreter runs them all alike)."""
    for kernel in (ln._layer_norm_fwd, ln._layer_norm_bwd_dx):
        monkeypatch.setattr(kernel, "configs", [LN_ON_A_GPU._warps_configs()[i]])
    x, w, b = (torch.randn(shape, device=DEVICE, dtype=F16) for shape in ((8, 100), (100,), (100,)))
    check_layer_norm(x, w, b)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_strided_inputs_and_grad(causal, poisoned):
    # Trap: one set of strides assumed for q, k, v, o and do. Here q and k are
    # slices of one (B, T, 3, H, d) projection, as a GPT's c_attn split gives,
    # v is strided even along head_dim, and dO comes from a transpose; none of
    # them is contiguous, and no two share strides.
    B, T, H, D = 2, 45, 3, 32
    qkv = torch.randn(B, T, 3, H, D, device=DEVICE, dtype=torch.float16)
    q, k = (qkv[:, :, i].transpose(1, 2) for i in range(2))
    v = torch.randn(B, H, D, T, device=DEVICE, dtype=torch.float16).transpose(2, 3)
    do = torch.randn(B, T, H, D, device=DEVICE, dtype=torch.float16).transpose(1, 2)
    assert not any(t.is_contiguous() for t in (q, k, v, do)) and v.stride(-1) != 1
    check_attention(q, k, v, causal, do=do)


def test_attention_fp32_keeps_small_probabilities(poisoned):
    # Trap: probabilities cast to fp16 whatever the input dtype. One key per
    # query dominates; the others get p ~ 1e-6, below fp16's normal range, but
    # carry values ~1e6, so they contribute O(1) to the output. An fp16 (or
    # TF32) P would be off by percents, far beyond the fp32 tolerance.
    T, D = 40, 16
    q = torch.zeros(1, 1, T, D, device=DEVICE)
    k = torch.zeros(1, 1, T, D, device=DEVICE)
    q[..., 0] = 1.0
    k[..., 0, 0] = 14.0 * math.sqrt(D)  # key 0 scores 14 against every query: p_others ~ e^-14
    v = torch.randn(1, 1, T, D, device=DEVICE) * 1e6
    v[..., 0, :] = torch.randn(D, device=DEVICE)
    check_attention(q, k, v, causal=False)


def test_attention_bf16_values_beyond_fp16_range(poisoned):
    # bf16 inputs whose values overflow fp16 (max 65504): nothing in the
    # kernel may round-trip through fp16.
    B, H, T, D = 1, 2, 50, 64
    q = torch.randn(B, H, T, D, device=DEVICE, dtype=BF16) * 3
    k = torch.randn(B, H, T, D, device=DEVICE, dtype=BF16)
    v = torch.randn(B, H, T, D, device=DEVICE, dtype=BF16) * 1e5
    check_attention(q, k, v, causal=True)


def test_attention_custom_scale(poisoned):
    q, k, v = (torch.randn(1, 2, 33, 32, device=DEVICE) for _ in range(3))
    check_attention(q, k, v, causal=True, sm_scale=0.3)


def test_attention_rejects_bad_inputs():
    q = torch.randn(1, 1, 8, 48, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim"):
        flash_attention(q, q, q)
    q = torch.randn(1, 1, 8, 32, device=DEVICE)
    with pytest.raises(ValueError, match="dtype|fp16"):
        flash_attention(q, q.half(), q)
    with pytest.raises(ValueError, match="shape"):
        flash_attention(q, q[:, :, :4], q[:, :, :4])


# --------------------------------------------------------------------------- #
# Compilation
# --------------------------------------------------------------------------- #

@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="on a GPU the tests above compile the kernels for real")
@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None,
                    reason="this Triton build has no NVIDIA backend")
def test_kernels_compile_for_hopper():
    # Trap: code tied to one Triton release. The interpreter never runs
    # Triton's compiler, so compile every kernel for sm_90 with the installed
    # release (no GPU needed); see tests/hopper_compile.py.
    script = Path(__file__).with_name("hopper_compile.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
