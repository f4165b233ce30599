"""
Benchmark bpe.py against the references, side by side in one process:
- encoding throughput of our GPT-2 tokenizer against tiktoken with the same vocabulary (same ids required),
- training a 32k vocabulary against Hugging Face `tokenizers` (BpeTrainer, ByteLevel pre-tokenizer),
- the textbook algorithm (recount everything after each merge) against ours on 100 KB.

    python bench/bpe.py                 # 10 MB of ../shared/data/bench/gutenberg_en_corpus.txt
    python bench/bpe.py --megabytes 0   # the whole 73 MB corpus
    python bench/bpe.py --encode-only   # skip the training rows

Needs: pip install tiktoken tokenizers. Prints a markdown table for bench/RESULTS.md.
"""

import argparse
import statistics
import sys
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the project's bpe.py, not this file (which has the same name)

import tiktoken  # noqa: E402
from tiktoken.load import data_gym_to_mergeable_bpe_ranks  # noqa: E402
from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, trainers  # noqa: E402

from bpe import ENDOFTEXT, GPT2_PATTERN, Tokenizer, textbook_merges  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def best_time(function, repeats):
    """The fastest of several runs: the least disturbed by whatever else the machine does."""
    times, result = best_times([function], repeats)[0]
    return min(times), result


def best_times(functions, repeats):
    """(the time of each round, last result) of each function, the functions taking turns in
    each round: on a shared machine a busy spell then slows every function alike. This VM's speed
    also jumps by up to half for a second or two at a time (bench/RESULTS.md), which the fastest
    of a few rounds catches for one side and not the other, so the ratios are also given as the
    median over the rounds of each round's ratio (the two sides timed one right after the other).

    A list of ids is kept as a compact array: millions of ints left alive as Python objects would
    make each later garbage collection scan them, and only bpe.py's encoder triggers collections
    (tiktoken builds its list in one go), so they would slow ours alone."""
    times, results = [[] for _ in functions], [None] * len(functions)
    for _ in range(repeats):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            result = function()
            times[i].append(time.perf_counter() - start)
            results[i] = array("l", result) if isinstance(result, list) else result
            del result
    return list(zip(times, results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=10, help="how much of the corpus to use (0: all of it)")
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encode-only", action="store_true", help="skip training (the slow rows)")
    args = parser.parse_args()

    corpus = DATA / "bench" / "gutenberg_en_corpus.txt"
    if not corpus.is_file():
        sys.exit(f"error: {corpus} not found: this benchmark needs ../shared/data")
    text = corpus.read_text(encoding="utf-8")
    if args.megabytes:
        text = text.encode("utf-8")[:int(args.megabytes * 1e6)].decode("utf-8", errors="ignore")
    megabytes = len(text.encode("utf-8")) / 1e6
    rows = []

    # 1. Encoding, side by side. Both are timed fresh: each round encodes with a new tokenizer of
    # each kind, made before the clock starts (ours then has an empty cache), and ours again warm.
    # Loading the GPT-2 files is timed apart for both, and with the encoding in the last rows.
    encoder_json, vocab_bpe = DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe"

    def load_tiktoken():
        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
        return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256})

    def load_ours():
        return Tokenizer.from_gpt2(encoder_json, vocab_bpe)

    ours = load_ours()
    ours.encode_ordinary(text)
    fresh_reference = iter([load_tiktoken() for _ in range(args.repeats)])
    fresh = iter([load_ours() for _ in range(args.repeats)])
    reference, cold, warm, split, reference_load, load, reference_both, ours_both = best_times(
            [lambda: next(fresh_reference).encode_ordinary(text),
             lambda: next(fresh).encode_ordinary(text),
             lambda: ours.encode_ordinary(text),
             lambda: len(ours.compiled_pattern.findall(text)),  # for scale: `regex` alone
             load_tiktoken, load_ours,
             lambda: load_tiktoken().encode_ordinary(text),
             lambda: load_ours().encode_ordinary(text)], args.repeats)
    reference_ids = reference[1]
    assert cold[1] == warm[1] == ours_both[1] == reference_ids, "ids differ from tiktoken"

    def speed(ours, reference):  # MB/s, fastest round (median); ratio, fastest (median of rounds')
        times, reference_times = ours[0], reference[0]
        ratios = [r / t for r, t in zip(reference_times, times)]
        return (f"{megabytes / min(times):.2f} MB/s ({megabytes / statistics.median(times):.2f})",
                f"{min(reference_times) / min(times):.2f}x ({statistics.median(ratios):.2f}x)")

    rows.append(("encode, tiktoken (reference)", *speed(reference, reference)))
    rows.append(("encode, bpe.py, fresh tokenizer (empty cache)", *speed(cold, reference)))
    rows.append(("encode, bpe.py, warm cache", *speed(warm, reference)))
    rows.append(("pre-tokenization with `regex` alone (for scale)", *speed(split, reference)))
    for name, (times, _) in (("tiktoken", reference_load), ("bpe.py", load)):
        rows.append((f"load the GPT-2 files, {name}",
                     f"{min(times):.2f} s ({statistics.median(times):.2f})", ""))
    rows.append(("load, then encode: tiktoken (reference)", *speed(reference_both, reference_both)))
    rows.append(("load, then encode: bpe.py", *speed(ours_both, reference_both)))
    print(f"encoded {megabytes:.1f} MB: {len(reference_ids):,} tokens, identical ids", file=sys.stderr)
    if args.encode_only:
        return print_table(megabytes, rows)

    # 2. Training a vocabulary of the same size on the same text.
    def train_hf():
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator([text], trainer)
        return tokenizer

    hf_time, _ = best_time(train_hf, 1)
    our_time, _ = best_time(lambda: Tokenizer.train(text, args.vocab_size, special_tokens=[ENDOFTEXT]), 1)
    rows.append((f"train {args.vocab_size} vocab, HF tokenizers (reference)", f"{hf_time:.1f} s", "1.00x"))
    rows.append((f"train {args.vocab_size} vocab, bpe.py", f"{our_time:.1f} s", f"{our_time / hf_time:.2f}x the time"))

    # 3. What the incremental updates buy: the textbook loop on 100 KB.
    small = text[:100_000]
    merges = 256 + 512
    naive_time, naive_merges = best_time(lambda: textbook_merges(small, merges), 1)
    fast_time, fast = best_time(lambda: Tokenizer.train(small, merges), 1)
    assert fast.merges == naive_merges, "the fast trainer must make the textbook's merges"
    rows.append(("train 512 merges on 100 KB, textbook algorithm", f"{naive_time:.2f} s", f"{naive_time / fast_time:.0f}x the time"))
    rows.append(("train 512 merges on 100 KB, bpe.py", f"{fast_time:.2f} s", "1.00x"))

    print_table(megabytes, rows)


def print_table(megabytes, rows):
    print(f"| measurement ({megabytes:.1f} MB of Gutenberg text) | figure: fastest round (median) "
          "| ratio: fastest (median of each round's) |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
