"""The Python API: fit returns a Model that predicts on every kind of input, evaluates, draws, saves and exports."""
from __future__ import annotations

import ast
import pydoc
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import tunevision as tv
from tests.conftest import make_class_folders
from tunevision.cli.main import main

PNG_MAGIC = b"\x89PNG"


def tiny(tmp_path: Path, **extra):
    return dict(backbone="tiny_cnn", pretrained=False, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "runs"),
                device="cpu", precision="fp32", quiet=True, **extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("api")
    data = make_class_folders(tmp / "colours", n=12)
    model = tv.fit(data, **tiny(tmp, mode="finetune", epochs=3, lr=0.01, batch_size=8, name="m"))
    return model, data, tmp


def test_fit_returns_a_model_with_what_it_needs(trained) -> None:
    model, _, tmp = trained
    assert isinstance(model, tv.Model) and model.classes == ["blue", "red"]
    assert model.run_dir == tmp / "runs" / "m" and (model.run_dir / "model" / "model.json").is_file()
    assert [r.epoch for r in model.history] == [1, 2, 3] and model.temperature > 0
    assert model.preprocess.image_size == 32 and model.evaluation.accuracy >= 0.75
    assert "tiny_cnn" in repr(model) and "2 classes" in repr(model)


def test_predict_takes_every_kind_of_input_and_agrees_across_them(trained) -> None:
    model, data, _ = trained
    path = sorted((data / "red").glob("*.png"))[0]
    one = model.predict(str(path))
    assert isinstance(one, tv.Prediction) and one.label == "red" and 0.5 < one.prob <= 1
    assert one.top[0] == (one.label, one.prob) and len(one.top) == 2
    pil = Image.open(path).convert("RGB")
    arr = np.array(pil)
    chw = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    preds = model.predict([path, pil, arr, chw, str(data / "blue"), str(data / "nothing-here.png")])
    assert len(preds) == 4 + 12 + 1  # a folder stands for its 12 images; a miss is one entry with an error
    probs = [p.prob for p in preds[:4]]
    assert all(p.label == "red" for p in preds[:4]) and max(probs) - min(probs) < 1e-5
    assert all(p.label == "blue" for p in preds[4:16]) and preds[-1].error and preds[-1].label is None
    glob = model.predict(str(data / "red" / "*.png"))
    assert isinstance(glob, list) and len(glob) == 6
    proba = model.predict_proba([arr, arr])
    assert proba.shape == (2, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_evaluate_is_printable_and_becomes_the_evaluation(trained) -> None:
    model, data, tmp = trained
    split = make_class_folders(tmp / "split", n=6, split=True, seed=3)
    ev = model.evaluate(split)
    assert isinstance(ev, tv.Evaluation) and len(ev.labels) == 4 and model.evaluation is ev
    text = repr(ev)
    assert "accuracy" in text and "precision" in text and "confusion" in text and "validation split" in text
    assert ev.most_confused() == [] or all(a != b for a, b, _ in ev.most_confused())


def test_save_load_and_export_round_trip(trained, tmp_path: Path) -> None:
    model, data, _ = trained
    images = sorted(str(p) for p in (data / "red").glob("*"))[:3]
    before = model.predict_proba(images)
    again = tv.load(model.save(tmp_path / "saved"))
    assert np.allclose(again.predict_proba(images), before, atol=1e-6) and again.classes == model.classes
    from_run = tv.load(model.run_dir)
    assert from_run.history and from_run.evaluation is not None  # the run's own validation scores
    exported = model.export("onnx", tmp_path / "onnx")
    assert exported.path.suffix == ".onnx" and exported.parity.ok
    onnx = tv.load(exported.path)
    assert np.allclose(onnx.predict_proba(images), before, atol=1e-4)


def test_figures_are_matplotlib_figures_that_render_inline(trained) -> None:
    model, data, _ = trained
    image = sorted((data / "red").glob("*.png"))[0]
    figures = [model.plot_confusion(), model.plot_top_losses(3), model.gradcam(image), model.plot_history(),
               model.show_batch(), model.show_batch(data, n=4), tv.preview(image, "strong", size=32, n=4)]
    from matplotlib.figure import Figure
    for fig in figures:
        assert isinstance(fig, Figure) and fig._repr_png_().startswith(PNG_MAGIC)
    title = figures[2].axes[0].get_title()
    assert title.startswith(("red", "blue")) and "p = " in title and len(figures[2].axes) == 2  # + colour bar


def test_lr_find_returns_a_suggestion_and_a_plot(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=8)
    found = tv.lr_find(data, steps=20, **tiny(tmp_path))
    assert 1e-7 <= found.suggestion <= 1 and len(found.lrs) == len(found.losses) > 3
    assert found._repr_png_().startswith(PNG_MAGIC)


def test_fit_accepts_pairs_and_arrays(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=8)
    pairs = [(p, p.parent.name) for p in sorted(data.rglob("*.png")) + sorted(data.rglob("*.jpg"))]
    model = tv.fit(pairs, **tiny(tmp_path, mode="freeze", epochs=5, views=0))
    assert model.classes == ["blue", "red"]
    rng = np.random.default_rng(0)
    x = np.concatenate([np.full((10, 20, 20, 3), (200, 30, 30)), np.full((10, 20, 20, 3), (30, 30, 200))]) + \
        rng.integers(0, 20, (20, 20, 20, 3))
    model = tv.fit((x.astype(np.uint8), ["red"] * 10 + ["blue"] * 10), **tiny(tmp_path, mode="freeze", epochs=5))
    assert model.classes == ["blue", "red"] and model.predict(x[0].astype(np.uint8)).label in ("red", "blue")


def test_fit_accepts_a_dataframe(tmp_path: Path, monkeypatch) -> None:
    """fastai's `from_df`: paths relative to the notebook's working directory, labels as a column, and for
    multi-label data a column of lists."""
    pd = pytest.importorskip("pandas")
    data = make_class_folders(tmp_path / "d", n=8)
    monkeypatch.chdir(tmp_path)
    files = sorted(data.rglob("*.png")) + sorted(data.rglob("*.jpg"))
    frame = pd.DataFrame({"fname": [str(f.relative_to(tmp_path)) for f in files],
                          "label": [f.parent.name for f in files]})
    model = tv.fit(frame, **tiny(tmp_path, mode="freeze", epochs=5, views=0))
    assert model.classes == ["blue", "red"] and model.meta.task == "classify"
    frame["tags"] = [[f.parent.name, "colour"] if i % 2 else [f.parent.name] for i, f in enumerate(files)]
    model = tv.fit(frame[["fname", "tags"]], **tiny(tmp_path, mode="freeze", epochs=5, views=0))
    assert model.classes == ["blue", "colour", "red"] and model.meta.task == "multilabel"
    result = tv.audit(frame[["fname", "label"]], **tiny(tmp_path, mode="freeze"))
    assert result.summary["images"] == len(files)


def test_wrong_options_raise_the_same_line_as_the_cli(tmp_path: Path) -> None:
    with pytest.raises(tv.TunevisionError, match="unknown option 'epoch'; did you mean 'epochs'"):
        tv.fit(tmp_path, epoch=3)
    with pytest.raises(tv.TunevisionError) as api_error:
        tv.fit(tmp_path, epochs=-1)
    r = CliRunner().invoke(main, ["train", str(tmp_path), "--epochs", "-1"])
    assert r.exit_code == 2 and str(api_error.value) in r.output and "got -1" in r.output
    with pytest.raises(tv.TunevisionError, match="mixup is used by --mode finetune or scratch only"):
        tv.fit(tmp_path, mode="auto", mixup=0.2)


def test_unwritable_outputs_are_refused_by_the_api_too(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=4)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(tv.TunevisionError, match="cannot write the run folder"):
        tv.fit(data, **{**tiny(tmp_path), "out": str(blocker / "runs")})
    with pytest.raises(tv.TunevisionError, match="cannot write the cache"):
        tv.fit(data, **{**tiny(tmp_path), "cache_dir": str(blocker / "c")})
    assert not (tmp_path / "runs").exists()


def test_help_documents_every_option() -> None:
    doc = pydoc.render_doc(tv.fit, renderer=pydoc.plaintext)
    for section in (tv.DataConfig, tv.ModelConfig, tv.TrainConfig):
        for name in section.__dataclass_fields__:
            assert name == "data" or f"{name} (default" in doc, name


def test_models_are_never_guessed(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    for args in (["predict", str(tmp_path / "typo"), str(tmp_path / "x.png")], ["serve", str(tmp_path / "typo")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "not a model" in r.output and len(r.output.strip().splitlines()) == 1, args
    with pytest.raises(tv.TunevisionError, match="not a model"):
        tv.load(tmp_path / "typo")


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports between tunevision's modules form no cycle (imports inside functions are lazy)."""
    package = Path(tv.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {node.module.split(".")[0] for node in tree.body
                            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, ()):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(stack + [dep])}"
            if dep not in state:
                visit(dep, stack + [dep])
        state[name] = 2
    for module in graph:
        if module not in state:
            visit(module, [module])


def test_no_module_is_long() -> None:
    long = {p.name: n for p in Path(tv.__file__).parent.glob("*.py") if (n := len(p.read_text().splitlines())) > 360}
    assert not long, long
