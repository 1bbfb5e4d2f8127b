"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel, against the torchless this run imports."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def _text(cell):
    """Everything a code cell showed: stream text and text/plain results."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.model
def test_quickstart_notebook_runs(smollm2_path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    import torchless

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # the notebook is saved clean
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "clear the notebook's outputs before saving"

    # The kernel is a fresh process: give it this process's sys.path (so it imports the torchless
    # under test, from wherever it was installed) and a non-interactive matplotlib backend. The
    # setup cell lives only in memory.
    setup = nbformat.v4.new_code_cell(
        "import sys\n"
        f"sys.path[:0] = [p for p in {sys.path!r} if p not in sys.path]\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import torchless\n"
        "print(torchless.__file__)"
    )
    nb.cells.insert(0, setup)
    # keep the kernel's scratch files out of $HOME
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        failure = str(e)
    if failure is not None:
        pytest.fail(f"a notebook cell failed:\n{failure}", pytrace=False)

    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        errors = [o for o in c.outputs if o.get("output_type") == "error"]
        assert not errors, f"cell raised: {errors[0].get('ename')}: {errors[0].get('evalue')}\n{c.source}"

    assert _text(code[0]).strip() == torchless.__file__, "the kernel imported a different torchless"
    story = next(c for c in code if "llm.stream(" in c.source)
    assert len(_text(story).split()) >= 10, f"the stream cell printed too little: {_text(story)!r}"
    zero_copy = next(c for c in code if "shares_memory" in c.source)
    assert "zero-copy: True" in _text(zero_copy)
    chat = next(c for c in code if "chat_completion" in c.source)
    assert "Paris" in _text(chat)
