"""Every notebook in notebooks/ runs top to bottom without an error (so none rots), and is stored clean.

Each notebook runs in a fresh kernel of *this* interpreter (a kernelspec written to tmp_path,
nothing installed), with cwd = notebooks/ as in Jupyter, and writes only under tmp_path
(``NOTEBOOK_OUT``), at test size (``NOTEBOOK_QUICK``: a few training steps and images). Notebook 03
also runs without a report folder (``NOTEBOOK_REPORT_DIR``), the path where it computes a stand-in
report itself, when the committed example would hide it.
"""
import json
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXAMPLE_REPORT = ROOT / "reports" / "example" / "tables" / "evaluation.csv"
CELL_TIMEOUT_S = 300
KERNEL = "clade-toolkit-test"


@pytest.fixture
def kernel_manager(tmp_path):
    """A KernelManager whose only kernelspec starts ``sys.executable -m ipykernel_launcher``."""
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "clade-toolkit (test)", "language": "python"}))
    return lambda: KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))


def execute(notebook, kernel_manager):
    """Run every cell of ``notebook`` (a NotebookNode) with cwd = notebooks/; raises on a cell error."""
    client = nbclient.NotebookClient(notebook, km=kernel_manager(), timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    return notebook


def cases():
    for path in NOTEBOOKS:
        yield pytest.param(path, None, id=path.stem)
        if path.stem.startswith("03") and EXAMPLE_REPORT.is_file():
            yield pytest.param(path, "missing-report", id=f"{path.stem}-without-report")


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_models_and_costs.ipynb", "02_modulation_probe.ipynb",
                                           "03_roi_and_report.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, (f"{path.name}: code cells {dirty} hold outputs or execution counts; clear them "
                       f"(jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)})")
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert code[0].source.startswith("# Settings"), f"{path.name}: the first code cell must hold the settings"


def test_kernel_runs_this_interpreter(kernel_manager):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    execute(notebook, kernel_manager)
    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.mark.parametrize("path, report", list(cases()))
def test_notebook_runs(path, report, kernel_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("NOTEBOOK_QUICK", "1")
    if report is not None:
        monkeypatch.setenv("NOTEBOOK_REPORT_DIR", str(tmp_path / report))
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    execute(notebook, kernel_manager)
    elapsed = time.perf_counter() - start
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert images > 0, f"{path.name} drew no figure"
    print(f"{path.name}: {elapsed:.1f} s, {images} figures")
