"""Generate text with a GPT: greedy decoding, sampling (temperature, top-k, top-p),
repetition penalty, stop strings and beam search, all with the KV cache of gpt.py.

    python sample.py --prompt "To be, or not to be"            # from out/ckpt.pt (train.py)
    python sample.py --init-from ~/gpt2 --prompt "Hello" --top-p 0.9   # from GPT-2 weights
    python sample.py --init-from openai-gpt --prompt "the night was"   # GPT-1, from the Hub
    echo "Once upon a time" | python sample.py --greedy

The generation functions (generate, generate_stream, beam_search) are importable:
    from sample import generate
"""

import argparse
import codecs
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bpe import one_line_errors
from gpt import INIT_FROM_HELP, load_model
from train import default_dtype, pick_device

# -----------------------------------------------------------------------------
# Choosing the next token


def next_token_logits(model, idx, kv_cache=None):
    """Logits (B, vocab_size) for the token that follows each row of idx (B, T).

    The model sees at most block_size tokens, the last ones. With a KV cache only the
    tokens the cache has not seen yet go through the model: usually just the newest one.
    Past the context length the window slides by one token per step, which moves every
    token to a new position; the cached keys and values were computed with the old
    (learned, absolute) position embeddings, so they are useless. The cache is then emptied
    and the whole window recomputed: exactly what happens without a cache, at the same cost.
    Only the last position's hidden state goes through the output layer: a 512-token prompt
    would otherwise pay for 512 rows of (n_embd x vocab_size) logits to use one.
    """
    block_size = model.config.block_size
    if kv_cache is None:
        return model.lm_head(model.hidden_states(idx[:, -block_size:])[:, -1, :])
    seen = 0 if kv_cache[0] is None else kv_cache[0][0].size(2)
    if idx.size(1) > block_size:
        kv_cache[:] = model.new_kv_cache()
        idx, seen = idx[:, -block_size:], 0
    return model.lm_head(model.hidden_states(idx[:, seen:], kv_cache=kv_cache)[:, -1, :])


def apply_repetition_penalty(logits, idx, penalty):
    """Make every token already in idx less likely (CTRL, Keskar et al. 2019, section 4.1):
    its logit is divided by the penalty when positive and multiplied by it when negative."""
    seen = logits.gather(1, idx)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, idx, seen)


def filter_logits(logits, top_k=None, top_p=None):
    """Set to -inf the logits of every token that may not be sampled.

    top_k: keep the k most likely tokens (Fan et al. 2018).
    top_p: nucleus sampling (Holtzman et al. 2019): keep the smallest set of most likely
    tokens whose probabilities add up to at least top_p.
    """
    if top_k:
        values, indices = logits.topk(min(top_k, logits.size(-1)), dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)
    if top_p is not None and top_p < 1.0:
        sorted_logits, indices = logits.sort(dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of all more likely tokens
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, sorted_logits)
    return logits


@torch.no_grad()
def generate_stream(model, idx, max_new_tokens, *, temperature=1.0, top_k=None, top_p=None,
                    repetition_penalty=1.0, use_kv_cache=True, generator=None):
    """Continue each row of idx (B, T), yielding the new tokens (B,) one step at a time.

    temperature 0 is greedy decoding (always the most likely token); otherwise the
    logits are divided by the temperature, filtered by top-k / top-p and sampled.
    """
    kv_cache = model.new_kv_cache() if use_kv_cache else None
    for _ in range(max_new_tokens):
        logits = next_token_logits(model, idx, kv_cache).float()
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, idx, repetition_penalty)
        if temperature == 0:
            token = logits.argmax(dim=-1)
        else:
            probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            token = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        idx = torch.cat([idx, token[:, None]], dim=1)
        yield token


def generate(model, idx, max_new_tokens, *, stop_ids=(), **sampling):
    """idx (B, T) -> (B, T + n), n <= max_new_tokens. Options as in generate_stream.

    Generation ends early once every row has produced one of stop_ids; a row that
    stopped before the others is filled up with its stop token.
    """
    stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=idx.device)
    stopped_with = torch.full((idx.size(0),), -1, device=idx.device)  # -1: still going
    new_tokens = []
    for token in generate_stream(model, idx, max_new_tokens, **sampling):
        token = torch.where(stopped_with >= 0, stopped_with, token)
        new_tokens.append(token)
        stops_now = (stopped_with < 0) & torch.isin(token, stop_ids)
        stopped_with = torch.where(stops_now, token, stopped_with)
        if (stopped_with >= 0).all():
            break
    return torch.cat([idx, *(t[:, None] for t in new_tokens)], dim=1)


@torch.no_grad()
def beam_search(model, idx, max_new_tokens, beam_width, *, length_penalty=1.0, stop_ids=(),
                use_kv_cache=True):
    """The most likely continuation of one prompt, idx (1, T), found by beam search.

    At each step every kept sequence (a "beam") is extended by every token, and the
    beam_width extensions with the highest total log-probability are kept. A sequence
    that emits a stop token is finished. Every token lowers the total log-probability,
    so finished sequences are compared by total / length**length_penalty (a simpler form
    of the length normalisation of Wu et al. 2016, section 7); without it short answers win.
    """
    beams, scores = idx, torch.zeros(1, device=idx.device)  # (n_beams, T + step), (n_beams,)
    finished = []  # (normalised score, sequence)
    kv_cache = model.new_kv_cache() if use_kv_cache else None
    for step in range(1, max_new_tokens + 1):
        logprobs = F.log_softmax(next_token_logits(model, beams, kv_cache).float(), dim=-1)
        vocab_size = logprobs.size(-1)
        # Twice the width, so beam_width sequences survive even if some candidates finish.
        candidates = (scores[:, None] + logprobs).view(-1)
        top_scores, top = candidates.topk(min(2 * beam_width, candidates.numel()))
        rows, tokens = top // vocab_size, top % vocab_size
        keep = []
        for i in range(len(top)):
            if tokens[i].item() in stop_ids:
                sequence = torch.cat([beams[rows[i]], tokens[i:i + 1]])
                finished.append((top_scores[i].item() / step ** length_penalty, sequence))
            else:
                keep.append(i)
            if len(keep) == beam_width:
                break
        if len(finished) >= beam_width:
            break
        keep = torch.tensor(keep, device=idx.device)
        beams = torch.cat([beams[rows[keep]], tokens[keep, None]], dim=1)
        scores = top_scores[keep]
        if kv_cache is not None:  # each kept beam continues from its parent's keys and values
            kv_cache[:] = [(k[rows[keep]], v[rows[keep]]) for k, v in kv_cache]
    else:  # max_new_tokens reached: the unfinished beams compete too
        n_new = max(max_new_tokens, 1)
        finished += [(s.item() / n_new ** length_penalty, b) for s, b in zip(scores, beams)]
    _, best = max(finished, key=lambda pair: pair[0])
    return best[None]


# -----------------------------------------------------------------------------
# The command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="out", help="directory with ckpt.pt written by train.py")
    p.add_argument("--init-from", metavar="MODEL", help=f"{INIT_FROM_HELP} (default: "
                   "--out-dir's ckpt.pt)")
    p.add_argument("--prompt", help="text to continue (default: --prompt-file, else stdin, "
                                    "else empty: start from <|endoftext|>)")
    p.add_argument("--prompt-file", help="read the prompt from this file ('-' for stdin)")
    p.add_argument("--allow-special", action="store_true",
                   help="special-token text in the prompt, like <|endoftext|>, becomes that token "
                        "(default: plain text, as typed)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=200)
    # 0.8 and 50, as train.py's closing sample: a small model's long tail of unlikely tokens is
    # mostly noise (nanoGPT samples at 0.8 too); --temperature 1 --top-k 0 is the model's own
    p.add_argument("--temperature", type=float, default=0.8,
                   help="0 is greedy decoding (default: 0.8)")
    p.add_argument("--top-k", type=int, default=50,
                   help="sample only from the k most likely tokens (default: 50; 0: all)")
    p.add_argument("--top-p", type=float,
                   help="nucleus sampling: the most likely tokens with mass >= p, among the top-k "
                        "(add --top-k 0 for nucleus sampling alone)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--beam", type=int, metavar="N",
                   help="beam search with N beams (ignores sampling options)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search: score / length**this")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages repeating tokens")
    p.add_argument("--stop", action="append", metavar="STRING",
                   help="stop when this text appears (repeatable; escapes such as \\n are read as "
                        "in Python; '' for none); <|endoftext|> always stops (default: where a "
                        "top-level Python definition ends: two blank lines, or one before the "
                        "next def, class or @)")
    p.add_argument("--seed", type=int, help="random seed, for reproducible samples")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="print tokens as they are made (default: when writing to a terminal)")
    p.add_argument("--no-kv-cache", action="store_true",
                   help="recompute the whole context every step")
    p.add_argument("--device", default="", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on CUDA (float16 if unsupported), float32 elsewhere")
    return p.parse_args(argv)


def check_args(args):
    if args.num_samples < 1 or args.max_new_tokens < 0:
        raise ValueError("--num-samples must be >= 1 and --max-new-tokens >= 0")
    if not args.temperature >= 0:  # nan too
        raise ValueError("--temperature must be >= 0 (0 is greedy)")
    if args.top_k is not None and args.top_k < 0:
        raise ValueError("--top-k must be >= 1, or 0 for all tokens")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError("--top-p must be in (0, 1]")
    if args.beam is not None and args.beam < 1:
        raise ValueError("--beam must be >= 1")
    if not args.repetition_penalty > 0:
        raise ValueError("--repetition-penalty must be > 0 (1 means no penalty)")


# Where a top-level Python definition ends: two blank lines (PEP 8), or one before the next
# definition (half of the standard library's). After train.py's default run, on Python's source,
# `--prompt "def"` then prints one function, not text cut mid-line by --max-new-tokens.
DEFAULT_STOPS = ["\n\n\n", "\n\ndef ", "\n\nclass ", "\n\n@"]


def stop_strings(given):
    """--stop's strings, their escapes read: a shell passes "\\n" as a backslash and an n."""
    if given is None:
        return DEFAULT_STOPS
    return [s for s in (s.encode("latin-1", "backslashreplace").decode("unicode_escape")
                        for s in given) if s]


def read_prompt(args):
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file == "-" or (args.prompt_file is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if args.prompt_file is not None:
        try:
            return Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as error:
            raise FileNotFoundError(f"cannot read --prompt-file {args.prompt_file}: "
                                    f"{error.strerror}") from None
    return ""


def encode_prompt(tokenizer, prompt, block_size, allow_special=False):
    """A prompt is text from a user: "<|endoftext|>" in it is plain text unless allowed (tiktoken's
    rule), so that a typed or pasted string cannot end the document."""
    ids = (tokenizer.encode(prompt, allowed_special="all") if allow_special else
           tokenizer.encode_ordinary(prompt))
    if not ids:
        if tokenizer.eot_id is None:
            raise ValueError("the prompt is empty and the tokenizer has no <|endoftext|> to start "
                             "from; pass --prompt")
        ids = [tokenizer.eot_id]
    if len(ids) > block_size:
        print(f"warning: the prompt has {len(ids)} tokens, more than the context of {block_size}; "
              f"keeping the last {block_size}", file=sys.stderr)
        ids = ids[-block_size:]
    return ids


def write_sample(tokenizer, tokens, stops, stream):
    """Decode tokens as they come and print the text, cut before the first stop string.

    Tokens are byte sequences and a multi-byte UTF-8 character may be split across two
    of them, so bytes go through an incremental decoder that only returns whole characters.
    While streaming, the last few characters are held back: they may be the start of a stop string.
    Interrupted (Ctrl-C), it prints what was made so far, streaming or not.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, printed = "", 0
    hold_back = max((len(s) for s in stops), default=1) - 1
    try:
        for token in tokens:
            text += decoder.decode(tokenizer.token_bytes(token))
            hits = [text.find(s) for s in stops if s in text]
            if hits:
                text = text[:min(hits)]
                break
            if stream and len(text) - hold_back > printed:
                print(text[printed:len(text) - hold_back], end="", flush=True)
                printed = len(text) - hold_back
        else:
            text += decoder.decode(b"", final=True)
    finally:
        print(text[printed:], flush=True)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors():
        check_args(args)
        stops = stop_strings(args.stop)
        device = pick_device(args.device)
        if args.init_from:
            model, tokenizer, _ = load_model(args.init_from)
        else:  # what train.py wrote
            path = Path(args.out_dir) / "ckpt.pt"
            if not path.is_file():
                raise FileNotFoundError(f"no checkpoint at {path}: train one with `python "
                                        "train.py`, or give --init-from MODEL")
            model, tokenizer, _ = load_model(path, fix="write a new one with `python train.py`")
        # A CPU keeps float32 weights (train.py's bfloat16 there is autocast over them): bfloat16
        # weights, which halve what each decode step reads on a GPU, are unmeasured on a CPU.
        dtype = args.dtype or ("float32" if device.type == "cpu" else default_dtype(device))
        model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                             f"{model.config.vocab_size}: they do not belong together")
        prompt = read_prompt(args)
        ids = encode_prompt(tokenizer, prompt, model.config.block_size, args.allow_special)

    if args.seed is not None:
        torch.manual_seed(args.seed)
    stream = sys.stdout.isatty() if args.stream is None else args.stream
    stop_ids = [] if tokenizer.eot_id is None else [tokenizer.eot_id]
    # GPT-1's tokens end a word with a space (</w>), which the prompt's last word is still owed.
    ends_word = tokenizer.token_bytes(ids[-1]).endswith(b" ") and not prompt.endswith(" ")
    owed_space = " " if ends_word else ""
    idx = torch.tensor([ids], device=device)
    try:
        for i in range(args.num_samples):
            if i > 0:
                print("-" * 40)
            print(prompt + owed_space, end="", flush=True)
            if args.beam:
                out = beam_search(model, idx, args.max_new_tokens, args.beam, stop_ids=stop_ids,
                                  length_penalty=args.length_penalty,
                                  use_kv_cache=not args.no_kv_cache)
                tokens = out[0, idx.size(1):].tolist()
            else:
                tokens = (token.item() for token in generate_stream(
                    model, idx, args.max_new_tokens,
                    temperature=0 if args.greedy else args.temperature, top_k=args.top_k,
                    top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                    use_kv_cache=not args.no_kv_cache))
            tokens = itertools.takewhile(lambda t: t not in stop_ids, tokens)  # <|endoftext|>: end
            write_sample(tokenizer, tokens, stops, stream)
    except KeyboardInterrupt:  # Ctrl-C: write_sample has printed the text made so far
        sys.exit(130)


if __name__ == "__main__":
    main()
