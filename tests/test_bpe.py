"""Tests for bpe.py: round trips, the textbook algorithm, files, special tokens, GPT-2 parity with tiktoken."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings, strategies as st

import bpe
from bpe import (ENDOFTEXT, GPT2_PATTERN, GPT4_PATTERN, Tokenizer, load_tokenizer, merge, printable,
                 safe_split, textbook_merges)
from shared_data import DATA

ROOT = Path(__file__).resolve().parents[1]
GPT2_FILES = (DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe")
needs_gpt2_files = pytest.mark.skipif(not GPT2_FILES[0].is_file(), reason=f"GPT-2 vocabulary files not found in {DATA / 'gpt2'} (../shared/data)")

# A small corpus with a bit of everything, so the tests need no data files.
MIXED = (Path(ROOT / "bpe.py").read_text(encoding="utf-8") +
         "Héllo wörld! Ça va? 你好，世界。こんにちは 🤗🚀 e\u0301 (combining) Привет мир 123 4567 don't we'll\n" * 20)

ADVERSARIAL = [
    "", " ", "  ", "\n", "\n\n\n", "\t \t", "a", "   leading spaces", "trailing spaces   ",
    "don't won't I'm you're they've he'll she'd IT'S 'S 'sup", "'''", "12345678901234567890", "3.14159 1,000,000 -42",
    "hello\u00a0world", "🤗" * 50, "👩‍👩‍👧‍👦 family", "你好，世界", "naïve café e\u0301\u0302\u0303", "Ελληνικά עברית العربية हिन्दी",
    "\x00\x01\x02\x1f\x7f", "a" * 5000, " " * 3000, "\n" * 2000, "ab" * 2000, "x\r\ny\r\n\r\n", "<|endoftext|>",
    "  \n  \n word", "!!!???...", "$$$ %%% ^^^", "\u200b\u200c\u200d", "\ufeffBOM", "\U0010ffff\U0001f600",
]


@pytest.fixture(scope="module")
def small():
    return Tokenizer.train(MIXED, 512, special_tokens=[ENDOFTEXT])


@pytest.fixture(scope="module")
def gpt2():
    if not GPT2_FILES[0].is_file():
        pytest.skip(f"GPT-2 vocabulary files not found in {DATA / 'gpt2'} (../shared/data)")
    return Tokenizer.from_gpt2(*GPT2_FILES)


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("text", ADVERSARIAL)
def test_round_trip_adversarial(small, text):
    assert small.decode(small.encode_ordinary(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_string(small, text):
    # st.text() draws from all of Unicode except lone surrogates (which are not valid text)
    assert small.decode(small.encode_ordinary(text)) == text
    assert small.decode_bytes(small.encode_ordinary(text)) == text.encode("utf-8")


@needs_gpt2_files
@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_string_gpt2(gpt2, text):
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


def test_lone_surrogate_is_a_clear_error(small):
    with pytest.raises(ValueError, match="surrogate U\\+D800"):
        small.encode("ok \ud800 not ok")


def test_decode_replaces_broken_utf8(small):
    ids = small.encode("é")  # two bytes: C3 A9
    first_byte = small.byte_ids[0xC3]
    assert small.decode([first_byte]) == "\ufffd"
    assert small.decode_bytes([first_byte]) == b"\xc3"
    assert small.decode(ids) == "é"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        small.decode([small.vocab_size + 7])


# ---------------------------------------------------------------- the textbook algorithm

def test_merge_replaces_each_occurrence_left_to_right():
    """The step both trainers share: "aaa" holds one ("aa", "a"), not two overlapping pairs."""
    a, b, x = ord("a"), ord("b"), 999
    assert merge([a, a, a], (a, a), x) == [x, a]
    assert merge([a, a, a, a, b, a, a], (a, a), x) == [x, x, b, x]
    assert merge([a, b, a], (b, b), x) == [a, b, a]


TRAINING_TEXTS = {
    "prose": "The cat sat on the mat. The dog sat on the log! Then the cat and the dog ran off together,\n"
             "over the hills and far away; nobody saw them again, though everybody looked for them.\n" * 2,
    "repeats": "aaaaaaaaaaaaa bbbbbbb aaaa ab ab ab abab aaab baaa abba baba cabbage aabbaabb " * 4,  # overlaps: "aaa"
    "unicode": "Héllo wörld 你好你好世界 🤗🤗🤗 e\u0301e\u0301 Привет привет 12 123 1234 Ελληνικά ελληνικά naïve café",
    "code": Path(ROOT / "bpe.py").read_text(encoding="utf-8")[:6000],
}


@pytest.mark.parametrize("name", TRAINING_TEXTS)
def test_training_equals_textbook_algorithm(name):
    text = TRAINING_TEXTS[name]
    vocab_size = 256 + 30
    merges = Tokenizer.train(text, vocab_size).merges
    assert len(merges) == 30 and merges == textbook_merges(text, vocab_size)


def test_training_equals_textbook_algorithm_gpt4_pattern():
    text = TRAINING_TEXTS["unicode"] + TRAINING_TEXTS["prose"]
    tokenizer = Tokenizer.train(text, 300, pattern=GPT4_PATTERN)
    assert tokenizer.merges == textbook_merges(text, 300, pattern=GPT4_PATTERN)


def test_training_is_deterministic_and_accepts_documents():
    documents = [TRAINING_TEXTS["prose"], TRAINING_TEXTS["code"]]
    first = Tokenizer.train(documents, 400)
    second = Tokenizer.train(iter(documents), 400)
    assert first.merges == second.merges
    assert first.vocab_size == 400


def test_training_counts_the_pairs_of_every_document_and_none_across_them():
    assert Tokenizer.train(["aaa", "bb bb bb"], 257).merges == {(98, 98): 256}  # 3 (b, b), 2 (a, a)
    assert Tokenizer.train(["aaa", "bb bb bb", "aaa"], 257).merges == {(97, 97): 256}  # 4 against 3
    assert Tokenizer.train(["b", "b", "b", "ab"], 257).merges == {(97, 98): 256}  # "bbbab": (b, b)


def test_a_large_corpus_counted_in_worker_processes_makes_the_same_merges(monkeypatch):
    """Past 2 MB of text, training pre-tokenizes in worker processes, each on a piece of the text
    cut where pre-tokens always end: the merges are exactly those of one process (itself checked
    against the textbook algorithm above)."""
    sources = [MIXED] + [(ROOT / name).read_text(encoding="utf-8")
                         for name in ("gpt.py", "README.md")]
    documents = [text * (k + 1) for k, text in enumerate(sources)]  # unlike texts, unequal weights
    documents *= 2_100_000 // sum(map(len, documents)) + 1
    assert sum(map(len, documents)) > 2_000_000
    pools = []

    worker_pool = bpe._worker_pool

    def recorded_pool(workers, *arguments):
        pools.append(workers)
        return worker_pool(workers, *arguments)

    monkeypatch.setattr(bpe, "_worker_pool", recorded_pool)
    monkeypatch.setattr(bpe.os, "cpu_count", lambda: 4)
    parallel = Tokenizer.train(documents, 400)
    monkeypatch.setattr(bpe.os, "cpu_count", lambda: 1)
    single = Tokenizer.train(documents, 400)
    assert pools == [4] and len(parallel.merges) == 144  # one pool: the parallel path ran once
    assert parallel.merges == single.merges


def test_merges_are_applied_in_the_order_they_were_learned():
    """GPT-2's encoder.py: inside a pre-token the pair learned first (the lowest rank, here the
    lowest new id) is merged first, wherever it stands; of equal pairs, the leftmost."""
    tokenizer = Tokenizer({(97, 256): 258, (98, 99): 256, (97, 98): 257, (97, 97): 259})  # unsorted
    a, d = b"ad"
    assert tokenizer.encode_ordinary("abc") == [258]  # bc (256), then a + bc (258); not ab + c
    assert tokenizer.encode_ordinary("abd") == [257, d]
    assert tokenizer.encode_ordinary("aaa") == [259, a]  # aa twice: the left one
    assert tokenizer.decode([258, 259]) == "abcaa"


def test_vocabulary_layout(small):
    assert [small.token_bytes(i) for i in range(256)] == [bytes([b]) for b in range(256)]
    assert sorted(small.merges.values()) == list(range(256, 511))
    assert small.eot_id == 511 and small.vocab_size == 512
    assert small.token_bytes(small.eot_id) == ENDOFTEXT.encode()


def test_encoding_matches_tiktoken_with_our_merges(small):
    """tiktoken, given our merges as its ranks, is an independent implementation of the encoder."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {small.token_bytes(i): i for i in range(256 + len(small.merges))}
    reference = tiktoken.Encoding("small", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: small.eot_id})
    for text in [MIXED, *ADVERSARIAL]:
        assert small.encode_ordinary(text) == reference.encode_ordinary(text)


# ---------------------------------------------------------------- special tokens

def test_special_tokens_are_not_encoded_unless_allowed(small):
    text = f"end of story{ENDOFTEXT}next"
    with pytest.raises(ValueError, match="allowed_special.*encode_ordinary"):
        small.encode(text)
    allowed = small.encode(text, allowed_special={ENDOFTEXT})
    assert allowed == small.encode(text, allowed_special="all")
    assert allowed.count(small.eot_id) == 1
    assert small.decode(allowed) == text
    plain = small.encode_ordinary(text)
    assert small.eot_id not in plain and small.decode(plain) == text
    with pytest.raises(ValueError, match="not special tokens"):
        small.encode("x", allowed_special={"<|nope|>"})


def test_several_special_tokens_longest_wins():
    tokenizer = Tokenizer.train("hello world", 260, special_tokens=["<|a|>", "<|a|><|b|>"])
    ids = tokenizer.encode("x<|a|><|b|>y<|a|>", allowed_special="all")
    assert ids.count(tokenizer.special_tokens["<|a|><|b|>"]) == 1
    assert ids.count(tokenizer.special_tokens["<|a|>"]) == 1


def test_with_special_tokens_numbers_new_tokens_after_the_vocabulary(small):
    grown = small.with_special_tokens(["<|start|>", "<|delim|>", ENDOFTEXT, "<|start|>"])
    assert grown.special_tokens == {**small.special_tokens, "<|start|>": 512, "<|delim|>": 513}
    assert grown.vocab_size == 514 and small.vocab_size == 512  # a new tokenizer; the old one is unchanged
    assert grown.encode("hi<|delim|>", allowed_special="all") == small.encode_ordinary("hi") + [513]
    assert Tokenizer.loads(grown.dumps()).special_tokens == grown.special_tokens


# ---------------------------------------------------------------- files

def test_save_load_round_trip(small, tmp_path):
    path = tmp_path / "tok.bpe"
    small.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.merges == small.merges and loaded.special_tokens == small.special_tokens
    assert loaded.pattern == small.pattern and loaded.byte_ids == small.byte_ids
    assert loaded.encode_ordinary(MIXED) == small.encode_ordinary(MIXED)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("bpe.py tokenizer v1\n") and 'special "<|endoftext|>" 511' in text


def test_loading_a_truncated_or_malformed_file_names_the_line(small, tmp_path):
    lines = small.dumps().split("\n")
    truncated = tmp_path / "truncated.bpe"
    truncated.write_text("\n".join(lines[:len(lines) // 2]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"truncated\.bpe: line \d+: expected 255 merges"):
        Tokenizer.load(truncated)
    broken = list(lines)
    broken[10] = "12 banana"
    bad = tmp_path / "bad.bpe"
    bad.write_text("\n".join(broken), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.bpe: line 11: cannot parse"):
        Tokenizer.load(bad)
    broken[10] = "9999 1"
    bad.write_text("\n".join(broken), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.bpe: line 11: merge refers to an id not defined"):
        Tokenizer.load(bad)
    (tmp_path / "other.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(ValueError, match="line 1: expected the header"):
        Tokenizer.load(tmp_path / "other.json")


def test_training_errors():
    with pytest.raises(ValueError, match="smaller than 256"):
        Tokenizer.train("hello", 256, special_tokens=[ENDOFTEXT])
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train("", 300)


# ---------------------------------------------------------------- parallel encoding

@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_safe_split_keeps_pre_tokens(pattern):
    text = MIXED * 3 + "\nEnd\nA\n\nB.\nC \nD"
    parts = safe_split(text, 16)
    assert len(parts) > 8 and "".join(parts) == text
    assert [c for part in parts for c in regex.findall(pattern, part)] == regex.findall(pattern, text)


def test_pre_tokenizing_with_re_gives_the_regex_pre_tokens():
    """GPT-2's pattern runs on Python's `re`, with classes listed by `regex`, on blocks made of
    RE_CHARACTERS: the pre-tokens must be regex.findall's. The random text uses only those
    characters, among them the ones where the two modules' own classes disagree ("²" and "½" are
    numbers, "\\x1c" is not whitespace, "_" is punctuation) and the ones a character class must
    escape, so its 64 KB blocks all go to `re`; then one odd character outside them, in otherwise
    plain text, sends its block to `regex`."""
    import random
    rng = random.Random(0)
    alphabet = list("ab Zz09 \n\t'_.,-]\\^[\x00") + ["é", "ß", "“", "”", "—", "\u2009", "²", "½",
                                                      "\x1c", "\xa0", "\x85", "\u2028"]
    assert all(c in bpe.RE_CHARACTERS for c in alphabet)
    words = ["".join(rng.choices(alphabet, k=rng.randint(1, 8))) for _ in range(2000)]
    words += ["'s", "'ll", " it's", "\n\nThe", "x\n", "  \n  y", "  \x1c", " \xa0 a"]
    text = "".join(rng.choice(words) for _ in range(60_000))  # about 300 KB
    blocks = bpe.safe_split(text, len(text) // 65536 + 1)
    assert len(blocks) > 3 and not any(map(bpe.NOT_FOR_RE.search, blocks))  # all on `re`
    assert Tokenizer({}).pre_tokenize(text) == regex.findall(GPT2_PATTERN, text)
    for character in ("²", "½", "\x1c", "Ω", "A", "é", "“"):  # one odd one in otherwise plain text
        plain = "Hello world, it's 2024_x.\n" * 3000 + f"a{character}b 1{character}2  {character}\n"
        assert Tokenizer({}).pre_tokenize(plain) == regex.findall(GPT2_PATTERN, plain)


def test_encode_batch_and_encode_file_in_parallel(small, tmp_path):
    documents = [MIXED[i:i + 5000] for i in range(0, len(MIXED), 5000)] * 40  # over 1 MB: uses processes
    assert sum(map(len, documents)) > 1_000_000
    assert small.encode_batch(documents, num_workers=2, allowed_special="all") == [small.encode(d, allowed_special="all") for d in documents]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(documents), encoding="utf-8")
    assert small.encode_file(path, num_workers=2, allowed_special="all") == small.encode("".join(documents), allowed_special="all")


# ---------------------------------------------------------------- GPT-2 parity with OpenAI's tokenizer

@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    if not GPT2_FILES[0].is_file():
        pytest.skip(f"GPT-2 vocabulary files not found in {DATA / 'gpt2'} (../shared/data)")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks  # built offline from the same two files
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(GPT2_FILES[1]), encoder_json_file=str(GPT2_FILES[0]))
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256})


def varied_text():
    """About 2 MB: Shakespeare, novels (with curly quotes and dashes), GLUE sentences, stories."""
    pieces = []
    if (DATA / "tinyshakespeare.txt").is_file():
        pieces.append((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8"))
    corpus = DATA / "bench" / "gutenberg_en_corpus.txt"
    if corpus.is_file():
        with open(corpus, encoding="utf-8", errors="replace") as f:
            for offset in (0, 20_000_000, 50_000_000):
                f.seek(offset)
                pieces.append(f.read(150_000))
    for path in sorted(DATA.glob("glue/*/dev.tsv")) + sorted(DATA.glob("rocstories/*.csv")):
        pieces.append(path.read_text(encoding="utf-8-sig"))
    return "\n".join(pieces)


def test_gpt2_vocabulary(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256
    assert gpt2.encode("Hello world") == [15496, 995]


def test_gpt2_matches_tiktoken_on_real_text(gpt2, tiktoken_gpt2):
    text = varied_text()
    assert len(text.encode("utf-8")) > 1_000_000
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


@pytest.mark.parametrize("text", ADVERSARIAL + [MIXED])
def test_gpt2_matches_tiktoken_on_adversarial_strings(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")


def test_gpt2_survives_save_and_load(gpt2, tmp_path):
    gpt2.save(tmp_path / "gpt2.bpe")
    loaded = load_tokenizer(str(tmp_path / "gpt2.bpe"))
    assert loaded.encode_ordinary(MIXED) == gpt2.encode_ordinary(MIXED) and loaded.eot_id == 50256
    assert load_tokenizer(f"gpt2:{DATA / 'gpt2'}").merges == gpt2.merges


# ---------------------------------------------------------------- command line

def run_cli(*args, stdin=None):
    command = [sys.executable, str(ROOT / "bpe.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, input=stdin, timeout=120)


def test_cli_train_encode_decode(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TRAINING_TEXTS["prose"] * 5, encoding="utf-8")
    out = tmp_path / "tok.bpe"
    result = run_cli("train", "--input", str(corpus), "--vocab-size", "300", "--out", str(out), "--special", ENDOFTEXT)
    assert result.returncode == 0, result.stderr
    assert Tokenizer.load(out).vocab_size == 300
    encoded = run_cli("encode", "--tokenizer", str(out), "the cat sat")
    ids, pieces = encoded.stdout.splitlines()
    assert pieces.replace("|", "") == "the cat sat"
    decoded = run_cli("decode", "--tokenizer", str(out), stdin=ids)
    assert decoded.stdout == "the cat sat\n"


@pytest.mark.parametrize("case", ["missing file", "empty corpus", "vocab too small", "bad tokenizer"])
def test_cli_errors_are_one_line(tmp_path, case):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    args = {
        "missing file": ["train", "--input", str(tmp_path / "nope.txt"), "--vocab-size", "300", "--out", str(tmp_path / "t")],
        "empty corpus": ["train", "--input", str(empty), "--vocab-size", "300", "--out", str(tmp_path / "t")],
        "vocab too small": ["train", "--input", str(ROOT / "bpe.py"), "--vocab-size", "256", "--special", ENDOFTEXT, "--out", str(tmp_path / "t")],
        "bad tokenizer": ["encode", "--tokenizer", str(empty), "hi"],
    }[case]
    result = run_cli(*args)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t").exists()  # nothing half-written


# ---------------------------------------------------------------- misuse and scale (issue 13)

def tiktoken_with_merges_of(tokenizer):
    """tiktoken given our merges as its ranks: an independent encoder for any tokenizer of ours."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {tokenizer.token_bytes(i): i for i in range(256 + len(tokenizer.merges))}
    return tiktoken.Encoding("ours", pat_str=tokenizer.pattern, mergeable_ranks=ranks,
                             special_tokens=tokenizer.special_tokens)


@pytest.mark.timeout(60)  # a loop that rescans the pre-token after each merge needs minutes here
def test_gpt2_long_pre_tokens_match_tiktoken(gpt2, tiktoken_gpt2):
    """One 100,000-letter 'word' (a minified file, a base64 blob) must not act as a hang."""
    import random
    import string
    rng = random.Random(0)
    for alphabet in ("a", string.ascii_letters, string.digits, "éa你"):
        text = "".join(rng.choices(alphabet, k=100_000))
        assert len(regex.findall(GPT2_PATTERN, text)) == 1
        assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_heap_merge_equals_tiktoken_on_short_pre_tokens_too(small, monkeypatch):
    """The heap path (for long pre-tokens) forced onto every pre-token gives tiktoken's ids."""
    monkeypatch.setattr("bpe.LONG_PRE_TOKEN", 1)
    fresh = Tokenizer(small.merges, special_tokens=small.special_tokens)  # an empty cache
    reference = tiktoken_with_merges_of(small)
    for text in [MIXED, *ADVERSARIAL]:
        assert fresh.encode_ordinary(text) == reference.encode_ordinary(text)


def test_training_with_a_repeated_special_token_keeps_every_id_in_the_vocabulary():
    specials = [ENDOFTEXT, "<|pad|>", ENDOFTEXT]
    tokenizer = Tokenizer.train(TRAINING_TEXTS["code"], 300, special_tokens=specials)
    assert tokenizer.vocab_size == 300 and len(tokenizer.merges) == 300 - 256 - 2
    assert sorted(tokenizer.special_tokens.values()) == [298, 299]  # rows of a 300-row embedding
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train(TRAINING_TEXTS["code"], 300, special_tokens=[""])


def test_cli_refuses_an_empty_special_token_before_training(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TRAINING_TEXTS["prose"], encoding="utf-8")
    out = tmp_path / "t"
    result = run_cli("train", "--input", str(corpus), "--vocab-size", "300", "--out", str(out),
                     "--special", "")
    assert result.returncode != 0 and result.stderr.startswith("error: ")
    assert "empty" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def write_gpt2_files(tokenizer, folder):
    """Our tokenizer in OpenAI's format: encoder.json (token in the printable byte alphabet -> id)
    and vocab.bpe (one merge per line, in rank order), as openai/gpt-2's encoder.py reads them."""
    encoder = {printable(tokenizer.token_bytes(i)): i for i in range(256 + len(tokenizer.merges))}
    encoder.update(tokenizer.special_tokens)
    merges = sorted(tokenizer.merges.items(), key=lambda item: item[1])
    lines = ["#version: 0.2"]
    lines += [" ".join(printable(tokenizer.token_bytes(i)) for i in pair) for pair, _ in merges]
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")


EOT_LINE = f'special "{ENDOFTEXT}" 511'
BROKEN_FILES = {  # case -> (the file, how to damage its text, what the one-line error must say)
    "vocab.bpe cut at a line boundary":
        ("vocab.bpe", lambda text: "\n".join(text.split("\n")[:101]) + "\n", "cut short"),
    "encoder.json missing a byte":
        ("encoder.json", lambda text: text.replace('"A": 65, ', ""), "byte 0x41"),
    "encoder.json written as a list":
        ("encoder.json", lambda text: json.dumps(list(json.loads(text))), "JSON object"),
    "a merge line with one number":
        ("tok.bpe", lambda text: regex.sub(r"(?m)^(\d+) \d+  .*$", r"\1", text, 1), "cannot parse"),
    "a bad split pattern":
        ("tok.bpe", lambda text: regex.sub(r"(?m)^pattern .*", 'pattern "("', text, 1), "pattern"),
    "a special id taken by a byte":
        ("tok.bpe", lambda text: text.replace(EOT_LINE, EOT_LINE[:-3] + "65"), "special"),
    "a special id past the vocabulary":
        ("tok.bpe", lambda text: text.replace(EOT_LINE, EOT_LINE[:-3] + "600"), "special"),
}


@pytest.mark.parametrize("case", BROKEN_FILES)
def test_malformed_tokenizer_files_are_refused_in_one_line_naming_the_file(small, tmp_path, case):
    name, damage, problem = BROKEN_FILES[case]
    write_gpt2_files(small, tmp_path)
    small.save(tmp_path / "tok.bpe")
    path = tmp_path / name
    damaged = damage(path.read_text(encoding="utf-8"))
    assert damaged != path.read_text(encoding="utf-8")
    path.write_text(damaged, encoding="utf-8")
    with pytest.raises(ValueError) as error:
        load_tokenizer(str(path) if name == "tok.bpe" else f"gpt2:{tmp_path}")
    message = str(error.value)
    assert name in message and problem in message and "\n" not in message


def test_gpt2_style_files_of_our_own_load_with_our_ids(small, tmp_path):
    """The fixture of the test above is a faithful GPT-2 layout: undamaged, it loads as `small`."""
    write_gpt2_files(small, tmp_path)
    loaded = load_tokenizer(f"gpt2:{tmp_path}")
    assert loaded.merges == small.merges and loaded.special_tokens == small.special_tokens


def test_cli_encode_treats_typed_special_tokens_as_text_unless_allowed(small, tmp_path):
    """tiktoken's rule, which the README states: text typed by a user cannot end a document."""
    small.save(tmp_path / "tok.bpe")
    reference = tiktoken_with_merges_of(small)
    text = f"the end{ENDOFTEXT}the start"
    plain = run_cli("encode", "--tokenizer", str(tmp_path / "tok.bpe"), text)
    assert plain.stdout.split("\n")[0] == " ".join(map(str, reference.encode_ordinary(text)))
    allowed = run_cli("encode", "--tokenizer", str(tmp_path / "tok.bpe"), "--allow-special", text)
    expected = reference.encode(text, allowed_special="all")
    assert small.eot_id in expected
    assert allowed.stdout.split("\n")[0] == " ".join(map(str, expected))


def live_processes():
    """{pid: parent's pid} of the running processes (Linux: from /proc; a zombie has ended)."""
    processes = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]  # after "pid (name)"
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        if state != "Z":
            processes[int(stat.parent.name)] = int(parent)
    return processes


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or (os.cpu_count() or 1) < 2,
                    reason="needs Linux's /proc and 2 cores (training uses processes from 2 MB on)")
def test_ctrl_c_during_parallel_pre_tokenization_prints_one_line_and_ends_the_workers(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(MIXED * 1000, encoding="utf-8")  # 28 MB: a second or more in the workers
    command = [sys.executable, str(ROOT / "bpe.py"), "train", "--input", str(corpus),
               "--vocab-size", "300", "--out", str(tmp_path / "t")]
    # As a terminal's foreground job, whose Ctrl-C is what this is: SIGINT at its default. A test
    # run started in the background (`pytest &` in a script) ignores SIGINT, and a child inherits that.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if workers := [pid for pid, ppid in live_processes().items() if ppid == process.pid]:
                break
            time.sleep(0.02)
        assert workers, "the workers never started"
        time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C signals the whole job
        _, stderr = process.communicate(timeout=30)
        assert process.returncode != 0 and len(stderr.strip().splitlines()) == 1, stderr
        assert "interrupted" in stderr and not (tmp_path / "t").exists()
        deadline = time.time() + 10
        while set(workers) & set(live_processes()) and time.time() < deadline:
            time.sleep(0.1)
        assert not set(workers) & set(live_processes()), "workers outlived the interrupted run"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the job if the test failed
        except ProcessLookupError:
            pass


def textbook_encode(tokenizer, text):
    """BPE encoding as Sennrich et al. (2016) describe it: apply each merge, in the order learned,
    everywhere in each pre-token."""
    ids = []
    for chunk in regex.findall(tokenizer.pattern, text):
        chunk_ids = [tokenizer.byte_ids[b] for b in chunk.encode("utf-8")]
        for pair, new_id in sorted(tokenizer.merges.items(), key=lambda item: item[1]):
            chunk_ids = merge(chunk_ids, pair, new_id)
        ids += chunk_ids
    return ids


def test_a_pre_token_that_is_a_token_is_still_encoded_by_the_merges():
    """tiktoken skips the merges for a pre-token that is a token. That is exact only where the
    merges make each token from its bytes (GPT-2's do): after b+c, a+b, ab+c, "abc" is a token,
    yet the merges turn "abc" into "a" "bc". So tiktoken is no reference here; the textbook is."""
    import random
    a, b, c = b"abc"
    tokenizer = Tokenizer({(b, c): 256, (a, b): 257, (257, c): 258})
    assert tokenizer.encode_ordinary("abc") == textbook_encode(tokenizer, "abc") == [a, 256]
    rng = random.Random(0)
    for _ in range(300):  # random merges of a, b, c: the text of 1 token in 4 encodes to others
        merges, ids = {}, [a, b, c]
        for _ in range(rng.randint(1, 25)):
            pair = (rng.choice(ids), rng.choice(ids))
            if pair not in merges:
                merges[pair] = 256 + len(merges)
                ids.append(merges[pair])
        tokenizer = Tokenizer(merges)
        texts = [tokenizer.decode([i]) for i in ids]  # letters only: each text is one pre-token
        assert [tokenizer.encode_ordinary(t) for t in texts] == [textbook_encode(tokenizer, t)
                                                                 for t in texts]
