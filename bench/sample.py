"""Benchmark generation speed with and without the KV cache.

    python bench/sample.py               # gpt-mini on the CPU; gpt2 in bfloat16 when CUDA is there
    python bench/sample.py --device cpu --preset gpt2

Prints markdown tables: tokens/s for batch 1 and 8 (cache on / off), the cost of one
decoding step against the length of the prefix before it, and (--versus-hf) greedy generation
next to Hugging Face's `generate` on the same weights, short and long prompts. Without a cache a
step runs the whole prefix through the model, so its cost grows with the prefix; with
the cache it runs one token, and only attention reads the (growing) cached keys.
The weights are random: speed does not depend on them.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpt import GPT, GPTConfig  # noqa: E402
from sample import generate, generate_stream  # noqa: E402


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tokens_per_second(model, batch, prompt_length, new_tokens, use_kv_cache, device):
    idx = torch.randint(0, model.config.vocab_size, (batch, prompt_length), device=device)
    synchronize(device)
    start = time.perf_counter()
    for _ in generate_stream(model, idx, new_tokens, temperature=0, use_kv_cache=use_kv_cache):
        pass
    synchronize(device)
    return batch * new_tokens / (time.perf_counter() - start)


@torch.no_grad()
def step_time(model, prefix_length, use_kv_cache, device, repeats):
    """Seconds to compute the logits of one new token after prefix_length tokens: the
    fastest of `repeats` runs, since noise from other processes only ever adds time."""
    idx = torch.randint(0, model.config.vocab_size, (1, prefix_length + 1), device=device)
    filled = model.new_kv_cache()
    model(idx[:, :prefix_length], kv_cache=filled)
    times = []
    for _ in range(repeats):
        cache = list(filled)  # a fresh copy: each step appends to the cache
        synchronize(device)
        start = time.perf_counter()
        if use_kv_cache:
            model(idx[:, prefix_length:], kv_cache=cache)
        else:
            model(idx)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def versus_hugging_face(model, device, repeats):
    """Greedy generation, ours vs transformers' GPT2LMHeadModel.generate on the same weights
    (saved with save_pretrained, loaded by Hugging Face), both with their KV caches. The prompt
    pass dominates a long prompt: there both must compute logits for the last position only."""
    import tempfile

    from transformers import GPT2LMHeadModel
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        hf = GPT2LMHeadModel.from_pretrained(folder).to(device=device, dtype=model.lm_head.weight.dtype)
    hf.eval()
    print("\n| prompt + new tokens | ours (s) | Hugging Face generate (s) | speed ratio | same tokens |")
    print("| --- | ---: | ---: | ---: | --- |")
    for prompt_length, new_tokens in ((16, 64), (512, 32)):
        idx = torch.randint(0, model.config.vocab_size, (1, prompt_length), device=device)
        times = {"ours": [], "hf": []}
        for _ in range(repeats):
            for name in ("ours", "hf"):
                synchronize(device)
                start = time.perf_counter()
                if name == "ours":
                    ours = generate(model, idx, new_tokens, temperature=0)
                else:
                    with torch.no_grad():
                        theirs = hf.generate(idx, do_sample=False, max_new_tokens=new_tokens,
                                             min_new_tokens=new_tokens, attention_mask=torch.ones_like(idx),
                                             pad_token_id=0)
                synchronize(device)
                times[name].append(time.perf_counter() - start)
        t_ours, t_hf = min(times["ours"]), min(times["hf"])
        print(f"| {prompt_length} + {new_tokens} | {t_ours:.3f} | {t_hf:.3f} | {t_hf / t_ours:.2f}x "
              f"| {torch.equal(ours, theirs)} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", help="default: gpt2 on CUDA, gpt-mini on the CPU")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: its own choice)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per measurement; the fastest is reported")
    p.add_argument("--versus-hf", action="store_true",
                   help="only greedy generation next to Hugging Face's generate (use --preset gpt2)")
    args = p.parse_args()
    on_gpu = args.device.startswith("cuda")
    args.preset = args.preset or ("gpt2" if on_gpu else "gpt-mini")
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPTConfig.preset(args.preset, dropout=0.0)
    model = GPT(config).to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    print(f"{args.preset}: {model.num_params() / 1e6:.1f}M parameters, block_size {config.block_size}, "
          f"{args.device}, {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    tokens_per_second(model, 1, args.prompt_length, 8, True, args.device)  # warm-up
    if args.versus_hf:
        return versus_hugging_face(model, args.device, args.repeats)

    print(f"Generation of {args.new_tokens} tokens after a {args.prompt_length}-token prompt "
          f"(greedy, best of {args.repeats}):\n")
    print("| batch | KV cache | tokens/s |\n| ---: | --- | ---: |")
    for batch in (1, 8):
        for use_kv_cache in (True, False):
            rate = max(tokens_per_second(model, batch, args.prompt_length, args.new_tokens, use_kv_cache,
                                         args.device) for _ in range(args.repeats))
            print(f"| {batch} | {'on' if use_kv_cache else 'off'} | {rate:,.1f} |")

    print(f"\nOne decoding step (batch 1) after a prefix of n tokens, best of {args.repeats}:\n")
    print("| prefix n | with cache (ms) | without cache (ms) |\n| ---: | ---: | ---: |")
    n = 16
    while n < config.block_size:
        cached = step_time(model, n, True, args.device, args.repeats)
        uncached = step_time(model, n, False, args.device, args.repeats)
        print(f"| {n} | {cached * 1e3:.2f} | {uncached * 1e3:.2f} |")
        n *= 2
    n = config.block_size - 1
    print(f"| {n} | {step_time(model, n, True, args.device, args.repeats) * 1e3:.2f} | "
          f"{step_time(model, n, False, args.device, args.repeats) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
