"""Benchmark: Triton fused LayerNorm vs torch.nn.functional.layer_norm.

    python bench/layer_norm.py           # needs a CUDA GPU; prints a markdown table

Times are medians of triton.testing.do_bench, on inputs that require grad
(the training forward, which keeps mean and rstd for the backward). Bandwidth
counts the bytes each pass must move at least: forward reads x, w, b and
writes y; forward+backward adds reading x, dy and writing dx. The device-to-
device copy bandwidth of the same GPU is measured first, for the "% of copy"
column.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for kernels/


def median_ms(fn, **kwargs):
    import triton
    return triton.testing.do_bench(fn, return_mode="median", **kwargs)


def copy_gbps(n=1 << 29):
    x = torch.empty(n, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    return 2 * x.numel() * x.element_size() / median_ms(lambda: y.copy_(x)) * 1e-6


def main():
    if not torch.cuda.is_available():
        print("bench/layer_norm.py needs a CUDA GPU; skipped.")
        return
    import triton
    from kernels.layer_norm import layer_norm

    copy = copy_gbps()
    print(f"## LayerNorm on {torch.cuda.get_device_name()} (torch {torch.__version__}, "
          f"triton {triton.__version__})\n")
    print(f"device-to-device copy: {copy:.0f} GB/s\n")
    print("| rows x hidden (bf16) | pass | Triton GB/s | torch GB/s | Triton / torch | Triton % of copy |")
    print("|---|---|---|---|---|---|")
    # GPT-2's widths (small, medium, large, xl) at 8 sequences of 1024 tokens, then a wide layer
    for M, N in [(8 * 1024, 768), (8 * 1024, 1024), (8 * 1024, 1280), (8 * 1024, 1600), (32768, 4096)]:
        x = torch.randn(M, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = torch.randn(N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn_like(x)
        act = M * N * x.element_size()
        fwd_bytes = 2 * act + 2 * N * w.element_size()
        fb_bytes = fwd_bytes + 3 * act + 2 * N * w.element_size()
        impls = {"triton": lambda: layer_norm(x, w, b),
                 "torch": lambda: F.layer_norm(x, (N,), w, b)}
        gbps = {}
        for name, fn in impls.items():
            ms_f = median_ms(fn)
            ms_fb = median_ms(lambda: fn().backward(dy), grad_to_none=[x, w, b])
            gbps[name] = (fwd_bytes / ms_f * 1e-6, fb_bytes / ms_fb * 1e-6)
        for i, p in enumerate(("forward", "fwd+bwd")):
            t, s = gbps["triton"][i], gbps["torch"][i]
            print(f"| {M} x {N} | {p} | {t:.0f} | {s:.0f} | {t / s:.2f}x | {100 * t / copy:.0f}% |")


if __name__ == "__main__":
    main()
