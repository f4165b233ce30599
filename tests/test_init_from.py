"""One way to name a starting model (issue 14): train.py, finetune.py and sample.py take the same
--init-from forms, through one function (gpt.load_model), document them with the same text, and
answer a wrong one with one line that lists them. nanoGPT's --init-from is the model: one flag,
every script."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune
import sample
import train
from bpe import ENDOFTEXT, Tokenizer
from gpt import GPT, GPTConfig, HUB_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train.py": train.main, "finetune.py": finetune.main, "sample.py": sample.main}
TINY = ["--model", "gpt-nano", "--block-size", "32", "--batch-size", "4", "--eval-iters", "2",
        "--sample-tokens", "0", "--device", "cpu"]


def words(text):
    return " ".join(text.split())


def help_text(main, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    return words(capsys.readouterr().out)


def one_line_error(main, argv):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    message = str(exit.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_every_script_documents_the_same_init_from_forms(capsys):
    texts = {name: help_text(main, capsys) for name, main in SCRIPTS.items()}
    documented = {name: re.search(r"--init-from [A-Z_]+ (.*?)\(default", text).group(1).strip()
                  for name, text in texts.items()}
    assert len(set(documented.values())) == 1, documented
    forms = documented["train.py"]
    for form in ("ckpt.pt", "gpt2:DIR", "params_shapes.json", *HUB_NAMES):
        assert form in forms, forms


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_wrong_init_from_is_one_line_listing_the_forms(tmp_path, name):
    argv = {"train.py": ["--data", str(tmp_path), "--out-dir", str(tmp_path / "out"), *TINY],
            "finetune.py": ["--task", "sst2", "--data", str(tmp_path), "--device", "cpu",
                            "--out-dir", str(tmp_path / "out")],
            "sample.py": ["--prompt", "hi", "--device", "cpu"]}[name]
    message = one_line_error(SCRIPTS[name], argv + ["--init-from", str(tmp_path / "gpt3")])
    assert "gpt3: no such checkpoint file or model folder" in message
    assert all(form in message for form in ("ckpt.pt", "gpt2:DIR", *HUB_NAMES)), message


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error given without CUDA")
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_refuses_a_device_it_does_not_have_in_one_line(tmp_path, name):
    argv = {"train.py": ["--data", str(tmp_path), "--out-dir", str(tmp_path / "out")],
            "finetune.py": ["--task", "sst2", "--data", str(tmp_path),
                            "--out-dir", str(tmp_path / "out")],
            "sample.py": ["--prompt", "hi", "--out-dir", str(tmp_path)]}[name]
    message = one_line_error(SCRIPTS[name], argv + ["--device", "cuda"])
    assert "cuda" in message and "--device cpu" in message


def test_train_continues_from_a_checkpoint_file(tmp_path):
    """--init-from out/ckpt.pt: the checkpoint's weights and its own tokenizer (not a new BPE)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(open(finetune.__file__, encoding="utf-8").read(), encoding="utf-8")
    tokenizer = Tokenizer.train(corpus.read_text(encoding="utf-8"), 280, special_tokens=[ENDOFTEXT])
    torch.manual_seed(0)
    start = GPT(GPTConfig.preset("gpt-nano", vocab_size=tokenizer.vocab_size, block_size=32))
    torch.save({"model": start.state_dict(), "config": vars(start.config),
                "tokenizer": tokenizer.dumps()}, tmp_path / "start.pt")
    train.main(["--data", str(corpus), "--cache-dir", str(tmp_path / "cache"), *TINY,
                "--out-dir", str(tmp_path / "out"), "--init-from", str(tmp_path / "start.pt"),
                "--max-iters", "1", "--learning-rate", "1e-9", "--log-interval", "1"])
    saved = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert saved["tokenizer"] == tokenizer.dumps()
    assert saved["config"] == vars(start.config)
    for key, weight in start.state_dict().items():  # one step of 1e-9 moves no weight visibly
        torch.testing.assert_close(saved["model"][key], weight, atol=1e-6, rtol=0)


def test_train_continues_gpt1_with_a_new_document_separator(tmp_path):
    """GPT-1 has no <|endoftext|>: continued pretraining adds it after the 40,478 tokens, with a
    new embedding row, as finetune.py adds its task tokens (GPT-1 section 3.3). The corpus is
    GPT-1's ids as Hugging Face's OpenAIGPTTokenizer gives them, each document then 40478."""
    transformers = pytest.importorskip("transformers")
    vocab = ROOT.parent / "shared" / "data" / "gpt1"
    if not (vocab / "encoder_bpe_40000.json").is_file():
        pytest.skip(f"GPT-1's vocabulary not found in {vocab} (../shared/data)")
    folder = tmp_path / "openai-gpt"  # a small random GPT-1 with the real vocabulary
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        n_layer=1, n_head=1, n_embd=64, n_positions=64, vocab_size=40478))
    hf.save_pretrained(folder)
    (folder / "vocab.json").write_bytes((vocab / "encoder_bpe_40000.json").read_bytes())
    (folder / "merges.txt").write_bytes((vocab / "vocab_40000.bpe").read_bytes())
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for i in range(20):  # document 10 is held out for validation
        (tmp_path / "corpus" / f"{i:02d}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "corpus" / f"{i:02d}.txt").write_text(text[i * 400:(i + 1) * 400])
    argv = ["--data", str(tmp_path / "corpus"), "--cache-dir", str(tmp_path / "cache"), *TINY,
            "--out-dir", str(tmp_path / "out"), "--init-from", str(folder), "--learning-rate", "1e-9"]
    train.main(argv + ["--max-iters", "1"])
    saved = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    tokenizer = Tokenizer.loads(saved["tokenizer"])
    assert tokenizer.special_tokens == {ENDOFTEXT: 40478} and tokenizer.eot_id == 40478
    assert saved["config"]["vocab_size"] == 40479 and saved["config"]["ln_position"] == "post"
    embedding = saved["model"]["transformer.wte.weight"]
    torch.testing.assert_close(embedding[:40478], hf.transformer.tokens_embed.weight.detach(),
                               atol=1e-6, rtol=0)
    val = next((tmp_path / "cache").iterdir()) / "val.bin"
    reference = transformers.OpenAIGPTTokenizer.from_pretrained(folder)
    assert np.fromfile(val, dtype=np.uint16).tolist() == reference.encode(text[4000:4400]) + [40478]
    train.main(argv + ["--max-iters", "2", "--resume"])  # on the same data, with the same ids
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"] == 2
