"""Fused LayerNorm in Triton, forward and backward.

    y = (x - mean(x)) / sqrt(var(x) + eps) * w + b        over the last dimension

PyTorch's `F.layer_norm` reads x several times (statistics, then normalisation)
and its backward runs separate kernels for dx and for dw/db. Here each pass is
one trip through memory:

  forward   one program per row: load the row once, compute mean and rstd in
            fp32 registers, write y, and keep (mean, rstd) for the backward.
  backward  G programs, each owning the rows g, g + G, g + 2G, ...: write dx for
            each row and add the row's contribution to dw, db into registers;
            at the end write those G partial sums to a (G, N) buffer. A second
            small kernel sums the buffer over G. No atomics, no locks: every
            program writes its own row of the buffer, so nothing can race.

Usage: `layer_norm(x, weight, bias, eps=1e-5)`; bias may be None. Any leading
shape, hidden sizes 1 .. 65536, fp16 / bf16 / fp32 (statistics always fp32).
A whole row lives in registers: past ~8192 the backward spills some of them
to local memory (still correct, just slower).

`python kernels/layer_norm.py` checks the kernels against float64 PyTorch (on
the CPU through the Triton interpreter) and, on a GPU, times them.
"""
import os

import torch

if __name__ == "__main__" and not torch.cuda.is_available():
    # The interpreter must be chosen before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton
import triton.language as tl

__all__ = ["layer_norm"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_N = 65536  # a row must fit in one block of registers


def _warps_configs():
    # On a GPU the best warp count depends on the row width: let autotune pick
    # (every kernel below overwrites its outputs, so re-running is harmless).
    # The interpreter would run every candidate, so it gets a single one.
    if INTERPRET:
        return [triton.Config({}, num_warps=4)]
    return [triton.Config({}, num_warps=w) for w in (1, 2, 4, 8, 16)]


@triton.autotune(configs=_warps_configs(), key=["N"])
@triton.jit
def _layer_norm_fwd(X, Y, W, B, Mean, Rstd, stride_x, stride_y, N, eps,
                    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    # Two-pass statistics on the row held in registers: subtracting the mean
    # before squaring avoids the cancellation of E[x^2] - E[x]^2.
    mean = tl.sum(x, axis=0) / N
    xc = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / N + eps)
    y = xc * rstd * tl.load(W + cols, mask=mask).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(B + cols, mask=mask).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.autotune(configs=_warps_configs(), key=["N"])
@triton.jit
def _layer_norm_bwd_dx(DX, DY, X, W, Mean, Rstd, DW_part, DB_part,
                       stride_dx, stride_dy, stride_x, M, N,
                       HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    # With xhat = (x - mean) * rstd and g = w * dy, the chain rule through
    # mean and rstd gives, per row,
    #     dx = rstd * (g - mean(g * xhat) * xhat - mean(g))
    # and over all rows  dw = sum(dy * xhat),  db = sum(dy).
    g_id = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(W + cols, mask=mask).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_N], dtype=tl.float32)
    for r in range(g_id, M, tl.num_programs(0)):
        row = tl.cast(r, tl.int64)  # row * stride may pass 2**31
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + row)
        xhat = tl.where(mask, (x - tl.load(Mean + row)) * rstd, 0.0)
        g = w * dy  # zero in the masked tail, since dy is loaded as 0 there
        dx = rstd * (g - tl.sum(g * xhat, axis=0) / N * xhat - tl.sum(g, axis=0) / N)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * xhat
        db += dy
    # This program's partial sums go to its own row of the (G, N) buffers.
    tl.store(DW_part + g_id * N + cols, dw, mask=mask)
    if HAS_BIAS:
        tl.store(DB_part + g_id * N + cols, db, mask=mask)


@triton.jit
def _layer_norm_bwd_dwdb(DW_part, DB_part, DW, DB, G, N, HAS_BIAS: tl.constexpr,
                         BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
    # Column-block c sums the G partial rows: dw[c] = sum_g DW_part[g, c].
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dw = tl.zeros([BLOCK_G, BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_G, BLOCK_N], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        rows = g0 + tl.arange(0, BLOCK_G)
        mask = (rows[:, None] < G) & (cols[None, :] < N)
        offs = rows[:, None] * N + cols[None, :]
        dw += tl.load(DW_part + offs, mask=mask, other=0.0)
        if HAS_BIAS:
            db += tl.load(DB_part + offs, mask=mask, other=0.0)
    tl.store(DW + cols, tl.sum(dw, axis=0).to(DW.dtype.element_ty), mask=cols < N)
    if HAS_BIAS:
        tl.store(DB + cols, tl.sum(db, axis=0).to(DB.dtype.element_ty), mask=cols < N)


def _rows(t):
    """View t as (rows, N) with unit stride along N (copying only if needed)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _num_partials(x, M):
    # Enough programs to fill the GPU a few times over; every extra program
    # costs one more row of partial sums to reduce.
    if INTERPRET or not x.is_cuda:
        return max(1, min(M, 16))
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return max(1, min(M, 4 * sms))


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        N = x.shape[-1]
        if N > MAX_N:
            raise ValueError(f"layer_norm: hidden size {N} > {MAX_N} is not supported")
        if weight.shape != (N,) or (bias is not None and bias.shape != (N,)):
            raise ValueError("layer_norm: weight and bias must have shape (hidden,)")
        x2 = _rows(x)
        M = x2.shape[0]
        y = torch.empty((M, N), dtype=x.dtype, device=x.device)
        mean = torch.empty(M, dtype=torch.float32, device=x.device)
        rstd = torch.empty(M, dtype=torch.float32, device=x.device)
        if M > 0:
            _layer_norm_fwd[(M,)](
                x2, y, weight, bias, mean, rstd, x2.stride(0), y.stride(0), N, eps,
                HAS_BIAS=bias is not None, BLOCK_N=triton.next_power_of_2(N))
        ctx.save_for_backward(x2, weight, bias, mean, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, bias, mean, rstd = ctx.saved_tensors
        M, N = x2.shape
        dy2 = _rows(dy)
        dx = torch.empty((M, N), dtype=x2.dtype, device=x2.device)
        G = _num_partials(x2, M)
        dw_part = torch.empty((G, N), dtype=torch.float32, device=x2.device)
        db_part = torch.empty_like(dw_part) if bias is not None else None
        dw = torch.empty_like(weight)
        db = torch.empty_like(bias) if bias is not None else None
        if M == 0:
            dw.zero_()
            if db is not None:
                db.zero_()
            return dx.view(dy.shape), dw, db, None
        BLOCK_N = triton.next_power_of_2(N)
        _layer_norm_bwd_dx[(G,)](
            dx, dy2, x2, weight, mean, rstd, dw_part, db_part,
            dx.stride(0), dy2.stride(0), x2.stride(0), M, N,
            HAS_BIAS=bias is not None, BLOCK_N=BLOCK_N)
        RED_N = min(BLOCK_N, 128)
        _layer_norm_bwd_dwdb[(triton.cdiv(N, RED_N),)](
            dw_part, db_part, dw, db, G, N, HAS_BIAS=bias is not None,
            BLOCK_G=32, BLOCK_N=RED_N)
        return dx.view(dy.shape), dw, db, None


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last dimension of x, differentiable in x, weight, bias."""
    return _LayerNorm.apply(x, weight, bias, eps)


def _self_check():
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for (M, N), dtype in [((7, 1), torch.float32), ((33, 100), torch.float16),
                          ((300, 768), torch.bfloat16), ((4, 5000), torch.float32)]:
        x = torch.randn(M, N, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn(M, N, device=device, dtype=dtype)
        y = layer_norm(x, w, b)
        grads = torch.autograd.grad(y, (x, w, b), dy)
        x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
        y64 = torch.nn.functional.layer_norm(x64, (N,), w64, b64, 1e-5)
        grads64 = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
        for name, a, ref in zip(("y", "dx", "dw", "db"), (y, *grads), (y64, *grads64)):
            scale = ref.norm().clamp_min(0.1 * ref.numel() ** 0.5)
            err = ((a.double() - ref).norm() / scale).item()
            tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype]
            print(f"{M:5d} x {N:5d} {str(dtype):15s} {name:2s} rel err {err:.1e}")
            assert err < tol, f"{name}: relative error {err} >= {tol}"
    print("layer_norm: all checks passed")


def _benchmark():
    M, N, dtype = 8 * 1024, 768, torch.bfloat16
    x = torch.randn(M, N, device="cuda", dtype=dtype)
    w = torch.randn(N, device="cuda", dtype=dtype)
    b = torch.randn(N, device="cuda", dtype=dtype)
    gbps = lambda ms: 2 * x.numel() * x.element_size() / ms * 1e-6  # read x, write y
    for name, fn in [("triton", lambda: layer_norm(x, w, b)),
                     ("torch", lambda: torch.nn.functional.layer_norm(x, (N,), w, b))]:
        ms = triton.testing.do_bench(fn, return_mode="median")
        print(f"forward {M} x {N} bf16 {name:6s}: {gbps(ms):.0f} GB/s")
    print("full table: python bench/layer_norm.py")


if __name__ == "__main__":
    _self_check()
    if torch.cuda.is_available():
        _benchmark()
