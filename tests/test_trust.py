"""Nothing tunevision loads runs code, and a crafted or damaged file is one clear line: checkpoints, CIFAR pickles,
MNIST idx files, bundles; a full disk leaves no temp file and the previous version intact."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tunevision as tv
from tunevision.core.atomic import atomic_write
from tunevision.core.errors import TunevisionError


class Payload:
    """Unpickling this runs `touch MARKER`: what a crafted file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, colour_folders: Path) -> None:
    from tunevision.engine.rundir import load_checkpoint
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(TunevisionError, match="unreadable or unsafe checkpoint"):
        load_checkpoint(tmp_path)
    assert not marker.exists()
    torch.save({"model": {}}, tmp_path / "checkpoint.pt")  # safe to load, but not ours
    with pytest.raises(TunevisionError, match="not a tunevision checkpoint"):
        load_checkpoint(tmp_path)


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    from tunevision.data.archives import cifar10_source
    marker = tmp_path / "pwned"
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": Payload(marker)}))
    with pytest.raises(TunevisionError, match="not a CIFAR batch.*refused to load"):
        cifar10_source(str(tmp_path), 0.2, 0)
    assert not marker.exists()


def test_real_cifar_style_batches_still_load(tmp_path: Path) -> None:
    from tunevision.data.archives import cifar10_source
    rng = np.random.default_rng(0)
    names = [f"c{i}".encode() for i in range(10)]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    for name in ("data_batch_1", "test_batch"):
        (tmp_path / name).write_bytes(pickle.dumps({b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                                                    b"labels": [i % 10 for i in range(20)]}))
    ds = cifar10_source(str(tmp_path), 0.2, 0)
    assert ds.arrays.shape == (40, 32, 32, 3) and len(ds.train) == 20 and len(ds.val) == 20


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("damage, fragment", [
    ("cut", "cut short"), ("tiny", "not an idx file"), ("label200", "label 200"), ("count", "200 images but"),
])
def test_damaged_mnist_files_are_one_line(tmp_path: Path, damage: str, fragment: str) -> None:
    from tunevision.data.archives import mnist_source
    images = np.zeros((200, 28, 28), np.uint8)
    labels = np.arange(200) % 10
    _idx(tmp_path / "train-images-idx3-ubyte", images)
    _idx(tmp_path / "train-labels-idx1-ubyte", labels[:150] if damage == "count" else labels)
    target = tmp_path / "train-images-idx3-ubyte"
    if damage == "cut":
        target.write_bytes(target.read_bytes()[:5000])
    elif damage == "tiny":
        target.write_bytes(b"\0\0")
    elif damage == "label200":
        _idx(tmp_path / "train-labels-idx1-ubyte", np.where(np.arange(200) == 7, 200, labels))
    with pytest.raises(TunevisionError, match=fragment):
        mnist_source(str(tmp_path), 0.2, 0)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos")])
def test_a_full_disk_leaves_the_previous_file_and_no_temp_file(tmp_path: Path, failure: Exception) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_text("previous")

    def fills_the_disk(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 1000)
        raise failure
    with pytest.raises(TunevisionError, match="cannot write.*previous version is intact"):
        atomic_write(target, fills_the_disk)
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.safetensors.tmp{int(dead.stdout)}"
    stale.write_bytes(b"half a file")
    live = tmp_path / f".model.safetensors.tmp{os.getppid()}"  # a writer that is still running keeps its file
    live.write_bytes(b"in progress")
    atomic_write(tmp_path / "model.safetensors", lambda p: p.write_bytes(b"new"))
    assert not stale.exists() and live.exists() and (tmp_path / "model.safetensors").read_bytes() == b"new"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tunevision.models.backbones import build_classifier, create_backbone
    from tunevision.models.bundle import BundleMeta, save_bundle
    folder = tmp_path_factory.mktemp("bundle") / "model"
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 2)
    save_bundle(model, BundleMeta("tiny_cnn", ["a", "b"], 32, 36, [0.5] * 3, [0.25] * 3), folder)
    return folder


def _crafted(bundle: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "crafted"
    shutil.copytree(bundle, folder)
    meta = json.loads((folder / "model.json").read_text())
    out = change(meta, folder)
    replaced = isinstance(out, tuple) and out[0] == "replace"  # the change gives a whole new model.json
    (folder / "model.json").write_text(json.dumps(out[1] if replaced else meta))
    return folder


def _weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


CRAFTED = {
    "temperature 0": (lambda m, f: m.update(temperature=0), "temperature must be"),
    "temperature -1": (lambda m, f: m.update(temperature=-1), "temperature must be"),
    "temperature hot": (lambda m, f: m.update(temperature="hot"), "temperature must be"),
    "image_size big": (lambda m, f: m.update(image_size="big"), "image_size must be"),
    "image_size 0": (lambda m, f: m.update(image_size=0), "image_size must be"),
    "image_size -5": (lambda m, f: m.update(image_size=-5), "image_size must be"),
    "image_size 40000": (lambda m, f: m.update(image_size=40000), "image_size must be"),
    "fit stretch": (lambda m, f: m.update(fit="stretch"), "fit must be crop or squash"),
    "classes as text": (lambda m, f: m.update(classes="ab"), "classes must be"),
    "classes missing": (lambda m, f: m.pop("classes"), "no 'classes'"),
    "a list": (lambda m, f: ("replace", [1, 2]), "must hold a JSON object"),
    "detect without spec": (lambda m, f: m.update(task="detect"), "extra.spec"),
    "another architecture": (lambda m, f: m.update(architecture="resnet18"), "do not fit the architecture"),
    "three classes": (lambda m, f: m.update(classes=["a", "b", "c"]), "do not fit the architecture"),
    "missing tensor": (lambda m, f: _weights(f, lambda s: s.pop("head.bias")), "no tensor 'head.bias'"),
    "wrong shape": (lambda m, f: _weights(f, lambda s: s.update({"head.bias": torch.zeros(5)})), "head.bias"),
    "NaN weights": (lambda m, f: _weights(f, lambda s: s["head.weight"].fill_(float("nan"))), "NaN"),
    "int64 weights": (lambda m, f: _weights(f, lambda s: s.update({"head.weight": s["head.weight"].long()})),
                      "int64"),
    "garbage weights": (lambda m, f: (f / "model.safetensors").write_bytes(os.urandom(300)), "unreadable weights"),
    "empty weights": (lambda m, f: (f / "model.safetensors").write_bytes(b""), "unreadable weights"),
    "huge header": (lambda m, f: (f / "model.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}"),
                    "unreadable weights"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_bundle_is_one_line_never_a_wrong_answer(bundle: Path, tmp_path: Path, case: str) -> None:
    change, fragment = CRAFTED[case]
    folder = _crafted(bundle, tmp_path, change)
    with pytest.raises(TunevisionError, match=fragment):
        tv.load(str(folder), device="cpu")


def test_the_untouched_bundle_loads(bundle: Path) -> None:
    model = tv.load(str(bundle), device="cpu")
    assert model.classes == ["a", "b"]


def test_evaluate_on_the_training_folder_never_scores_a_training_image_after_files_change(
        tmp_path: Path, colour_folders: Path) -> None:
    import csv
    model = tv.fit(str(colour_folders), backbone="tiny_cnn", pretrained=False, epochs=1, device="cpu",
                   cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "runs"), quiet=True)
    split = list(csv.DictReader(open(model.run_dir / "split.csv")))
    train = {Path(r["path"]).name for r in split if r["split"] == "train"}
    val = [r["path"] for r in split if r["split"] == "val"]
    Path(val[0]).unlink()  # the folder changes after training: a re-drawn split would now differ
    Path(val[1]).unlink()
    from tests.conftest import make_image
    make_image((0, 0, 255), np.random.default_rng(5)).save(colour_folders / "blue" / "new_blue.png")
    ev = tv.load(str(model.run_dir), device="cpu").evaluate(str(colour_folders))
    scored = {Path(p).name for p in ev.paths}
    assert scored and not scored & train
    assert scored == {Path(p).name for p in val[2:]} | {"new_blue.png"}


def test_evaluate_on_a_detectors_training_folder_scores_only_images_that_did_not_train_it(tmp_path: Path) -> None:
    import csv
    from tests.scenes import write_voc
    data = write_voc(tmp_path / "v", n=8)
    model = tv.fit(str(data), epochs=1, image_size=64, pretrained=False, val_fraction=0.25, device="cpu",
                   out=str(tmp_path / "runs"), quiet=True)
    split = list(csv.DictReader(open(model.run_dir / "split.csv")))
    val = [r["path"] for r in split if r["split"] == "val"]
    from tunevision.scene.evaluate import evaluation_items
    (data / "annotations" / f"{Path(val[0]).stem}.xml").unlink()
    items, _ = evaluation_items(model.meta, str(data))
    assert [str(it.image) for it in items] == val[1:]


@pytest.mark.parametrize("data, fragment", [
    (["a.jpg", "b.jpg"], "list of \\(path, label\\) pairs"), ((1, 2, 3), "list of \\(path, label\\) pairs"),
    (42, "list of \\(path, label\\) pairs"),
    ((np.zeros((4, 3, 8, 8), np.uint8), ["a", "b", "a", "b"]), "channels first"),
    ((np.zeros((0, 8, 8), np.uint8), []), "uint8 array"),
])
def test_fit_refuses_data_it_cannot_read_with_the_forms_it_takes(tmp_path: Path, data, fragment: str) -> None:
    with pytest.raises(TunevisionError, match=fragment):
        tv.fit(data, cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True)


def test_api_misuse_is_a_tunevision_error_that_says_the_fix(tmp_path: Path, tiny_bundle: Path) -> None:
    (tmp_path / "fake.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(TunevisionError, match="not a readable ONNX model"):
        tv.load(str(tmp_path / "fake.onnx"))
    model = tv.load(str(tiny_bundle), device="cpu")
    (tmp_path / "taken.jpg").write_bytes(b"x")
    with pytest.raises(TunevisionError, match="a file, not a folder"):
        model.save(tmp_path / "taken.jpg")
    for bad, fragment in [(np.zeros((0, 0, 3), np.uint8), "empty image"), (np.full((8, 8, 3), np.nan), "NaN"),
                          (torch.zeros(3, 8, 8, dtype=torch.complex64), "real numbers")]:
        with pytest.raises(TunevisionError, match=fragment):
            model.predict(bad)
    with pytest.raises(TunevisionError, match="top_k must be an integer >= 1"):
        model.predict(np.zeros((8, 8, 3), np.uint8), top_k=0)
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    with pytest.raises(TunevisionError, match="cut.jpg.*predict\\(\\) flags"):
        model.predict_proba([str(tmp_path / "cut.jpg")])
    with pytest.raises(TunevisionError, match="unknown_classes must be"):
        model.evaluate(str(tmp_path), unknown_classes="bogus")


def test_a_class_with_one_image_is_warned_about_on_the_console_and_in_the_report(tmp_path: Path,
                                                                               colour_folders: Path) -> None:
    from click.testing import CliRunner
    from tests.conftest import make_image, tiny_args
    from tunevision.cli.main import main
    (colour_folders / "green").mkdir()
    make_image((0, 200, 0), np.random.default_rng(1)).save(colour_folders / "green" / "only.png")
    r = CliRunner().invoke(main, ["train", str(colour_folders), "--epochs", "1",
                                  *tiny_args(str(tmp_path / "c"), tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert "warning: class 'green' has 1 image" in r.output
    assert "Too thin to score: green" in next((tmp_path / "runs").glob("*/report.html")).read_text()


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path: Path) -> None:
    from tunevision.core.config import RunConfig
    (tmp_path / "c.yaml").write_text("train:\n  epochs: [1, 2\n  mode: auto\n")
    with pytest.raises(TunevisionError) as e:
        RunConfig.load(tmp_path / "c.yaml")
    assert "\n" not in str(e.value) and "not valid YAML at line" in str(e.value)


def test_an_image_replaced_with_the_same_size_and_mtime_is_decoded_again(tmp_path: Path) -> None:
    from tunevision.data.sources import Sample, cache_key
    path = tmp_path / "a.bmp"
    from PIL import Image
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    before = cache_key([Sample(str(path), 0)], 32, None)
    st = path.stat()
    replacement = tmp_path / "b.bmp"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(replacement)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert replacement.stat().st_size == st.st_size
    os.replace(replacement, path)
    assert cache_key([Sample(str(path), 0)], 32, None) != before
