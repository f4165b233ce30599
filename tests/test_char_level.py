"""Characters as tokens (bpe.CharTokenizer, train.py --tokenizer char): nanoGPT's shakespeare_char,
its vocabulary the sorted characters of the corpus, from preparing the data to sampling."""

import json
import math
from pathlib import Path

import pytest

import sample
import train
from bpe import ENDOFTEXT, CharTokenizer, Tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
# Tiny Shakespeare when ../shared/data has it, else this project's source; with a few characters
# of more than one UTF-8 byte at the end (in the held-out 10%), so that bytes and characters differ.
TEXT = (SHAKESPEARE.read_text(encoding="utf-8")[:60_000] if SHAKESPEARE.is_file()
        else (ROOT / "gpt.py").read_text(encoding="utf-8")[:60_000]) + "Ça, naïve café…\n" * 40


def test_the_vocabulary_is_the_sorted_characters_of_the_corpus_then_endoftext():
    tokenizer = CharTokenizer.train([TEXT[:30_000], TEXT[30_000:]], special_tokens=[ENDOFTEXT])
    chars = sorted(set(TEXT))  # nanoGPT's data/shakespeare_char/prepare.py
    assert [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)] == chars + [ENDOFTEXT]
    assert tokenizer.eot_id == len(chars)
    ids = tokenizer.encode_ordinary(TEXT)
    assert ids == [chars.index(char) for char in TEXT]
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.encode("hi" + ENDOFTEXT, allowed_special="all") == [
        chars.index("h"), chars.index("i"), tokenizer.eot_id]
    assert tokenizer.token_bytes(chars.index("é")) == "é".encode()  # two bytes, one token


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not found (../shared/data)")
def test_tiny_shakespeare_has_nanogpts_65_characters():
    assert CharTokenizer.train([SHAKESPEARE.read_text(encoding="utf-8")]).vocab_size == 65


def test_saved_and_loaded_like_every_tokenizer_and_unknown_characters_are_named(tmp_path):
    tokenizer = CharTokenizer.train([TEXT], special_tokens=[ENDOFTEXT])
    tokenizer.save(tmp_path / "tokenizer.bpe")  # the data cache's file; checkpoints keep dumps()
    for loaded in Tokenizer.load(tmp_path / "tokenizer.bpe"), Tokenizer.loads(tokenizer.dumps()):
        assert loaded.encode_ordinary(TEXT) == tokenizer.encode_ordinary(TEXT)
        assert loaded.special_tokens == {ENDOFTEXT: tokenizer.eot_id}
    with pytest.raises(ValueError, match="'€' is not in the vocabulary"):
        tokenizer.encode_ordinary("To €")
    with pytest.raises(ValueError, match="token id 999"):
        tokenizer.decode([999])


def test_a_character_level_run_measures_bits_per_byte_and_samples(tmp_path, capsys):
    """configs/shakespeare_char_cpu.json on a small text and a smaller model: the data is one token
    per character, the loss falls below a uniform guess, and sample.py continues a prompt."""
    (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    train.main(["--config", str(ROOT / "configs" / "shakespeare_char_cpu.json"),
                "--data", str(tmp_path / "input.txt"), "--cache-dir", str(tmp_path / "cache"),
                "--out-dir", str(out), "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                "--block-size", "32", "--max-iters", "40", "--warmup-iters", "4",
                "--eval-iters", "4", "--log-interval", "10", "--sample-tokens", "20"])
    meta = json.loads(next((tmp_path / "cache").glob("input-char-*/meta.json")).read_text())
    cut = TEXT.rfind("\n", 0, int(len(TEXT) * 0.9)) + 1  # the held-out last 10%, whole lines
    assert meta["val_tokens"] == len(TEXT) - cut + 1  # a token per character, and <|endoftext|>
    assert meta["val_bytes"] == len(TEXT[cut:].encode("utf-8")) > len(TEXT) - cut
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    last = [entry for entry in log if "val_loss" in entry][-1]
    assert last["val_loss"] < math.log(len(set(TEXT)) + 1)  # better than a uniform guess
    bits = last["val_loss"] * meta["val_tokens"] / meta["val_bytes"] / math.log(2)
    assert last["val_bpb"] == pytest.approx(bits, abs=1e-4)
    capsys.readouterr()

    sample.main(["--init-from", str(out / "ckpt.pt"), "--prompt", "ROMEO:", "--max-new-tokens",
                 "30", "--seed", "1", "--no-stream", "--device", "cpu"])
    text = capsys.readouterr().out
    assert text.startswith("ROMEO:") and set(text) <= set(TEXT) and len(text) > len("ROMEO:\n")
    with pytest.raises(SystemExit) as error:
        sample.main(["--init-from", str(out / "ckpt.pt"), "--prompt", "To €", "--device", "cpu"])
    assert str(error.value.code).startswith("error: the character '€' is not in the vocabulary")
