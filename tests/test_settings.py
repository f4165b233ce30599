"""train.py's settings are resolved by one function in one documented order (issue 14):
TrainConfig's defaults < the device's defaults (or a resumed run's own settings) < the --config
recipe < the command line; then the settings that follow from others. The result is printed once
at the start of a run and stored in its checkpoint."""

import ast
import json
from pathlib import Path

import pytest
import torch

import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
ROOT = Path(__file__).resolve().parents[1]


def resolve(argv, device_type="cpu", saved=None):
    config, asked = train.parse_args(argv)
    return train.resolve_settings(config, asked, device_type, saved)


def test_each_source_wins_over_the_ones_before_it(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({"max_iters": 40, "batch_size": 3}))
    config = resolve(["--config", str(tmp_path / "recipe.json"), "--batch-size", "5"])
    assert config.batch_size == 5  # the flag, over the recipe
    assert config.max_iters == 40  # the recipe, over the device's 1000
    assert config.learning_rate == 3e-3 and config.model == train.DEVICE_DEFAULTS["cpu"]["model"]  # the CPU's, over 0 and ""
    assert config.weight_decay == 0.1  # TrainConfig's own
    assert config.beta2 == 0.99 and resolve([], "cuda").beta2 == 0.95  # each device's
    assert (config.warmup_iters, config.eval_interval, config.lr_decay_iters) == (2, 4, 40)
    cuda = resolve(["--config", str(tmp_path / "recipe.json")], "cuda")
    assert (cuda.model, cuda.dropout, cuda.max_iters) == ("gpt2", 0.1, 40)


def test_a_resumed_run_keeps_its_own_settings_but_what_is_asked_again():
    saved = vars(resolve(["--max-iters", "40", "--learning-rate", "1e-3"], "cuda"))
    config = resolve(["--resume", "--max-iters", "80"], "cpu", saved)
    assert config.max_iters == 80 and config.resume  # asked for now
    assert config.learning_rate == 1e-3 and config.model == "gpt2"  # the run's, not the CPU's
    assert config.lr_decay_iters == 40  # resolved when the run began: the schedule stays
    with pytest.raises(ValueError, match="other model"):
        resolve(["--resume", "--model", "gpt-nano"], "cpu", saved)


def test_the_settings_are_printed_once_and_stored_in_the_checkpoint(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(open(train.__file__, encoding="utf-8").read())
    train.main(["--data", str(tmp_path / "text.txt"), "--cache-dir", str(tmp_path / "cache"),
                "--out-dir", str(tmp_path / "out"), "--model", "gpt-nano", "--block-size", "16",
                "--batch-size", "2", "--vocab-size", "260", "--max-iters", "1", "--eval-iters", "1",
                "--sample-tokens", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("settings: ") == 1
    printed = out[out.index("settings: ") + len("settings: "):out.index("}", out.index("settings: "))]
    stored = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["train_config"]
    assert ast.literal_eval(printed.replace("\n", " ") + "}") == stored
    assert stored["max_iters"] == 1 and stored["warmup_iters"] == 1 and stored["lr_decay_iters"] == 1


@pytest.mark.parametrize("dtype, width", [("bfloat16", 256), ("float32", 128)])
def test_a_cpu_in_float32_trains_the_narrower_default(tmp_path, dtype, width):
    """A CPU without bfloat16 arithmetic trains in float32, where gpt-tiny's step takes 2.2 times as
    long: its default is the same two layers, half as wide (gpt-tiny-128), in the same steps."""
    (tmp_path / "text.txt").write_text(open(train.__file__, encoding="utf-8").read())
    train.main(["--data", str(tmp_path / "text.txt"), "--cache-dir", str(tmp_path / "cache"),
                "--out-dir", str(tmp_path / "out"), "--block-size", "16", "--batch-size", "2",
                "--vocab-size", "260", "--max-iters", "1", "--eval-iters", "1",
                "--sample-tokens", "0", "--device", "cpu", "--dtype", dtype])
    checkpoint = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert checkpoint["config"]["n_layer"] == 2 and checkpoint["config"]["n_embd"] == width
    assert checkpoint["train_config"]["learning_rate"] == 3e-3


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "configs").glob("*.json")))
def test_every_recipe_resolves_to_a_model(recipe):
    """A recipe is read only when it is run, on the machine it is for (a GPU's): its typos are
    found here. shakespeare_char.json is nanoGPT's config/train_shakespeare_char.py."""
    config = resolve(["--config", str(ROOT / "configs" / recipe)], "cuda")
    model = train.model_config(config, vocab_size=66)
    if recipe == "shakespeare_char.json":
        assert (model.n_layer, model.n_head, model.n_embd, model.block_size) == (6, 6, 384, 256)
        assert (model.dropout, model.bias, model.activation) == (0.2, False, "gelu")
        assert (config.batch_size, config.max_iters, config.learning_rate, config.beta2,
                config.warmup_iters, config.tokenizer) == (64, 5000, 1e-3, 0.99, 100, "char")
