"""FlashAttention-2 in Triton, forward and backward.

    out = softmax(Q K^T * sm_scale + causal mask) V      per (batch, head)

Naive attention writes the (N x N) score matrix to memory and reads it back,
twice more in the backward. FlashAttention (Dao 2023, "FlashAttention-2:
Faster Attention with Better Parallelism and Work Partitioning") never forms
it: a program keeps one tile of queries Q_i (B_r rows, here BLOCK_M) on chip,
streams the key/value tiles K_j, V_j (B_c rows, here BLOCK_N) past it, and
folds each tile into a running softmax. Notation below follows the paper:
S = Q K^T, P = softmax(S), O = P V; m_i, l_i the running row max and row sum;
L_i = m_i + log(l_i) the log-sum-exp kept for the backward.

  _attn_fwd        Algorithm 1: one program per (query tile, batch*head).
  _attn_bwd_delta  Algorithm 2, line 4: D_i = rowsum(dO_i * O_i).
  _attn_bwd_dkdv   Algorithm 2: one program per key tile, loops over queries.
  _attn_bwd_dq     dQ: one program per query tile, loops over keys (no atomics).

Scores are kept in base-2 units (scaled by log2 e) so exp2, a single hardware
instruction, replaces exp; L is stored in the same units. q, k, v and dO may
have any strides (e.g. slices of one fused qkv projection): each brings its
own. Everything this file allocates (O, dQ, dK, dV, L, D) is contiguous.

`python kernels/flash_attention.py` checks the kernels against float64
PyTorch (on the CPU through the Triton interpreter) and, on a GPU, times them.
"""
import math
import os

import torch

if __name__ == "__main__" and not torch.cuda.is_available():
    # The interpreter must be chosen before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton
import triton.language as tl

__all__ = ["flash_attention"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HEAD_DIMS = (16, 32, 64, 128)
LOG2E = 1.4426950408889634
_UPCAST_BF16_DOT = tl.constexpr(INTERPRET)


def _configs(pairs, interpreter_pair):
    # Hopper candidates for (BLOCK_M, BLOCK_N, num_warps, num_stages); the
    # autotuner times them once per (head_dim, causal, dtype, length bucket).
    # The interpreter would run every candidate, so it gets one small tile.
    if INTERPRET:
        pairs = [(*interpreter_pair, 4, 1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in pairs]


# Forward and dQ walk keys inside a query tile: BLOCK_M must be a multiple of BLOCK_N.
# Each list ends with its smallest tile, which fits in shared memory for every
# dtype and head_dim (the GPU tests run with that one alone).
FWD_CONFIGS = _configs([(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2),
                        (128, 32, 4, 4), (64, 64, 4, 3), (64, 32, 4, 4)], (64, 32))
DQ_CONFIGS = _configs([(128, 32, 4, 3), (128, 64, 8, 3), (128, 32, 8, 2), (64, 64, 4, 3),
                       (64, 32, 4, 3)], (64, 32))
# dK/dV walk queries inside a key tile: BLOCK_N must be a multiple of BLOCK_M.
DKDV_CONFIGS = _configs([(32, 128, 4, 3), (32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3),
                         (64, 64, 4, 3), (16, 64, 4, 4)], (32, 64))
TUNE_KEY = ["HEAD_DIM", "CAUSAL", "SEQ_BUCKET"]  # a new length retunes only past a power of 2


@triton.jit
def _dot(a, b, acc):
    if _UPCAST_BF16_DOT:
        # The CPU interpreter multiplies bf16 blocks as raw bit patterns
        # (triton-lang/triton#11584). bf16 products are exact in fp32, so
        # upcasting first gives the same result as the GPU's bf16 MMA.
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    if a.dtype == tl.float32:
        # True fp32 products, not the GPU's default TF32 (10-bit mantissa):
        # fp32 inputs are the accuracy path.
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)  # fp16 / bf16 tensor cores, fp32 accumulation
    return acc


@triton.jit
def _key_tiles(i, N_CTX, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Which keys query tile i visits: [0, full_hi) are fully visible to every row of Q_i and need
    no mask; [full_hi, end) are masked: causal, the tiles on the diagonal (tiles above it are never
    visited); otherwise the ragged last tile past N_CTX."""
    if CAUSAL:
        return i * BLOCK_M, tl.minimum((i + 1) * BLOCK_M, N_CTX)
    return (N_CTX // BLOCK_N) * BLOCK_N, N_CTX


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                    offs_m, offs_d, lo, hi, N_CTX, qk_scale,
                    CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        # Load K_j^T (d x B_c) and V_j (B_c x d); rows past the end read as 0.
        kT = tl.load(K + offs_n[None, :] * stride_kt + offs_d[:, None] * stride_kd,
                     mask=offs_n[None, :] < N_CTX, other=0.0)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                    mask=offs_n[:, None] < N_CTX, other=0.0)
        # S_ij = Q_i K_j^T (scaled, base-2 units).
        s = _dot(q, kT, tl.zeros([q.shape[0], BLOCK_N], tl.float32)) * qk_scale
        if MASKED:  # only the diagonal tiles (causal) or the ragged last tile
            if CAUSAL:
                s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
            else:
                s = tl.where(offs_n[None, :] < N_CTX, s, float("-inf"))
        # m_i^(j) = max(m_i^(j-1), rowmax(S_ij)),  P~_ij = exp(S_ij - m_i^(j))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        # Rescale what was summed under the old max:
        # l_i^(j) = e^(m^(j-1) - m^(j)) l_i^(j-1) + rowsum(P~_ij)
        # O_i^(j) = diag(e^(m^(j-1) - m^(j))) O_i^(j-1) + P~_ij V_j
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = _dot(p.to(v.dtype), v, acc * alpha[:, None])  # P in the input dtype
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=FWD_CONFIGS, key=TUNE_KEY)
@triton.jit
def _attn_fwd(Q, K, V, O, L, qk_scale,
              stride_qb, stride_qh, stride_qt, stride_qd,
              stride_kb, stride_kh, stride_kt, stride_kd,
              stride_vb, stride_vh, stride_vt, stride_vd,
              H, N_CTX, SEQ_BUCKET, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)  # the diagonal starts on a key-tile boundary
    # Causal work grows with the query tile index i: launch the longest tiles
    # first, so the short ones fill in the end of the grid.
    i = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    offs_m = i * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    # Q_i stays on chip for the whole loop; m_i = -inf, l_i = 0, O_i = 0.
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < N_CTX, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    full_hi, end = _key_tiles(i, N_CTX, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_kd, stride_vt,
                                    stride_vd, offs_m, offs_d, 0, full_hi, N_CTX, qk_scale,
                                    CAUSAL, False, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_kd, stride_vt,
                                    stride_vd, offs_m, offs_d, full_hi, end, N_CTX, qk_scale,
                                    CAUSAL, True, BLOCK_N)
    # O_i = diag(l_i)^-1 O_i and L_i = m_i + log(l_i); every row saw at least
    # one key (itself, when causal), so l_i > 0.
    acc = acc / l_i[:, None]
    row_ok = offs_m < N_CTX
    O += bh.to(tl.int64) * N_CTX * HEAD_DIM
    tl.store(O + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(L + bh.to(tl.int64) * N_CTX + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)


@triton.jit
def _attn_bwd_delta(O, DO, Delta, stride_db, stride_dh, stride_dt, stride_dd,
                    H, N_CTX, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # D_i = rowsum(dO_i * O_i), the term softmax's Jacobian subtracts:
    # dS_ij = P_ij * (dP_ij - D_i).
    bh = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < N_CTX
    o = tl.load(O + bh.to(tl.int64) * N_CTX * HEAD_DIM + offs_m[:, None] * HEAD_DIM
                + offs_d[None, :], mask=rows, other=0.0)
    DO += (bh // H).to(tl.int64) * stride_db + (bh % H).to(tl.int64) * stride_dh
    do = tl.load(DO + offs_m[:, None] * stride_dt + offs_d[None, :] * stride_dd,
                 mask=rows, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(Delta + bh.to(tl.int64) * N_CTX + offs_m, delta, mask=offs_m < N_CTX)


@triton.jit
def _attn_bwd_dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qt, stride_qd, stride_dt,
                         stride_dd, offs_n, offs_d, lo, hi, N_CTX, qk_scale,
                         MASKED: tl.constexpr, BLOCK_M: tl.constexpr):
    # Transposed tiles (keys along rows) so dK_j and dV_j accumulate without
    # transposing the big P and dS tiles. Query rows past N_CTX read as zeros
    # (Q, dO, L, D), which makes their P^T = 1 but their dV, dK terms 0; rows
    # of K_j past N_CTX are zeros too, and their results are never stored.
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        rows = offs_m < N_CTX
        qT = tl.load(Q + offs_m[None, :] * stride_qt + offs_d[:, None] * stride_qd,
                     mask=rows[None, :], other=0.0)
        do = tl.load(DO + offs_m[:, None] * stride_dt + offs_d[None, :] * stride_dd,
                     mask=rows[:, None], other=0.0)
        Li = tl.load(L + offs_m, mask=rows, other=0.0)
        Di = tl.load(Delta + offs_m, mask=rows, other=0.0)
        # P_ij^T = exp(S_ij^T - L_i): the probabilities, recomputed from the
        # saved log-sum-exp instead of stored.
        sT = _dot(k, qT, tl.zeros([k.shape[0], BLOCK_M], tl.float32)) * qk_scale
        if MASKED:  # diagonal tiles of causal attention
            sT = tl.where(offs_m[None, :] >= offs_n[:, None], sT, float("-inf"))
        pT = tl.math.exp2(sT - Li[None, :])
        # dV_j += P_ij^T dO_i
        dv = _dot(pT.to(do.dtype), do, dv)
        # dP_ij^T = V_j dO_i^T,  dS_ij^T = P_ij^T * (dP_ij^T - D_i)
        dpT = _dot(v, tl.trans(do), tl.zeros([k.shape[0], BLOCK_M], tl.float32))
        dsT = pT * (dpT - Di[None, :])
        # dK_j += dS_ij^T Q_i  (sm_scale applied once, after the loop)
        dk = _dot(dsT.to(qT.dtype), tl.trans(qT), dk)
    return dk, dv


@triton.autotune(configs=DKDV_CONFIGS, key=TUNE_KEY)
@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, L, Delta, DK, DV, sm_scale, qk_scale,
                   stride_qb, stride_qh, stride_qt, stride_qd,
                   stride_kb, stride_kh, stride_kt, stride_kd,
                   stride_vb, stride_vh, stride_vt, stride_vd,
                   stride_db, stride_dh, stride_dt, stride_dd,
                   H, N_CTX, SEQ_BUCKET, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Algorithm 2: program (j, b*h) owns K_j, V_j and accumulates dK_j, dV_j
    # over the query tiles; no two programs write the same rows.
    tl.static_assert(BLOCK_N % BLOCK_M == 0)  # the diagonal starts on a query-tile boundary
    j = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_db + h * stride_dh
    L += bh.to(tl.int64) * N_CTX
    Delta += bh.to(tl.int64) * N_CTX
    offs_n = j * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    cols = offs_n[:, None] < N_CTX
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_d[None, :] * stride_kd, mask=cols, other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd, mask=cols, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    if CAUSAL:
        # Queries before K_j never see it; the ones on the diagonal tile need
        # the mask, the ones after it see all of K_j.
        diag_hi = tl.minimum((j + 1) * BLOCK_N, N_CTX)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qt, stride_qd,
                                      stride_dt, stride_dd, offs_n, offs_d, j * BLOCK_N,
                                      diag_hi, N_CTX, qk_scale, True, BLOCK_M)
        lo = (j + 1) * BLOCK_N
    else:
        lo = 0
    dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qt, stride_qd,
                                  stride_dt, stride_dd, offs_n, offs_d, lo, N_CTX, N_CTX,
                                  qk_scale, False, BLOCK_M)
    out = bh.to(tl.int64) * N_CTX * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=cols)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=cols)


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, Li, Di, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                       offs_m, offs_d, lo, hi, N_CTX, qk_scale,
                       CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kT = tl.load(K + offs_n[None, :] * stride_kt + offs_d[:, None] * stride_kd,
                     mask=offs_n[None, :] < N_CTX, other=0.0)
        vT = tl.load(V + offs_n[None, :] * stride_vt + offs_d[:, None] * stride_vd,
                     mask=offs_n[None, :] < N_CTX, other=0.0)
        # P_ij = exp(S_ij - L_i), recomputed as in the dK/dV kernel.
        s = _dot(q, kT, tl.zeros([q.shape[0], BLOCK_N], tl.float32)) * qk_scale
        if MASKED:
            if CAUSAL:
                s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
            else:
                s = tl.where(offs_n[None, :] < N_CTX, s, float("-inf"))
        p = tl.math.exp2(s - Li[:, None])
        # dP_ij = dO_i V_j^T,  dS_ij = P_ij * (dP_ij - D_i),  dQ_i += dS_ij K_j
        dp = _dot(do, vT, tl.zeros([q.shape[0], BLOCK_N], tl.float32))
        ds = p * (dp - Di[:, None])
        dq = _dot(ds.to(kT.dtype), tl.trans(kT), dq)
    return dq


@triton.autotune(configs=DQ_CONFIGS, key=TUNE_KEY)
@triton.jit
def _attn_bwd_dq(Q, K, V, DO, L, Delta, DQ, sm_scale, qk_scale,
                 stride_qb, stride_qh, stride_qt, stride_qd,
                 stride_kb, stride_kh, stride_kt, stride_kd,
                 stride_vb, stride_vh, stride_vt, stride_vd,
                 stride_db, stride_dh, stride_dt, stride_dd,
                 H, N_CTX, SEQ_BUCKET, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # dQ_i = sum_j dS_ij K_j, computed by the owner of Q_i like the forward
    # (same tiles, same masks), so dQ needs no atomic adds across key tiles.
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    i = tl.num_programs(0) - 1 - tl.program_id(0)  # longest tiles first, as in the forward
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_db + h * stride_dh
    offs_m = i * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m < N_CTX
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=rows[:, None], other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dt + offs_d[None, :] * stride_dd,
                 mask=rows[:, None], other=0.0)
    Li = tl.load(L + bh.to(tl.int64) * N_CTX + offs_m, mask=rows, other=0.0)
    Di = tl.load(Delta + bh.to(tl.int64) * N_CTX + offs_m, mask=rows, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    full_hi, end = _key_tiles(i, N_CTX, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, Li, Di, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                            offs_m, offs_d, 0, full_hi, N_CTX, qk_scale, CAUSAL, False, BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, Li, Di, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                            offs_m, offs_d, full_hi, end, N_CTX, qk_scale, CAUSAL, True, BLOCK_N)
    out = bh.to(tl.int64) * N_CTX * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=rows[:, None])


def _check_inputs(q, k, v):
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError("flash_attention: q, k, v must share one shape "
                         f"(batch, heads, seq, head_dim), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16,
                                                              torch.float32):
        raise ValueError(f"flash_attention: q, k, v must all be fp16, bf16 or fp32, got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"flash_attention: head_dim must be one of {HEAD_DIMS}, got {q.shape[-1]}")
    if q.shape[2] < 1:
        raise ValueError("flash_attention: sequence length must be at least 1")


def _strides(*tensors):
    return [s for t in tensors for s in t.stride()]


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        _check_inputs(q, k, v)
        B, H, T, D = q.shape
        o = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
        L = torch.empty((B * H, T), dtype=torch.float32, device=q.device)
        grid = lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)
        _attn_fwd[grid](q, k, v, o, L, sm_scale * LOG2E, *_strides(q, k, v),
                        H, T, triton.next_power_of_2(T), HEAD_DIM=D, CAUSAL=causal)
        ctx.save_for_backward(q, k, v, o, L)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, L = ctx.saved_tensors
        B, H, T, D = q.shape
        delta = torch.empty_like(L)
        _attn_bwd_delta[(triton.cdiv(T, 64), B * H)](o, do, delta, *do.stride(), H, T,
                                                       HEAD_DIM=D, BLOCK_M=64)
        dq, dk, dv = (torch.empty((B, H, T, D), dtype=q.dtype, device=q.device) for _ in range(3))
        args = (ctx.sm_scale, ctx.sm_scale * LOG2E, *_strides(q, k, v, do),
                H, T, triton.next_power_of_2(T))
        grid_n = lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H)
        _attn_bwd_dkdv[grid_n](q, k, v, do, L, delta, dk, dv, *args, HEAD_DIM=D, CAUSAL=ctx.causal)
        grid_m = lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)
        _attn_bwd_dq[grid_m](q, k, v, do, L, delta, dq, *args, HEAD_DIM=D, CAUSAL=ctx.causal)
        return dq, dk, dv, None, None


def flash_attention(q, k, v, *, causal=True, sm_scale=None):
    """softmax(q k^T * sm_scale [+ causal mask]) v for (batch, heads, seq, head_dim)
    tensors of any strides; differentiable in q, k and v."""
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[-1])
    return _FlashAttention.apply(q, k, v, causal, float(sm_scale))


def _reference(q, k, v, causal, sm_scale):
    s = (q @ k.transpose(-2, -1)) * sm_scale
    if causal:
        T = q.shape[-2]
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(future, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _self_check():
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
    for (B, H, T, D), dtype, causal in [((1, 2, 1, 16), torch.float32, True),
                                        ((2, 3, 100, 64), torch.bfloat16, True),
                                        ((1, 2, 70, 32), torch.float16, False),
                                        ((1, 1, 33, 128), torch.float32, False)]:
        q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        do = torch.randn(B, H, T, D, device=device, dtype=dtype)
        out = flash_attention(q, k, v, causal=causal)
        grads = torch.autograd.grad(out, (q, k, v), do)
        ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
        ref = _reference(*ref_in, causal, 1.0 / math.sqrt(D))
        ref_grads = torch.autograd.grad(ref, ref_in, do.double())
        for name, a, r in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
            err = ((a.double() - r).norm() / r.norm().clamp_min(0.1 * r.numel() ** 0.5)).item()
            print(f"B={B} H={H} T={T:3d} d={D:3d} {str(dtype):14s} causal={causal!s:5s} "
                  f"{name:3s} rel err {err:.1e}")
            assert err < tol[dtype], f"{name}: relative error {err} >= {tol[dtype]}"
    print("flash_attention: all checks passed")


def _benchmark():
    B, H, T, D = 8, 12, 1024, 64
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    flops = 4 * B * H * T * T * D / 2  # two matmuls, half of them skipped by the causal mask
    for name, fn in [("triton", lambda: flash_attention(q, k, v, causal=True)),
                     ("sdpa", lambda: sdpa(q, k, v, is_causal=True))]:
        ms = triton.testing.do_bench(fn, return_mode="median")
        print(f"causal forward B={B} H={H} T={T} d={D} bf16 {name:6s}: "
              f"{flops / ms * 1e-9:.0f} TFLOP/s")
    print("full table: python bench/attention.py")


if __name__ == "__main__":
    _self_check()
    if torch.cuda.is_available():
        _benchmark()
