from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from tests.conftest import tiny_args
from tunevision.report import plots
from tunevision.cli.main import main


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    fig = plots.class_counts({"train": {"a": 5, "b": 3}, "val": {"a": 2, "b": 1}}, tmp_path / "c.png")
    assert Image.open(tmp_path / "c.png").size == tuple(int(v) for v in fig.get_size_inches() * fig.dpi)
    plots.image_grid([np.zeros((8, 8, 3), np.uint8)] * 3, ["x"] * 3, tmp_path / "g.png", columns=2)
    assert Image.open(tmp_path / "g.png").size == (440, 480)
    plots.training_curves(np.arange(1, 4), {k: np.random.rand(3) for k in
                                            ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds")},
                          tmp_path / "t.png")
    assert Image.open(tmp_path / "t.png").size == (1000, 600)


def test_confusion_figure_holds_the_matrix(tmp_path: Path) -> None:
    cm = np.array([[5, 1], [2, 7]])
    fig = plots.confusion_heatmaps(cm, ["a", "b"], tmp_path / "cm.png")
    assert np.array_equal(fig.axes[0].images[0].get_array(), cm)
    assert np.allclose(fig.axes[2].images[0].get_array(), cm / cm.sum(1, keepdims=True))
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_training_writes_a_report_with_every_section(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["train", str(colour_folders), *tiny_args(cache, tmp_path / "runs", "--mode",
                                  "finetune", "--epochs", "2", "--name", "rep")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "rep"
    page = (run / "report.html").read_text()
    for section in ("dataset", "augmentation", "training", "results", "top-losses", "calibration", "model"):
        assert f'id="{section}"' in page, section
    # charts as PNG, the grids of photos (samples, augmentation, top losses) as JPEG, all inside the page
    assert page.count("data:image/png;base64,") == 4 and page.count("data:image/jpeg;base64,") == 3
    assert "http" not in page.replace("http-equiv", "")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ece_after"] <= summary["ece_before"] + 1e-6
    assert json.loads((run / "model" / "model.json").read_text())["temperature"] == summary["temperature"]
    img = next((colour_folders / "red").glob("*.png"))
    r = CliRunner().invoke(main, ["gradcam", str(run), str(img), "--class", "red", "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 0 and Image.open(tmp_path / "g.png").size[0] > 32  # the image, title and colour scale


def test_a_run_on_arrays_shows_its_pictures(tmp_path: Path) -> None:
    """Samples, augmentation and top losses of data held in arrays (MNIST's files, CIFAR's batches, a table of
    pixel rows, tv.fit((images, labels))): the report read the files their `NAME#i` paths are not, and drew blank
    grids."""
    import tunevision as tv
    rng = np.random.default_rng(0)
    labels = np.array(["dark", "light"] * 12)
    images = np.where(labels[:, None, None, None] == "light", 200, 40).astype(np.uint8) + \
        rng.integers(0, 40, (24, 20, 20, 3), dtype=np.uint8)
    model = tv.fit((images, labels), backbone="tiny_cnn", pretrained=False, epochs=2, device="cpu", audit=False,
                   cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True)
    report = Path(model.run_dir) / "report"
    for name in ("samples.jpg", "augmentation.jpg", "top_losses.jpg"):
        pixels = np.asarray(Image.open(report / name).convert("L"), np.float32)
        assert pixels.std() > 10, name  # pictures, not an empty white grid
