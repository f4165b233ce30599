"""bpe.py's GPT-1 tokenizer against Hugging Face's OpenAIGPTTokenizer on the same 40,478-token
vocabulary (openai/finetune-transformer-lm), on real text: Tiny Shakespeare, GLUE, ROCStories,
and text in other scripts, accents, emoji and odd whitespace."""

import csv
import re
import shutil
import unicodedata

import pytest

import bpe
from bpe import GPT1Tokenizer, Tokenizer, load_tokenizer, text_standardize
from shared_data import DATA, ROCSTORIES, needs

transformers = pytest.importorskip("transformers")

GPT1 = DATA / "gpt1"
ODD = ["Hello, World! It's 3.5 dollars—isn't it…",
       "ΟΔΟΣ İstanbul café naïve Ångström Straße",
       "日本語のテキスト a日b 中文 한국어",
       "emoji 😀👍🏽 ❤️ flags 🇫🇷",
       "tab\there\nnew  line\r\n\u2028x\x0cy\x1cz",
       "\u00a0no-break\u200bzero\u200dwidth\ufeffbom\ufffd",
       "e\u0301 combining, ﬁ ligature, ½ ①",
       "don't (stop) [now] {ok} <b>bold</b> $5 #1 @me ~x^2 `code` | a_b",
       "", "   \n\t "]


@pytest.fixture(scope="module")
def gpt1():
    files = needs(GPT1) / "encoder_bpe_40000.json", GPT1 / "vocab_40000.bpe"
    return GPT1Tokenizer.from_gpt1(*files, original=False)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """GPT-1's files as Hugging Face's openai-gpt folder names them."""
    folder = tmp_path_factory.mktemp("openai-gpt")
    shutil.copy(needs(GPT1) / "encoder_bpe_40000.json", folder / "vocab.json")
    shutil.copy(GPT1 / "vocab_40000.bpe", folder / "merges.txt")
    return folder


@pytest.fixture(scope="module")
def reference(hf_folder):
    return transformers.OpenAIGPTTokenizer.from_pretrained(hf_folder)


def real_texts():
    texts = [needs(DATA / "tinyshakespeare.txt").read_text()[:300_000]]
    for task, columns in (("SST-2", ["sentence"]), ("RTE", ["sentence1", "sentence2"]),
                          ("MRPC", ["#1 String", "#2 String"])):
        path = needs(DATA / "glue" / task / "dev.tsv")
        with open(path, encoding="utf-8-sig", newline="") as file:
            rows = csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
            texts += [row[column] for row in rows for column in columns]
    rocstories = needs(ROCSTORIES)
    with open(rocstories, encoding="utf-8", newline="") as file:
        texts += [" ".join(row.values()) for row in csv.DictReader(file)]
    return texts + ODD


def test_ids_and_text_equal_hugging_face_on_real_text(gpt1, reference):
    """Hugging Face's default mode (no ftfy, no spaCy): BERT's basic tokenizer, then GPT-1's BPE."""
    texts = real_texts()
    expected = reference(texts)["input_ids"]
    for text, ids in zip(texts, expected):
        assert gpt1.encode(text) == ids, text[:200]
        assert gpt1.decode(ids) == reference.decode(ids)


def test_every_character_of_common_blocks_between_letters(gpt1, reference):
    """Control characters, punctuation, symbols, accents, CJK, emoji: each one inside a word.
    (Characters added to Unicode after the tables of Hugging Face's Rust code may differ.)"""
    blocks = [(0x0, 0x600), (0x2000, 0x2800), (0x3000, 0x3100), (0x4E00, 0x4F00), (0xFF00, 0xFFF0),
              (0x1F300, 0x1F650)]
    texts = [f"ab{chr(c)}c" for start, end in blocks for c in range(start, end)]
    for text, ids in zip(texts, reference(texts)["input_ids"]):
        assert gpt1.encode(text) == ids, f"U+{ord(text[2]):04X} {unicodedata.name(text[2], '')}"


def test_load_tokenizer_recognises_gpt1_files_in_every_folder_layout(gpt1, hf_folder, tmp_path):
    text = "The quick brown fox, naïvely, jumped!"
    (tmp_path / "gpt2").mkdir()
    shutil.copy(needs(DATA / "gpt2") / "encoder.json", tmp_path / "gpt2" / "vocab.json")
    shutil.copy(DATA / "gpt2" / "vocab.bpe", tmp_path / "gpt2" / "merges.txt")
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    assert type(load_tokenizer(str(tmp_path / "gpt2"))) is Tokenizer
    for spec in [str(GPT1), f"gpt2:{GPT1}", str(hf_folder)]:  # original names; </w> tells
        assert load_tokenizer(spec).encode(text) == gpt1.encode(text), spec
    (hf_folder / "config.json").write_text('{"model_type": "openai-gpt"}')
    assert load_tokenizer(str(hf_folder)).encode(text) == gpt1.encode(text)


def test_merges_of_unknown_symbols_are_named(tmp_path):
    shutil.copy(needs(GPT1) / "encoder_bpe_40000.json", tmp_path)
    lines = (GPT1 / "vocab_40000.bpe").read_text(encoding="utf-8").split("\n")
    lines[3] = "qz\u00e9 x"
    (tmp_path / "vocab_40000.bpe").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab_40000.bpe: line 4: not a merge of two symbols"):
        load_tokenizer(str(tmp_path))


def test_task_tokens_come_after_the_vocabulary_and_survive_a_checkpoint(gpt1, tmp_path):
    """finetune-transformer-lm adds _start_, _delimiter_, _classify_ as ids 40478, 40479, 40480."""
    tok = gpt1.with_special_tokens(["<|start|>", "<|delim|>", "<|extract|>"])
    assert (tok.vocab_size, tok.special_tokens["<|extract|>"]) == (40481, 40480)
    ids = tok.encode("<|start|>A story.<|delim|>An end.<|extract|>", allowed_special="all")
    assert ids == [40478, *gpt1.encode("A story."), 40479, *gpt1.encode("An end."), 40480]
    tok.save(tmp_path / "tok.bpe")
    for again in (Tokenizer.loads(tok.dumps()), load_tokenizer(str(tmp_path / "tok.bpe"))):
        assert isinstance(again, GPT1Tokenizer) and again.special_tokens == tok.special_tokens
        assert again.encode("<|start|>A story.", allowed_special="all") == ids[:4]
        assert again.decode(ids) == "<|start|>a story . <|delim|>an end . <|extract|>"


def test_command_line_encodes_with_a_gpt1_folder(reference, capsys):
    bpe.main(["encode", "--tokenizer", str(needs(GPT1)), "Hello, World!"])
    first_line = capsys.readouterr().out.splitlines()[0]
    assert [int(i) for i in first_line.split()] == reference.encode("Hello, World!")


# ---------------------------------------------------------------- GPT-1's own text pipeline

def original_text_standardize(text):
    """text_utils.py of openai/finetune-transformer-lm, as released."""
    text = text.replace('—', '-').replace('–', '-').replace('―', '-').replace('…', '...')
    text = text.replace('´', "'")
    text = re.sub(r'''(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)''',
                  r' \1 ', text)
    text = re.sub(r'\s*\n\s*', ' \n ', text)
    text = re.sub(r'[^\S\n]+', ' ', text)
    return text.strip()


def test_text_standardize_equals_text_utils():
    for text in ODD + ["Wait---what?!! \"Yes\"...;; (a)(b) \\\\ // ** [[x]] {{y}} || __init__ ++",
                       "  line one  \n\n  line two\t\tend  ", "—–― …´"]:
        assert text_standardize(text) == original_text_standardize(text), text


def test_original_pipeline_with_ftfy_and_spacy(gpt1):
    """As GPT-1 was trained (text_utils.py): ftfy, text_standardize, spaCy's English tokenizer,
    lowercase. Hugging Face's tokenizer did the same before transformers 5."""
    ftfy = pytest.importorskip("ftfy", reason="ftfy and spacy are optional: not installed")
    english = pytest.importorskip("spacy.lang.en", reason="ftfy and spacy are optional").English
    nlp, ours = english().tokenizer, GPT1Tokenizer(gpt1.encoder, gpt1.merges, original=True)
    for text in ODD[:4] + ["Don't stop—please…\nNew paragraph."]:
        words = [t.text.lower() for t in nlp(original_text_standardize(ftfy.fix_text(text)))]
        assert ours.encode(text) == [gpt1.encoder.get(symbol, 0) for word in words
                                     for symbol in gpt1.bpe(word)]
