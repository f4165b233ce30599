"""Benchmark: Triton flash attention vs torch SDPA, and a GPT-2 training step.

    python bench/attention.py            # needs a CUDA GPU; prints markdown tables

Times are medians of triton.testing.do_bench. FLOPs count the two matmuls of
the forward (4 * B * H * T^2 * d, halved when causal) and 2.5x that for the
backward (five matmuls), as the FlashAttention papers do. The bf16 matmul
rate of the same GPU is measured first, for the "% of matmul" column.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for kernels/ and gpt.py


def median_ms(fn, **kwargs):
    import triton
    return triton.testing.do_bench(fn, return_mode="median", **kwargs)


def matmul_tflops(n=8192):
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / median_ms(lambda: a @ b) * 1e-9


def sdpa_backend(q, k, v):
    """Which backend SDPA dispatched to, read from the names of the ops and kernels it ran
    (aten::_scaled_dot_product_{cudnn,flash,efficient}_attention, flash_fwd_kernel, ...)."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.cuda.synchronize()
    names = " ".join(e.key.lower() for e in prof.key_averages())
    for needle, backend in [("cudnn", "cuDNN"), ("flash", "flash"),
                            ("efficient", "mem-efficient"), ("fmha", "mem-efficient")]:
        if needle in names:
            return backend
    return "math"


def attention_rows(matmul_rate):
    from kernels.flash_attention import flash_attention

    shapes = [  # (batch, heads, seq, head_dim, causal): GPT-2 small, then long sequences
        (8, 12, 1024, 64, True),
        (4, 32, 4096, 64, True), (4, 16, 4096, 128, True), (4, 16, 4096, 128, False),
        (1, 32, 16384, 64, True), (1, 16, 16384, 128, True),
    ]
    print("| B | H | T | d | causal | pass | Triton TFLOP/s | SDPA TFLOP/s | Triton / SDPA "
          "| Triton % of bf16 matmul | SDPA backend |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for B, H, T, D, causal in shapes:
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        do = torch.randn_like(q)
        backend = sdpa_backend(q, k, v)
        fwd_flops = 4 * B * H * T * T * D * (0.5 if causal else 1.0)
        impls = {"Triton": lambda: flash_attention(q, k, v, causal=causal),
                 "SDPA": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)}
        rates = {}
        for name, fn in impls.items():
            o = fn()
            ms_f = median_ms(fn)
            ms_b = median_ms(lambda: o.backward(do, retain_graph=True), grad_to_none=[q, k, v])
            ms_fb = median_ms(lambda: fn().backward(do), grad_to_none=[q, k, v])
            rates[name] = {"forward": fwd_flops / ms_f * 1e-9,
                           "backward": 2.5 * fwd_flops / ms_b * 1e-9,
                           "fwd+bwd": 3.5 * fwd_flops / ms_fb * 1e-9}
        for p in ("forward", "backward", "fwd+bwd"):
            t, s = rates["Triton"][p], rates["SDPA"][p]
            print(f"| {B} | {H} | {T} | {D} | {causal} | {p} | {t:.0f} | {s:.0f} | {t / s:.2f}x "
                  f"| {100 * t / matmul_rate:.0f}% | {backend} |")


def gpt2_step_rows():
    """One GPT-2 124M training step (forward, backward, AdamW) with PyTorch's kernels (SDPA and
    F.layer_norm) and with ours (kernels/: flash attention and the fused LayerNorm)."""
    import gpt
    B, T = 8, 1024
    print("\n| GPT-2 124M step, B=8, T=1024, bf16 autocast | ms / step | tokens / s |")
    print("|---|---|---|")
    for name, use_kernels, attention in (("PyTorch (SDPA, F.layer_norm)", False, "sdpa"),
                                         ("ours (kernels/)", True, "triton")):
        torch.manual_seed(0)
        model = gpt.GPT(gpt.GPTConfig.preset("gpt2"), attention=attention, kernels=use_kernels)
        model = model.cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        x = torch.randint(0, 50257, (B, T), device="cuda")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        ms = median_ms(step, warmup=5, rep=50)
        print(f"| {name} | {ms:.1f} | {B * T / ms * 1e3:,.0f} |")


def main():
    if not torch.cuda.is_available():
        print("bench/attention.py needs a CUDA GPU; skipped.")
        return
    rate = matmul_tflops()
    print(f"## Attention on {torch.cuda.get_device_name()} (torch {torch.__version__}, "
          f"triton {__import__('triton').__version__})\n")
    print(f"bf16 matmul (8192^3): {rate:.0f} TFLOP/s\n")
    attention_rows(rate)
    gpt2_step_rows()


if __name__ == "__main__":
    main()
