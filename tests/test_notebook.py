"""examples/quickstart.ipynb runs headless from top to bottom (nbclient + ipykernel) on the real photos."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SHARED

pytestmark = pytest.mark.integration
NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.skipif(not (SHARED / "hymenoptera").is_dir(), reason="../shared/datasets not present")
def test_quickstart_notebook_runs_without_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HYMENOPTERA", str(SHARED / "hymenoptera"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # runs in tmp_path, so its run folder lands there; a cell error raises CellExecutionError
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # batch, confusion, top losses and Grad-CAM render inline
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "Prediction(label=" in text and "accuracy" in text
    assert list(tmp_path.glob("runs/hymenoptera-auto-*/model/export/model.onnx"))
