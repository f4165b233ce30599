"""Optional Triton kernels: flash attention and fused LayerNorm (Linux + triton only)."""
