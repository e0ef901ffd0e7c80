from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_class_folders
from tunevision.data.sources import load_images
from tunevision.core.errors import TunevisionError
from tunevision.data.discover import discover


def test_split_folders_are_used_as_given(tmp_path: Path) -> None:
    ds = discover(str(make_class_folders(tmp_path / "d", n=9, split=True)))
    assert ds.classes == ["blue", "red"] and ds.explicit_split
    assert len(ds.train) == 12 and len(ds.val) == 6
    assert all("/val/" in s.path for s in ds.val)


def test_auto_split_is_stratified_seeded_and_sorted(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", n=10, classes=("red", "green", "blue"))
    a, b = discover(str(root), seed=1), discover(str(root), seed=1)
    assert a.classes == ["blue", "green", "red"]  # sorted, whatever the filesystem order
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert {s.label for s in a.val} == {0, 1, 2} and len(a.val) == 6
    assert [s.path for s in discover(str(root), seed=2).val] != [s.path for s in a.val]


def test_csv_labels(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", n=6)
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(root.rglob("*.*"))]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    ds = discover(str(tmp_path / "labels.csv"))
    assert ds.classes == ["blue", "red"] and len(ds.train) + len(ds.val) == 12
    assert all(Path(s.path).is_file() for s in ds.train)


def test_single_class_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    from tunevision.core.config import DataConfig, RunConfig, TrainConfig
    from tunevision.models.backbones import create_backbone
    from tunevision.classify.prepare import prepare_data
    from tunevision.core.ui import RunLog
    root = make_class_folders(tmp_path / "one", n=5, classes=("red",))
    cfg = RunConfig(data=DataConfig(data=str(root), cache_dir=""), train=TrainConfig())
    with pytest.raises(TunevisionError, match="at least 2"):
        prepare_data(cfg, create_backbone("tiny_cnn", pretrained=False), RunLog(quiet=True))
    with pytest.raises(TunevisionError, match="no such folder"):
        discover(str(tmp_path / "nope"))


def test_empty_validation_split_is_a_clear_error(tmp_path: Path) -> None:
    from tunevision.core.config import DataConfig, RunConfig
    from tunevision.models.backbones import create_backbone
    from tunevision.classify.prepare import prepare_data
    from tunevision.core.ui import RunLog
    root = make_class_folders(tmp_path / "d", n=6, split=True)
    for p in (root / "val").rglob("*.*"):
        p.unlink()
    (root / "val" / "red" / "broken.jpg").write_bytes(b"garbage")
    cfg = RunConfig(data=DataConfig(data=str(root), cache_dir=""))
    with pytest.raises(TunevisionError, match="validation split is empty"):
        prepare_data(cfg, create_backbone("tiny_cnn", pretrained=False), RunLog(quiet=True))


def test_image_cache_is_reused_and_keyed_by_size(tmp_path: Path, monkeypatch) -> None:
    from tunevision.data import sources

    ds = discover(str(make_class_folders(tmp_path / "d", n=4)))
    a, _ = load_images(ds.train, 16, cache_dir=tmp_path / "c")
    monkeypatch.setattr(sources, "decode_square", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    b, _ = load_images(ds.train, 16, cache_dir=tmp_path / "c")
    assert isinstance(b, np.memmap) and np.array_equal(a, b)
    monkeypatch.undo()
    c, _ = load_images(ds.train, 24, cache_dir=tmp_path / "c")
    assert c.shape[1] == 24 and len(list((tmp_path / "c" / "images").glob("*.npy"))) == 2


def test_images_are_decoded_into_the_cache_file_whole_and_read_only(tmp_path: Path) -> None:
    ds = discover(str(make_class_folders(tmp_path / "d", n=4)))
    a, _ = load_images(ds.train, 16, cache_dir=tmp_path / "c")
    direct, _ = load_images(ds.train, 16, cache_dir=None)
    assert np.array_equal(a, direct)
    assert not a.flags.writeable  # a memory-mapped cache file: a caller writing into it would change the cache
    assert not [p for p in (tmp_path / "c" / "images").iterdir() if ".tmp" in p.name]
    assert sorted(p.suffix for p in (tmp_path / "c" / "images").iterdir()) == [".json", ".npy"]


def test_a_cache_folder_that_cannot_hold_the_file_costs_speed_not_the_run(tmp_path: Path) -> None:
    ds = discover(str(make_class_folders(tmp_path / "d", n=4)))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    a, bad = load_images(ds.train, 16, cache_dir=blocked)
    assert a.shape == (len(ds.train), 16, 16, 3) and bad == []


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (50, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(50) % 10)
    ds = discover(f"mnist:{tmp_path}")
    assert ds.classes == [str(i) for i in range(10)] and len(ds.train) + len(ds.val) == 50
    images, bad = load_images(ds.val, 32, cache_dir=None, arrays=ds.arrays)
    assert images.shape == (len(ds.val), 32, 32, 3) and not bad
    # the folder alone, read by its files' names: the same data and split as the prefix gives
    plain = discover(str(tmp_path))
    assert plain.classes == ds.classes and plain.train == ds.train and np.array_equal(plain.arrays, ds.arrays)


def test_mnist_as_kaggle_and_fashion_mnist_ship_it(tmp_path: Path) -> None:
    """Kaggle's copy names its files `train-images.idx3-ubyte` (a dot) inside a folder of its own; Fashion-MNIST is
    MNIST's format with a classes.txt beside it; EMNIST's letters hold more than ten classes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fashion" / "fashion"
    root.mkdir(parents=True)
    (tmp_path / "fashion" / "fashion" / "extra").mkdir()  # so the wrapper holds a folder that holds folders
    for part, n in (("train", 40), ("test", 20)):
        _write_idx(root / f"{part}-images.idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(root / f"{part}-labels.idx1-ubyte.gz", np.arange(n) % 12)
    (root / "classes.txt").write_text("\n".join(f"item{i}" for i in range(12)) + "\n")
    ds = discover(str(tmp_path / "fashion"))
    assert ds.classes == [f"item{i}" for i in range(12)] and (len(ds.train), len(ds.val)) == (40, 20)
    (root / "classes.txt").unlink()
    assert discover(str(tmp_path / "fashion")).classes == [str(i) for i in range(12)]


def test_cifar10_pickles_with_the_real_keys(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 20, b"num_vis": 3072}, f)
    for name in ("data_batch_1", "test_batch"):
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": list(range(10)) * 2,
                         b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                         b"filenames": [b"x.png"] * 20}, f)
    ds = discover(f"cifar10:{tmp_path}")
    assert ds.classes[0] == "airplane" and len(ds.train) == 20 and len(ds.val) == 20 and ds.explicit_split
    for plain in (tmp_path, root):  # the folder that holds the batches' folder, or the batches' folder itself
        assert discover(str(plain)).classes == ds.classes and discover(str(plain)).train == ds.train
    images, _ = load_images(ds.train[:2], 32, cache_dir=None, arrays=ds.arrays)
    assert np.array_equal(images[0], ds.arrays[0])  # 32 -> 32: pixels unchanged, channels last


def test_cifar100_pickles_and_cifar10_binary(tmp_path: Path) -> None:
    """CIFAR-100's python archive (meta, train, test with fine labels) and CIFAR-10's binary version."""
    import pickle
    rng = np.random.default_rng(0)
    root = tmp_path / "c100" / "cifar-100-python"
    root.mkdir(parents=True)
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"k{i}".encode() for i in range(100)]}))
    for name, n in (("train", 200), ("test", 100)):
        (root / name).write_bytes(pickle.dumps({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                                                b"fine_labels": [i % 100 for i in range(n)],
                                                b"coarse_labels": [i % 20 for i in range(n)]}))
    ds = discover(str(tmp_path / "c100"))
    assert len(ds.classes) == 100 and ds.classes[7] == "k7" and (len(ds.train), len(ds.val)) == (200, 100)
    assert ds.arrays.shape == (300, 32, 32, 3) and "CIFAR-100" in ds.layout
    binary = tmp_path / "cifar-10-batches-bin"
    binary.mkdir()
    (binary / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    for name, n in (("data_batch_1.bin", 30), ("test_batch.bin", 10)):
        records = np.concatenate([(np.arange(n) % 10)[:, None], rng.integers(0, 255, (n, 3072))], 1)
        records.astype(np.uint8).tofile(binary / name)
    ds = discover(str(tmp_path))
    assert ds.classes == [f"c{i}" for i in range(10)] and (len(ds.train), len(ds.val)) == (30, 10)
    assert [ds.train[i].label for i in range(3)] == [0, 1, 2]
