"""The course in notebooks/ (issue 7): every notebook runs top to bottom without an error, and the
committed files are the executed ones, with their outputs, so they read without running.

Each notebook is executed in memory with nbclient, in a fresh python3 kernel whose working
directory is notebooks/ (as when a student opens it there); the committed file is never rewritten.
The notebooks write only to temporary folders, and skip (with a printed note) the cells that need
../shared/data when it is missing.
"""
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CACHES = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints"}


def repository_files():
    return {p for p in REPO.rglob("*") if not CACHES & set(p.relative_to(REPO).parts)}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, f"expected the course's notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path):
    """Readable on a web page: every code cell ran, none failed, and the file stays small."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), f"{path.name}: run it and save the outputs"
    errors = [out.ename for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name} was saved with errors: {errors}"
    assert path.stat().st_size < 1_000_000, f"{path.name} is over 1 MB: lower the plots' dpi or print less"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    notebook = nbformat.read(path, as_version=4)  # a copy in memory: the committed file is left as it is
    client = nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    before, start = repository_files(), time.time()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    print(f"{path.name}: {time.time() - start:.1f} s")
    written = sorted(str(p.relative_to(REPO)) for p in repository_files() - before)
    assert not written, f"{path.name} wrote into the repository (use a temporary folder): {written}"
