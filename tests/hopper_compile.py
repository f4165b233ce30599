"""Compile every kernel in kernels/ for Hopper (sm_90) without a GPU.

The Triton interpreter runs kernels as NumPy and never touches Triton's
compiler, so on a CPU-only CI machine nothing else checks that the kernels
still compile with the installed Triton release. ptxas ships inside the
triton wheel, so compiling to a cubin needs no GPU. Run by test_kernels.py in
a subprocess, because the interpreter (TRITON_INTERPRET=1) must be off here.

    python tests/hopper_compile.py
"""
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import kernels.flash_attention as fa  # noqa: E402
import kernels.layer_norm as ln  # noqa: E402

FLOAT_POINTERS = {"Q", "K", "V", "O", "DO", "DQ", "DK", "DV", "X", "Y", "W", "B", "DX", "DY", "DW", "DB"}
FP32_POINTERS = {"L", "Delta", "Mean", "Rstd", "DW_part", "DB_part"}


def compile_for_hopper(kernel, dtype, constexprs, num_warps=4, num_stages=3):
    fn = kernel
    while not isinstance(fn, JITFunction):  # unwrap @triton.autotune
        fn = fn.fn
    constexprs = dict(constexprs)
    signature = {}
    for name in fn.arg_names:
        if name.startswith("stride_") and name.endswith("d"):
            constexprs[name] = 1  # as the JIT specializes a unit stride at launch
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in FLOAT_POINTERS:
            signature[name] = "*" + dtype
        elif name in FP32_POINTERS:
            signature[name] = "*fp32"
        elif name in ("sm_scale", "qk_scale", "eps"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    triton.compile(src, target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": num_warps, "num_stages": num_stages})
    print(f"compiled {fn.__name__} {dtype} {constexprs}")


def main():
    for dtype, head_dim, causal in [("bf16", 128, True), ("fp32", 32, False)]:
        attn = {"HEAD_DIM": head_dim, "CAUSAL": causal}
        compile_for_hopper(fa._attn_fwd, dtype, {**attn, "BLOCK_M": 64, "BLOCK_N": 32})
        compile_for_hopper(fa._attn_bwd_dkdv, dtype, {**attn, "BLOCK_M": 32, "BLOCK_N": 64})
        compile_for_hopper(fa._attn_bwd_dq, dtype, {**attn, "BLOCK_M": 64, "BLOCK_N": 32})
        compile_for_hopper(fa._attn_bwd_delta, dtype, {"HEAD_DIM": head_dim, "BLOCK_M": 64})
        compile_for_hopper(ln._layer_norm_fwd, dtype, {"HAS_BIAS": causal, "BLOCK_N": 1024})
        compile_for_hopper(ln._layer_norm_bwd_dx, dtype, {"HAS_BIAS": causal, "BLOCK_N": 1024})
        compile_for_hopper(ln._layer_norm_bwd_dwdb, dtype,
                           {"HAS_BIAS": causal, "BLOCK_G": 32, "BLOCK_N": 128})


if __name__ == "__main__":
    main()
