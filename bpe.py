"""
Byte-level Byte Pair Encoding (BPE): the tokenizer of GPT-2, written from scratch.

How it works (Sennrich et al. 2016; made byte-level by GPT-2, Radford et al. 2019, section 2.2):
1. Text becomes UTF-8 bytes. The 256 byte values are the first 256 tokens, so every string
   can be encoded and there is no "unknown" token.
2. A regex splits the text into pre-tokens (words with their leading space, numbers,
   punctuation runs, whitespace). Merges never cross a pre-token boundary; GPT-2 section 2.2
   explains why: otherwise BPE wastes its vocabulary on "dog." "dog!" "dog?".
3. Training: count every adjacent pair of tokens, merge the most frequent pair into a new
   token, repeat until the vocabulary has the requested size.
4. Encoding: inside each pre-token, apply the learned merges in the order they were learned.

Usage:
    tok = Tokenizer.train(text, vocab_size=1024, special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world")           # [...]
    tok.decode(ids)                           # "hello world"
    gpt2 = Tokenizer.from_gpt2("encoder.json", "vocab.bpe")   # OpenAI's exact ids
"""

import argparse
import heapq
import importlib.util
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import unicodedata
import warnings
from collections import Counter
from contextlib import contextmanager
from itertools import chain, repeat
from pathlib import Path

import regex

# GPT-2's pre-tokenizer (openai/gpt-2, src/encoder.py): English contractions, letter runs,
# number runs and punctuation runs (each with one optional leading space), then whitespace.
# `\s+(?!\S)` leaves the last space of a run to start the next word, so " world" stays one token.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-4's (cl100k_base) pattern, as in tiktoken: case-insensitive contractions, numbers in groups
# of at most three digits, and newlines kept apart from other whitespace.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
                r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

# Python's own `re` runs GPT-2's pattern faster than `regex` (bench/RESULTS.md), but it has no
# \p{L} or \p{N}, and its own Unicode classes differ from them on some characters ("²" is a
# letter to `re`'s \w and a number to \p{N}; "\x1c" is whitespace to `re`'s \s, not to `regex`'s).
# So `regex` itself sorts, once at import, the characters most English text is made of (Latin-1,
# Latin Extended, General Punctuation: accents, curly quotes, dashes) into letters, numbers and
# whitespace, and the pattern is written again for `re` with those lists as its classes: "other"
# is what is in none of them, and the lookahead (?!\S) becomes "not followed by a character
# outside the spaces". On text made of these characters only, each class then holds exactly the
# characters of the class it stands for, and both modules try the alternatives in the same order
# at each position, so they find the same pre-tokens. Lists are also faster than `re`'s \w: a
# look-up in a table instead of a Unicode category test.
RE_CHARACTERS = "".join(map(chr, [*range(0x250), *range(0x2000, 0x2070)]))


def gpt2_pattern_for_re() -> re.Pattern:
    """GPT2_PATTERN with \\p{L}, \\p{N} and \\s spelled out as lists of RE_CHARACTERS."""
    def listed(unicode_class):
        return "".join(re.escape(c) for c in RE_CHARACTERS if regex.match(unicode_class, c))
    letters, numbers, spaces = listed(r"\p{L}"), listed(r"\p{N}"), listed(r"\s")
    return re.compile(rf"""'(?:[st]|re|ve|m|ll|d)| ?[{letters}]+| ?[{numbers}]+"""
                      rf"""| ?[^{spaces}{letters}{numbers}]+"""
                      rf"""|[{spaces}]+(?![^{spaces}])|[{spaces}]+""")


GPT2_PATTERN_RE = gpt2_pattern_for_re()
NOT_FOR_RE = re.compile("[^" + re.escape(RE_CHARACTERS) + "]")

ENDOFTEXT = "<|endoftext|>"
NEVER = float("inf")  # the rank of a pair that is not a merge
LONG_PRE_TOKEN = 48  # bytes; longer pre-tokens go to Tokenizer._merge_with_heap, faster there
FILE_HEADER = "bpe.py tokenizer v1"


def bytes_to_unicode():
    """OpenAI's table from each byte to a printable character, used by GPT-2's vocabulary files.

    Printable bytes map to themselves; the rest (space, newline, control bytes...) are shifted
    to characters from 256 on, which is why a space shows up as 'Ġ' and a newline as 'Ċ'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()


def printable(token: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in token)


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in `ids`, left to right, by `new_id`."""
    out, i, n = [], 0, len(ids)
    first, second = pair
    while i < n:
        if i < n - 1 and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def textbook_merges(text, vocab_size, pattern=GPT2_PATTERN):
    """BPE training as the textbook (and minbpe) writes it: count every adjacent pair of the whole
    corpus, merge the most frequent into a new token, count again, repeat; ties go to the smallest
    (left, right) pair. Read it first: Tokenizer.train makes the same merges, in far less time.
    Returns {(left_id, right_id): new_id}."""
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]
    merges = {}
    for new_id in range(256, vocab_size):
        counts = Counter(pair for ids in chunks for pair in zip(ids, ids[1:]))
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        merges[pair] = new_id
        chunks = [merge(ids, pair, new_id) for ids in chunks]
    return merges


# Right after a newline that follows a non-space character, before an ASCII letter: both the GPT-2
# and the GPT-4 patterns always end a pre-token there, whatever comes before or after.
SAFE_CUT = regex.compile(r"(?<=\S\n)(?=[A-Za-z])")


def safe_split(text: str, pieces: int) -> list[str]:
    """Cut a long text into about `pieces` parts that pre-tokenize exactly as the whole does, so the
    parts can be encoded independently (in parallel) and their ids concatenated."""
    cuts, step = [0], max(1, len(text) // max(1, pieces))
    for target in range(step, len(text), step):
        found = SAFE_CUT.search(text, max(target, cuts[-1] + 1))
        if found is None:
            break
        if found.start() > cuts[-1]:
            cuts.append(found.start())
    cuts.append(len(text))
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def _count_pretokens(args):
    text, pattern = args
    return Counter(regex.findall(pattern, text))


class Tokenizer:
    def __init__(self, merges, *, pattern=GPT2_PATTERN, special_tokens=None, byte_ids=None):
        """merges: {(left_id, right_id): new_id}, where the new ids grow with the merge's rank.
        byte_ids[b] is the id of the single byte b (0..255 in order, except in GPT-2's files).

        The ids must number the vocabulary 0..vocab_size-1, each once: the bytes, then merge k
        making id 256 + k from two ids below it, then the special tokens. A model's embedding
        has one row per id, so anything else (a gap, an id used twice) would silently misread ids.
        """
        self.merges = dict(merges)
        self.pattern = pattern
        try:
            self.compiled_pattern = regex.compile(pattern)
        except (regex.error, TypeError) as error:
            raise ValueError(f"split pattern {pattern!r} is not a valid regex: {error}") from None
        self.special_tokens = dict(special_tokens or {})  # text -> id
        self.byte_ids = list(byte_ids) if byte_ids is not None else list(range(256))
        if sorted(self.byte_ids) != list(range(256)):
            raise ValueError("the single bytes must have the ids 0..255, one each")
        self.vocab = {self.byte_ids[b]: bytes([b]) for b in range(256)}  # id -> bytes
        for (left, right), new_id in sorted(self.merges.items(), key=lambda item: item[1]):
            if new_id != len(self.vocab) or left not in self.vocab or right not in self.vocab:
                raise ValueError(f"merge {left} {right} -> {new_id}: "
                                 "merge k must make the id 256 + k from two ids below it")
            self.vocab[new_id] = self.vocab[left] + self.vocab[right]
        first, ids = len(self.vocab), sorted(self.special_tokens.values())
        texts_ok = all(isinstance(text, str) and text for text in self.special_tokens)
        if not texts_ok or ids != list(range(first, first + len(ids))):
            raise ValueError(f"special tokens {self.special_tokens}: each needs a non-empty text "
                             f"and its own id, numbered from {first} on (after bytes and merges)")
        for text, token_id in self.special_tokens.items():
            self.vocab[token_id] = text.encode("utf-8")
        self.vocab_size = len(self.vocab)
        self.eot_id = self.special_tokens.get(ENDOFTEXT)
        self.special_pattern = None
        if self.special_tokens:  # longest first, so a special token that contains another wins
            alternatives = sorted(self.special_tokens, key=len, reverse=True)
            self.special_pattern = regex.compile(
                "(" + "|".join(regex.escape(s) for s in alternatives) + ")")
        self.cache = {}  # pre-token -> ids: real text repeats its words, so most look-ups hit

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, text, vocab_size, *, pattern=GPT2_PATTERN, special_tokens=None, verbose=False):
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `text` (a str or an iterable
        of str).

        The textbook algorithm recounts every pair of the whole corpus after each merge:
        O(merges x corpus tokens). This one does the same merges, faster, in three steps:
        1. Count each distinct pre-token once, with its frequency: a 10 MB corpus has about
           2 million pre-tokens but only about 100 thousand distinct ones.
        2. Count pairs once, weighted by those frequencies, and remember which pre-tokens hold
           each pair.
        3. After a merge, only the pre-tokens that held the merged pair change: subtract their
           old pairs and add their new ones. A heap keyed on (-count, left, right) yields the most
           frequent pair in O(log pairs); entries made stale by later changes are skipped.
        Ties are broken deterministically: among pairs of equal count, the smallest
        (left_id, right_id) is merged first.
        """
        special_tokens = list(dict.fromkeys(special_tokens or []))  # a repeated token is one token
        if "" in special_tokens:
            raise ValueError("a special token cannot be empty: give its text, e.g. '<|endoftext|>'")
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + "
                             f"{len(special_tokens)} special tokens")
        texts = [text] if isinstance(text, str) else list(text)
        words, counts = cls._distinct_pretokens(texts, pattern)
        if not words:
            raise ValueError("the training text is empty")

        pair_counts, where = Counter(), {}
        for index, (word, count) in enumerate(zip(words, counts)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
                where.setdefault(pair, set()).add(index)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges, start = {}, time.time()
        for step in range(num_merges):
            while heap:
                negative_count, pair = heapq.heappop(heap)
                if pair_counts.get(pair, 0) == -negative_count > 0:
                    break  # an up-to-date entry
            else:
                warnings.warn(f"the text has no pairs left after {step} merges; vocab_size is "
                              f"{256 + step + len(special_tokens)}")
                break
            new_id = 256 + step
            merges[pair] = new_id
            changed = set()
            for index in where.pop(pair):
                word, count = words[index], counts[index]
                new_word = merge(word, pair, new_id)
                if len(new_word) == len(word):
                    continue  # the pair left this word in an earlier merge
                for old_pair in zip(word, word[1:]):
                    pair_counts[old_pair] -= count
                    changed.add(old_pair)
                for new_pair in zip(new_word, new_word[1:]):
                    pair_counts[new_pair] += count
                    changed.add(new_pair)
                    if new_id in new_pair:
                        where.setdefault(new_pair, set()).add(index)
                words[index] = new_word
            for changed_pair in changed:
                if pair_counts[changed_pair] > 0:
                    heapq.heappush(heap, (-pair_counts[changed_pair], changed_pair))
                else:
                    del pair_counts[changed_pair]
            if verbose and ((step + 1) % 1000 == 0 or step + 1 == num_merges):
                rate = (step + 1) / (time.time() - start)
                eta = (num_merges - step - 1) / rate
                print(f"\rmerge {step + 1}/{num_merges} ({rate:.0f} merges/s, ETA {eta:.0f}s)",
                      end="\n" if step + 1 == num_merges else "", file=sys.stderr, flush=True)
        specials = {s: 256 + len(merges) + i for i, s in enumerate(special_tokens)}
        return cls(merges, pattern=pattern, special_tokens=specials)

    @staticmethod
    def _distinct_pretokens(texts, pattern):
        """Pre-tokenize every text (in parallel when large) and return the distinct pre-tokens as
        lists of byte values, with how often each occurs."""
        total = sum(map(len, texts))
        workers = min(os.cpu_count() or 1, 8) if total > 2_000_000 else 1
        pieces = workers * 4 if workers > 1 else 1
        jobs = [(piece, pattern) for text in texts for piece in safe_split(text, pieces)]
        counter = Counter()
        if workers > 1:
            with _worker_pool(workers) as pool:
                for partial in pool.imap(_count_pretokens, jobs, chunksize=4):
                    counter.update(partial)
        else:
            for job in jobs:
                counter.update(_count_pretokens(job))
        words = [list(_utf8(chunk)) for chunk in counter]
        return words, list(counter.values())

    # ------------------------------------------------------------------ encoding

    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE inside one pre-token: repeatedly merge the adjacent pair that was learned first
        (the lowest new id), until no adjacent pair is a known merge (as OpenAI's encoder.py
        does)."""
        ids = [self.byte_ids[b] for b in _utf8(chunk)]
        if len(ids) > LONG_PRE_TOKEN:
            return self._merge_with_heap(ids)
        get = self.merges.get
        ranks = list(map(get, zip(ids, ids[1:]), repeat(NEVER)))  # of each pair (new id = rank)
        while ranks and (first := min(ranks)) != NEVER:
            # Merging the leftmost occurrence, then looking again, equals merging all occurrences
            # left to right: the new pairs it creates all rank after `first`.
            i = ranks.index(first)
            ids[i:i + 2] = [first]
            del ranks[i]  # only the pairs on either side of the merge change
            if i < len(ranks):
                ranks[i] = get((first, ids[i + 1]), NEVER)
            if i > 0:
                ranks[i - 1] = get((ids[i - 1], first), NEVER)
        return ids

    def _merge_with_heap(self, ids: list[int]) -> list[int]:
        """The merges of the loop in _encode_chunk, in O(n log n) time instead of O(n^2).

        The loop scans all n pairs again after each of up to n merges: O(n^2), and a 40,000-letter
        pre-token (a base64 blob) took a minute. Here the tokens stay at their byte positions and
        form a linked list (`after[i]` is the position of the token after the one at i), and a heap
        holds (rank, position) for every adjacent pair that is a merge: its top is the pair the
        loop would pick, the lowest rank and, among equals, the leftmost. A merge changes only the
        pairs on either side of it, so it pushes at most two entries. Entries that an earlier
        merge made stale are recognised when popped: the pair now at that position is no longer
        the merge of that rank (a rank is the new id of exactly one pair).
        """
        get, n = self.merges.get, len(ids)
        after, before = list(range(1, n + 1)), list(range(-1, n - 1))  # n, -1: no neighbour
        heap = [(rank, i) for i, pair in enumerate(zip(ids, ids[1:])) if (rank := get(pair))]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = after[i]
            if ids[i] is None or j == n or get((ids[i], ids[j])) != rank:
                continue  # stale
            ids[i], ids[j], after[i] = rank, None, after[j]  # the token at i swallows its neighbour
            if after[i] < n:
                before[after[i]] = i
            for left in (before[i], i):  # the two new pairs: (previous, merged), (merged, next)
                if left >= 0 and after[left] < n and (new := get((ids[left], ids[after[left]]))):
                    heapq.heappush(heap, (new, left))
        return [token for token in ids if token is not None]

    def pre_tokenize(self, text: str) -> list[str]:
        """The pattern's matches in text. GPT-2's pattern runs on `re` (GPT2_PATTERN_RE) where it
        can: the text goes in blocks of about 65,536 characters, each to `re` unless it holds a
        character outside RE_CHARACTERS, cut where every pre-token ends (SAFE_CUT: no alternative
        of the pattern spans a newline and the letter after it)."""
        if self.pattern != GPT2_PATTERN:
            return self.compiled_pattern.findall(text)
        pieces = []
        for block in safe_split(text, len(text) // 65536 + 1):
            pattern = self.compiled_pattern if NOT_FOR_RE.search(block) else GPT2_PATTERN_RE
            pieces += pattern.findall(block)
        return pieces

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token text as plain text.

        Text repeats its words: 10 MB of English are 2.4 million pre-tokens but only 47,000
        distinct ones. Each distinct pre-token is merged once and cached; the rest is looking up,
        done by C loops (set, map, chain) rather than a Python loop per pre-token."""
        if len(self.cache) > 500_000:  # bound memory on endless streams of new words
            self.cache.clear()
        cache = self.cache
        chunks = self.pre_tokenize(text)
        for chunk in set(chunks).difference(cache):  # the new ones, each once
            cache[chunk] = tuple(self._encode_chunk(chunk))  # tuples: the GC soon ignores them
        return list(chain.from_iterable(map(cache.__getitem__, chunks)))

    def encode(self, text: str, *, allowed_special=()) -> list[int]:
        """Encode text; special tokens in `allowed_special` (a set of strings, or "all") become
        their ids.

        Like tiktoken, any other special-token text raises: text from users that happens to
        contain "<|endoftext|>" must not silently end a document.
        """
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if unknown := allowed - set(self.special_tokens):
            raise ValueError(f"{sorted(unknown)} are not special tokens of this tokenizer "
                             f"({sorted(self.special_tokens)})")
        if self.special_pattern is None:
            return self.encode_ordinary(text)
        for found in self.special_pattern.findall(text):
            if found not in allowed:
                raise ValueError(
                    f"the text contains the special token {found!r}: pass "
                    f"allowed_special={{{found!r}}} (or 'all') to encode it as a special token, "
                    "or use encode_ordinary() to encode it as plain text")
        ids = []
        for i, part in enumerate(self.special_pattern.split(text)):  # odd parts are special tokens
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_batch(self, texts, *, num_workers=None, allowed_special=(),
                     ordinary=False) -> list[list[int]]:
        """Encode many texts, in parallel processes when there is enough text to pay for them.
        ordinary=True encodes every text with encode_ordinary (a corpus is plain text)."""
        texts = list(texts)
        workers = num_workers or min(os.cpu_count() or 1, len(texts))
        if workers <= 1 or sum(map(len, texts)) < 1_000_000:
            return [_encode_one(self, text, allowed_special, ordinary) for text in texts]
        chunksize = max(1, len(texts) // (workers * 8))
        with _worker_pool(workers, self, allowed_special, ordinary) as pool:
            return pool.map(_worker_encode, texts, chunksize=chunksize)

    def encode_file(self, path, *, num_workers=None, allowed_special=(),
                    ordinary=False) -> list[int]:
        """Encode a large UTF-8 file on all cores: cut it where pre-tokens always end, encode the
        parts in parallel, concatenate. The ids equal those of `encode` on the whole text."""
        parts = safe_split(read_text(path), 8 * (num_workers or os.cpu_count() or 1))
        encoded = self.encode_batch(parts, num_workers=num_workers,
                                    allowed_special=allowed_special, ordinary=ordinary)
        return [i for ids in encoded for i in ids]

    # ------------------------------------------------------------------ decoding

    def token_bytes(self, token_id: int) -> bytes:
        try:
            return self.vocab[token_id]
        except (KeyError, TypeError):
            raise ValueError(f"token id {token_id!r} is not in the vocabulary "
                             f"(ids 0..{self.vocab_size - 1})") from None

    def decode_bytes(self, ids) -> bytes:
        return b"".join(map(self.token_bytes, ids))

    def decode(self, ids) -> str:
        """Ids to text. A token can end in the middle of a multi-byte character, so a slice of ids
        may not be valid UTF-8: broken bytes become U+FFFD instead of raising."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ files

    @classmethod
    def from_gpt2(cls, encoder_json, vocab_bpe):
        """Load OpenAI's GPT-2 files (in a Hugging Face folder: vocab.json and merges.txt).

        encoder.json maps each token, written in the printable byte alphabet, to its id;
        vocab.bpe lists the 50000 merges in rank order. The single bytes are ids 0..255 (in the
        order of that alphabet, not of byte values) and merge k makes id 256 + k.
        """
        try:
            encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
            lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read GPT-2 vocabulary files: {error}") from None
        if not isinstance(encoder, dict) or not all(type(i) is int for i in encoder.values()):
            raise ValueError(f"{encoder_json}: expected a JSON object mapping each token to its id")
        if missing := [b for b in range(256) if BYTE_TO_CHAR[b] not in encoder]:
            raise ValueError(f"{encoder_json}: no id for the byte {missing[0]:#04x} "
                             f"({BYTE_TO_CHAR[missing[0]]!r})")
        merges = {}
        for line_number, line in enumerate(lines, start=1):
            if line.startswith("#version") or not line.strip():
                continue
            try:
                left, right = line.split()
                pair, new_id = (encoder[left], encoder[right]), encoder[left + right]
            except (ValueError, KeyError):
                problem = f"line {line_number}: not a merge of two known tokens: {line!r}"
                raise ValueError(f"{vocab_bpe}: {problem}") from None
            if new_id != 256 + len(merges):
                raise ValueError(f"{vocab_bpe}: line {line_number}: merge makes id {new_id}, "
                                 f"expected {256 + len(merges)}")
            merges[pair] = new_id
        # The tokens after the merges are special (GPT-2 has one, <|endoftext|>). One that joins two
        # tokens made before it is what a missing merge would make: vocab.bpe has lost its end.
        special = {token: i for token, i in encoder.items() if i >= 256 + len(merges)}
        made = {token for token in encoder if token not in special}
        halves = [(t[:k], t[k:]) for t in special for k in range(1, len(t))]
        if joined := [a + b for a, b in halves if a in made and b in made]:
            raise ValueError(f"{vocab_bpe} has {len(merges)} merges, yet {encoder_json} has "
                             f"{joined[0]!r} after them, joining two tokens: "
                             f"is {vocab_bpe} cut short?")
        byte_ids = [encoder[BYTE_TO_CHAR[b]] for b in range(256)]
        try:
            return cls(merges, pattern=GPT2_PATTERN, special_tokens=special, byte_ids=byte_ids)
        except ValueError as error:
            raise ValueError(f"{encoder_json}, {vocab_bpe}: {error}") from None

    def with_special_tokens(self, tokens):
        """A copy with more special tokens, numbered from vocab_size on (GPT-1's fine-tuning adds
        its start, delimiter and extract tokens this way); tokens it already has keep their ids."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.special_tokens]
        added = {t: self.vocab_size + i for i, t in enumerate(new)}
        return Tokenizer(self.merges, pattern=self.pattern,
                         special_tokens={**self.special_tokens, **added}, byte_ids=self.byte_ids)

    def dumps(self) -> str:
        """The tokenizer as readable text: the pattern, special tokens, byte ids, then one merge per
        line in rank order, as ids followed by the two parts in GPT-2's printable byte alphabet."""
        lines = [FILE_HEADER, f"pattern {json.dumps(self.pattern)}"]
        lines += [f"special {json.dumps(text)} {i}" for text, i in self.special_tokens.items()]
        lines.append("bytes " + " ".join(map(str, self.byte_ids)))
        lines.append(f"merges {len(self.merges)}")
        lines.append("# left_id right_id  left right  "
                     "(printable bytes: 'Ġ' is a space, 'Ċ' a newline)")
        for (left, right), _ in sorted(self.merges.items(), key=lambda item: item[1]):
            parts = printable(self.vocab[left]), printable(self.vocab[right])
            lines.append(f"{left} {right}  {parts[0]} {parts[1]}")
        return "\n".join(lines) + "\n"

    @classmethod
    def loads(cls, text: str, source="<string>"):
        """Parse `dumps` output; any malformed or missing line raises ValueError naming the line."""
        if text.startswith(GPT1_HEADER):  # GPT-1's tokenizer, saved by GPT1Tokenizer.dumps
            return GPT1Tokenizer.loads(text, source)
        if text.startswith(CHAR_HEADER):  # one token per character, saved by CharTokenizer.dumps
            return CharTokenizer.loads(text, source)
        lines = text.split("\n")

        def fail(line_number, problem):
            raise ValueError(f"{source}: line {line_number}: {problem}")

        if not lines or lines[0] != FILE_HEADER:
            fail(1, f"expected the header {FILE_HEADER!r}: not a tokenizer file")
        pattern, special, byte_ids, merges, expected = None, {}, None, {}, None
        for line_number, line in enumerate(lines[1:], start=2):
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            try:
                if expected is not None:  # inside the merge list: merge k makes id 256 + k
                    left, right = map(int, line.split()[:2])
                    if not (0 <= left < 256 + len(merges) and 0 <= right < 256 + len(merges)):
                        fail(line_number, f"merge refers to an id not defined above it: {line!r}")
                    merges[left, right] = 256 + len(merges)
                elif key == "pattern":
                    pattern = json.loads(value)
                elif key == "special":
                    name, token_id = value.rsplit(" ", 1)
                    special[json.loads(name)] = int(token_id)
                elif key == "bytes":
                    byte_ids = [int(v) for v in value.split()]
                    if sorted(byte_ids) != list(range(256)):
                        fail(line_number, "'bytes' must list the ids 0..255 once each")
                elif key == "merges":
                    expected = int(value)
                else:
                    fail(line_number, f"unknown entry {key!r}")
            except (ValueError, json.JSONDecodeError) as error:
                if str(error).startswith(source):
                    raise
                fail(line_number, f"cannot parse {line!r}")
        if pattern is None or expected is None:
            fail(len(lines), "missing 'pattern' or 'merges' entry (truncated file?)")
        if len(merges) != expected:
            fail(len(lines), f"expected {expected} merges, found {len(merges)} (truncated file?)")
        try:
            return cls(merges, pattern=pattern, special_tokens=special, byte_ids=byte_ids)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def save(self, path):
        """Write atomically (temporary file, then rename), so an interrupted save loses nothing."""
        temporary = f"{path}.tmp"
        Path(temporary).write_text(self.dumps(), encoding="utf-8")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a UTF-8 text file; is it a tokenizer saved by "
                             "bpe.py?") from None
        return cls.loads(text, source=str(path))


def _encode_one(tokenizer, text, allowed_special, ordinary):
    if ordinary:
        return tokenizer.encode_ordinary(text)
    return tokenizer.encode(text, allowed_special=allowed_special)


def _worker_pool(workers, *arguments):
    """Processes for the parallel paths; each gets `arguments` once (encode_batch: the tokenizer).

    Ctrl-C in a terminal sends SIGINT to every process of the job. Workers that died of it each
    printed a traceback and could leave the pool waiting forever, so they ignore it: the parent
    alone raises KeyboardInterrupt, and leaving the pool's `with` block terminates the workers.
    While the workers start (a few milliseconds), a Ctrl-C is only noted, so that it can neither
    leave a pool half-made nor reach a worker before the worker ignores it; then it is acted on.
    """
    main = threading.current_thread() is threading.main_thread()  # where signal.signal works
    noted = []
    handler = signal.signal(signal.SIGINT, lambda *_: noted.append(True)) if main else None
    try:
        pool = multiprocessing.Pool(workers, _worker_init, arguments)
    finally:
        if main:  # None: the handler was not set from Python
            signal.signal(signal.SIGINT, signal.default_int_handler if handler is None else handler)
    if noted:
        pool.terminate()
        raise KeyboardInterrupt
    return pool


_worker_arguments = ()


def _worker_init(*arguments):
    global _worker_arguments
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_arguments = arguments  # (tokenizer, allowed_special, ordinary)


def _worker_encode(text):
    tokenizer, allowed_special, ordinary = _worker_arguments
    return _encode_one(tokenizer, text, allowed_special, ordinary)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise ValueError(f"the text holds a lone surrogate U+{ord(bad):04X} at position "
                         f"{error.start} of a pre-token: it is not valid Unicode and has no UTF-8 "
                         "bytes; fix the text "
                         "(e.g. decode files with errors='replace')") from None


def read_text(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid UTF-8 at byte {error.start}; convert the file to "
                         "UTF-8") from None


TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py"}


def text_files(paths) -> list[Path]:
    """The files named, plus the text files (.txt .md .rst .py) inside the folders named, sorted."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix in TEXT_SUFFIXES and f.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"input not found: {path}")
    return files


# -----------------------------------------------------------------------------
# GPT-1's tokenizer (openai/finetune-transformer-lm, text_utils.py): BPE on the characters of
# lowercased words, not on bytes. A word's last symbol carries "</w>", so "the</w>" is the word
# and "the" the start of "there"; a character outside the vocabulary becomes <unk> (id 0).

GPT1_HEADER = "bpe.py gpt-1 tokenizer v1"
GPT1_FILES = ("encoder_bpe_40000.json", "vocab_40000.bpe")  # Hugging Face: vocab.json, merges.txt
BERT_PUNCTUATION = r"!-/:-@\[-`{-~\p{P}"  # ASCII symbols count as punctuation too
CJK = regex.compile("([\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002a6df"
                    "\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f])")  # BERT's CJK ideographs


def text_standardize(text):
    """text_utils.py's clean-up of BooksCorpus before spaCy: one kind of dash, '…' as three
    dots, runs of a punctuation mark set apart, newlines as words, other whitespace one space."""
    for old, new in (("—", "-"), ("–", "-"), ("―", "-"), ("…", "..."), ("´", "'")):
        text = text.replace(old, new)
    text = re.sub(r'([-~!";?+,)(\\/*\[\]}{|_])\1*', r" \g<0> ", text)
    text = re.sub(r"\s*\n\s*", " \n ", text)
    return re.sub(r"[^\S\n]+", " ", text).strip()


def bert_words(text):
    """The words of BERT's basic tokenizer, which Hugging Face's OpenAIGPTTokenizer uses in place
    of ftfy and spaCy: drop control characters, set CJK ideographs apart, strip accents (NFD, then
    drop the combining marks), lowercase, split at whitespace and around each punctuation mark."""
    text = CJK.sub(r" \1 ", regex.sub(r"[^\P{Cc}\t\n\r]|[\p{Cf}\p{Co}\ufffd]", "", text))
    text = regex.sub(r"\p{Mn}", "", unicodedata.normalize("NFD", text))
    text = "".join(map(str.lower, text))  # char by char, as Hugging Face's Rust code: always σ
    return regex.findall(rf"[^\s{BERT_PUNCTUATION}]+|[{BERT_PUNCTUATION}]", text)


class GPT1Tokenizer:
    """GPT-1's 40,478 tokens: <unk>, 476 characters (alone, or ending a word with </w>), the
    results of the 40,000 merges (section 4.1) and a newline. Words come from text_utils.py's
    pipeline (ftfy, text_standardize, spaCy), as GPT-1 was trained, when ftfy and spacy are
    installed (original=None, or True), else from BERT's basic tokenizer, as Hugging Face's
    OpenAIGPTTokenizer does (original=False)."""

    def __init__(self, encoder, merges, special_tokens=None, original=None):
        self.encoder = dict(encoder)  # token -> id
        self.merges = [tuple(pair) for pair in merges]
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.special_tokens = dict(special_tokens or {})
        self.decoder = {i: t for t, i in (*self.encoder.items(), *self.special_tokens.items())}
        self.vocab_size, self.cache = len(self.decoder), {}
        self.eot_id = self.special_tokens.get(ENDOFTEXT)  # GPT-1 has none; train.py adds one
        if original is None:
            original = all(importlib.util.find_spec(name) for name in ("ftfy", "spacy"))
        self.original = original
        if original:  # as text_utils.py (and Hugging Face's tokenizer before transformers 5)
            import ftfy
            from spacy.lang.en import English
            self.fix_text, self.spacy = ftfy.fix_text, English().tokenizer

    @classmethod
    def from_gpt1(cls, encoder_json, vocab_bpe, original=None):
        """OpenAI's encoder_bpe_40000.json and vocab_40000.bpe (Hugging Face: vocab.json and
        merges.txt, the same files)."""
        try:
            encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
            lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read GPT-1 vocabulary files: {error}") from None
        merges = []
        for line_number, line in enumerate(lines, start=1):
            if line.startswith("#version") or not line:
                continue
            pair = tuple(line.split())
            if len(pair) != 2 or any(symbol not in encoder for symbol in (*pair, "".join(pair))):
                raise ValueError(f"{vocab_bpe}: line {line_number}: not a merge of two symbols of "
                                 f"{Path(encoder_json).name} into a third: {line!r}")
            merges.append(pair)
        return cls(encoder, merges, original=original)

    def words(self, text):
        if not self.original:
            return bert_words(text)
        return [token.text.lower() for token in self.spacy(text_standardize(self.fix_text(text)))]

    def bpe(self, word):
        """The word's symbols after the merges, the earliest learned first (text_utils.py's bpe)."""
        symbols = [*word[:-1], word[-1] + "</w>"] if word != "\n " else ["\n</w>"]  # spaCy's \n
        while len(symbols) > 1:
            pairs = zip(symbols, symbols[1:])
            rank, i = min((self.ranks.get(pair, NEVER), i) for i, pair in enumerate(pairs))
            if rank == NEVER:
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        return symbols

    def encode_ordinary(self, text):
        ids = []
        for word in self.words(text):
            if word not in self.cache:
                self.cache[word] = [self.encoder.get(symbol, 0) for symbol in self.bpe(word)]
            ids += self.cache[word]
        return ids

    def encode_batch(self, texts, *, allowed_special=(), ordinary=False):
        """Many texts, one after the other (train.py prepares a corpus with it)."""
        return [self.encode_ordinary(text) if ordinary else
                self.encode(text, allowed_special=allowed_special) for text in texts]

    def encode(self, text, *, allowed_special=()):
        """Special tokens in allowed_special ("all": every one) become their ids; the rest, text."""
        allowed = list(self.special_tokens) if allowed_special == "all" else list(allowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        parts = regex.split("(" + "|".join(map(regex.escape, allowed)) + ")", text)
        return [i for n, part in enumerate(parts)  # odd parts are special tokens
                for i in ([self.special_tokens[part]] if n % 2 else self.encode_ordinary(part))]

    def token_bytes(self, token_id):
        if token_id not in self.decoder:
            raise ValueError(f"token id {token_id!r} is not in the vocabulary "
                             f"(ids 0..{self.vocab_size - 1})")
        return self.decoder[token_id].replace("</w>", " ").encode("utf-8")

    def decode(self, ids):
        """The words, a space after each one (</w>) but the last, as Hugging Face's BPEDecoder."""
        return b"".join(map(self.token_bytes, ids)).decode("utf-8").removesuffix(" ")

    def with_special_tokens(self, tokens):
        """A copy with more special tokens, numbered from vocab_size on: finetune.py's start,
        delimiter and extract tokens come after the 40,478, as in finetune-transformer-lm."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.special_tokens]
        special = {**self.special_tokens, **{t: self.vocab_size + i for i, t in enumerate(new)}}
        return GPT1Tokenizer(self.encoder, self.merges, special, self.original)

    def dumps(self):
        """The tokenizer as text (checkpoints store it): a header line, then JSON."""
        state = dict(original=self.original, special_tokens=self.special_tokens,
                     encoder=self.encoder, merges=[" ".join(pair) for pair in self.merges])
        return f"{GPT1_HEADER}\n{json.dumps(state, ensure_ascii=False)}\n"

    @classmethod
    def loads(cls, text, source="<string>"):
        try:
            state = json.loads(text.removeprefix(GPT1_HEADER))
            merges = [pair.split(" ") for pair in state["merges"]]
            return cls(state["encoder"], merges, state["special_tokens"], state["original"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{source}: not a GPT-1 tokenizer saved by bpe.py ({error})") from None
        except ImportError:
            raise ValueError(f"{source}: this GPT-1 tokenizer splits words with spaCy after ftfy, "
                             "as GPT-1 was trained: `pip install ftfy spacy`") from None

    def save(self, path):
        Path(f"{path}.tmp").write_text(self.dumps(), encoding="utf-8")
        os.replace(f"{path}.tmp", path)


# -----------------------------------------------------------------------------
# Characters as tokens: the baseline a BPE is measured against, and nanoGPT's shakespeare_char
# (data/shakespeare_char/prepare.py: the sorted characters of the text, 65 for Tiny Shakespeare)

CHAR_HEADER = "bpe.py character tokenizer v1"


class CharTokenizer:
    """Ids 0..n-1 for the n distinct characters of a corpus, sorted, then the special tokens.
    There is no byte fallback: a character the corpus did not hold cannot be encoded."""

    def __init__(self, chars, special_tokens=None):
        self.chars, self.special_tokens = "".join(chars), dict(special_tokens or {})
        self.ids = {char: i for i, char in enumerate(self.chars)}
        first, special_ids = len(self.chars), sorted(self.special_tokens.values())
        if len(self.ids) != first or special_ids != list(range(first, first + len(special_ids))):
            raise ValueError(f"each character once, then special tokens numbered from {first} on")
        self.decoder = [*self.chars, *sorted(self.special_tokens, key=self.special_tokens.get)]
        self.vocab_size, self.eot_id = len(self.decoder), self.special_tokens.get(ENDOFTEXT)

    @classmethod
    def train(cls, texts, special_tokens=()):
        chars = sorted(set().union(*map(set, texts)))  # nanoGPT: sorted(list(set(data)))
        return cls(chars, {token: len(chars) + i for i, token in enumerate(special_tokens)})

    def encode_ordinary(self, text):
        try:
            return [self.ids[char] for char in text]
        except KeyError as error:
            raise ValueError(f"the character {error.args[0]!r} is not in the vocabulary (the "
                             f"{len(self.chars)} characters of the corpus it was made "
                             "from)") from None

    # as GPT-1's tokenizer: encode (special tokens in allowed_special become their ids), save...
    encode, encode_batch = GPT1Tokenizer.encode, GPT1Tokenizer.encode_batch
    save = GPT1Tokenizer.save

    def token_bytes(self, token_id):
        if token_id not in range(self.vocab_size):
            raise ValueError(f"token id {token_id!r} is not in the vocabulary "
                             f"(ids 0..{self.vocab_size - 1})")
        return self.decoder[token_id].encode("utf-8")

    def decode(self, ids):
        return b"".join(map(self.token_bytes, ids)).decode("utf-8")

    def with_special_tokens(self, tokens):
        new = [t for t in dict.fromkeys(tokens) if t not in self.special_tokens]
        added = {token: self.vocab_size + i for i, token in enumerate(new)}
        return CharTokenizer(self.chars, {**self.special_tokens, **added})

    def dumps(self):
        """A header line, then JSON: the characters in id order, and the special tokens."""
        state = dict(chars=self.chars, special_tokens=self.special_tokens)
        return f"{CHAR_HEADER}\n{json.dumps(state, ensure_ascii=False)}\n"

    @classmethod
    def loads(cls, text, source="<string>"):
        try:
            state = json.loads(text.removeprefix(CHAR_HEADER))
            return cls(state["chars"], state["special_tokens"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{source}: not a character tokenizer saved by bpe.py "
                             f"({error})") from None


def load_tokenizer(spec: str):
    """A folder (DIR or gpt2:DIR) of OpenAI's files, GPT-2's encoder.json + vocab.bpe or GPT-1's
    encoder_bpe_40000.json + vocab_40000.bpe, or of a Hugging Face model's vocab.json + merges.txt
    (GPT-1's when config.json says openai-gpt or its tokens end in </w>); anything else is a file
    written by `save`."""
    folder = Path(spec.removeprefix("gpt2:"))
    if folder.is_dir():
        if all((folder / name).is_file() for name in GPT1_FILES):
            return GPT1Tokenizer.from_gpt1(*(folder / name for name in GPT1_FILES))
        for names in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
            files = [folder / name for name in names]
            if all(file.is_file() for file in files):
                config = folder / "config.json"
                gpt1 = ('"openai-gpt"' in config.read_text() if config.is_file()
                        else '</w>"' in files[0].read_text(encoding="utf-8"))
                return (GPT1Tokenizer.from_gpt1 if gpt1 else Tokenizer.from_gpt2)(*files)
        raise ValueError(f"{folder}: vocab.json is missing: a model folder needs its tokenizer, "
                         "vocab.json + merges.txt (or OpenAI's encoder.json + vocab.bpe, or "
                         "GPT-1's encoder_bpe_40000.json + vocab_40000.bpe)")
    if not Path(spec).is_file():
        raise ValueError(f"tokenizer file {spec} not found; make one with `python bpe.py train` "
                         "or use a model's folder (DIR or gpt2:DIR)")
    return Tokenizer.load(spec)


# -----------------------------------------------------------------------------
# The command line: bad input ends every script of the project (bpe.py, train.py, finetune.py,
# sample.py) with one line that names the problem and the fix, and a non-zero exit

def first_line(error) -> str:
    """An exception's message, first line only (torch's and numpy's can run over many)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextmanager
def one_line_errors():
    """Expected errors (a missing file, a wrong setting: ValueError, OSError, RuntimeError) become
    "error: ..." and exit code 1, without a traceback; any other exception is a bug and keeps it."""
    try:
        yield
    except (ValueError, OSError, RuntimeError) as error:
        sys.exit("error: " + first_line(error))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Byte-level BPE: train a tokenizer, encode and "
                                                 "decode text.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="learn merges from text files")
    train.add_argument("--input", nargs="+", required=True,
                       help="text files, or folders of .txt .md .rst .py files")
    train.add_argument("--vocab-size", type=int, required=True,
                       help="256 bytes + merges + special tokens")
    train.add_argument("--out", required=True, help="where to write the tokenizer (e.g. tok.bpe)")
    train.add_argument("--special", action="append", default=[],
                       help="a special token, e.g. '<|endoftext|>' (repeatable)")
    train.add_argument("--pattern", choices=["gpt2", "gpt4"], default="gpt2",
                       help="pre-tokenizer split pattern")
    for name in ("encode", "decode"):
        sub = commands.add_parser(name, help=f"{name} with a saved tokenizer or a model's folder")
        sub.add_argument("--tokenizer", required=True, help="a file written by `train`, or a "
                         "model's folder (DIR or gpt2:DIR) with its vocabulary files")
        sub.add_argument("input", nargs="?", help="the text (encode) or ids (decode); read from "
                                                  "stdin when left out")
        if name == "encode":
            sub.add_argument("--allow-special", action="store_true",
                             help=f"encode text such as {ENDOFTEXT} as its special token; "
                                  "by default it is plain text, which cannot end a document")
    args = parser.parse_args(argv)
    try:
        run_command(args)
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing was written")


def run_command(args):
    with one_line_errors():
        if args.command == "train":
            texts = [read_text(f) for f in text_files(args.input)]
            if not any(t.strip() for t in texts):
                raise ValueError("the input is empty: give a file or folder with text to learn "
                                 "from")
            pattern = GPT2_PATTERN if args.pattern == "gpt2" else GPT4_PATTERN
            tokenizer = Tokenizer.train(texts, args.vocab_size, pattern=pattern,
                                        special_tokens=args.special, verbose=True)
            tokenizer.save(args.out)
            print(f"wrote {args.out}: {tokenizer.vocab_size} tokens "
                  f"({len(tokenizer.merges)} merges)")
        else:
            tokenizer = load_tokenizer(args.tokenizer)
            data = args.input if args.input is not None else sys.stdin.read()
            if args.command == "encode":
                if args.allow_special:
                    ids = tokenizer.encode(data, allowed_special="all")
                else:
                    ids = tokenizer.encode_ordinary(data)
                print(" ".join(map(str, ids)))
                # The token boundaries, for a class to see; a token holding part of a character
                # shows its bytes.
                print("|".join(tokenizer.token_bytes(i).decode("utf-8", errors="backslashreplace")
                               for i in ids))
            else:
                ids = [int(i) for i in data.replace(",", " ").split()]
                print(tokenizer.decode(ids))


if __name__ == "__main__":
    main()
