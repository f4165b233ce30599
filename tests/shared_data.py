"""Where the tests find the real data (GPT-2 and GPT-1 vocabularies, GLUE, ROCStories, Tiny
Shakespeare): ../shared/data beside the checkout, never copied into the project."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROCSTORIES = DATA / "rocstories" / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"


def needs(path):
    """path, or skip the test, saying why, where the shared data is missing."""
    if not path.exists():
        pytest.skip(f"{path} not found: the shared data folder (../shared/data) is missing")
    return path
