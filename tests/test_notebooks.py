"""Every notebook runs top to bottom at the tiny preset (CI executes them here, with nbclient).
Notebooks are stored without outputs; their logic lives in the package."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import os

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs_and_take_a_preset():
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "PRESET =" in params[0].source, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} stored with outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_the_tiny_preset(path, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path_factory.getbasetemp() / "notebook-cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # the kernel runs in a temporary folder: let it import the package even when not installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = 'PRESET = "tiny"\nDATA = None'
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "runs" / "notebooks").is_dir()
