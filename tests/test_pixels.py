"""Pictures stored as rows of pixel values in a table (Kaggle's MNIST and Fashion-MNIST CSVs, HAM10000's
hmnist_28_28_RGB.csv), read by content: the split their names give, class names beside them, unlabelled test
tables listed, other tables left to the label-table reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.data.discover import discover, task_name_for_data
from tunevision.data.pixels import pixel_table


def _pictures(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.permutation(np.arange(n) % 3)


def _write(path: Path, images: np.ndarray, labels: np.ndarray | None, header: str = "pixel{}",
           label_last: bool = False) -> Path:
    flat = images.reshape(len(images), -1)
    names = [header.format(i) for i in range(flat.shape[1])]
    rows = [[str(v) for v in row] for row in flat.tolist()]
    if labels is not None:
        names = names + ["label"] if label_last else ["label"] + names
        rows = [r + [str(lab)] if label_last else [str(lab)] + r for r, lab in zip(rows, labels)]
    path.write_text("\n".join(",".join(r) for r in [names] * bool(header) + rows) + "\n")
    return path


def test_fashion_mnist_csvs_are_its_split_with_names_beside(tmp_path):
    train_x, train_y = _pictures(12, (8, 8), 0)
    test_x, test_y = _pictures(6, (8, 8), 1)
    _write(tmp_path / "fashion-mnist_train.csv", train_x, train_y)
    _write(tmp_path / "fashion-mnist_test.csv", test_x, test_y)
    (tmp_path / "classes.txt").write_text("T-shirt/top\nTrouser\nPullover\n")
    for spec in (tmp_path, tmp_path / "fashion-mnist_train.csv"):
        assert task_name_for_data(RunConfig.from_options(str(spec))) == "classify"
    ds = discover(str(tmp_path))
    assert ds.classes == ["T-shirt/top", "Trouser", "Pullover"] and ds.explicit_split
    assert (len(ds.train), len(ds.val)) == (12, 6)
    assert np.array_equal(ds.arrays, np.concatenate([train_x, test_x]))
    assert [s.label for s in ds.train] == train_y.tolist() and [s.label for s in ds.val] == test_y.tolist()
    one = discover(str(tmp_path / "fashion-mnist_train.csv"))  # the table alone: a seeded split of it
    assert len(one.train) + len(one.val) == 12 and not one.explicit_split


def test_kaggle_digits_train_beside_an_unlabelled_test(tmp_path):
    x, y = _pictures(15, (8, 8), 2)
    _write(tmp_path / "train.csv", x, y)
    _write(tmp_path / "test.csv", x[:4], None)
    (tmp_path / "sample_submission.csv").write_text("ImageId,Label\n1,0\n2,0\n")
    ds = discover(str(tmp_path))
    assert ds.classes == ["0", "1", "2"] and len(ds.train) + len(ds.val) == 15 and not ds.explicit_split
    assert [(Path(s.path).name, s.reason) for s in ds.skipped] == [("test.csv", "no label column: not used")]


def test_colour_rows_with_the_label_last_and_a_class_missing(tmp_path):
    """hmnist_28_28_RGB.csv's form: pixel0000..., label; classes no row holds are left out."""
    x, _ = _pictures(9, (8, 8, 3), 3)
    labels = np.array([0, 2, 5] * 3)
    _write(tmp_path / "hmnist_8_8_RGB.csv", x, labels, header="pixel{:04d}", label_last=True)
    ds = discover(str(tmp_path / "hmnist_8_8_RGB.csv"))
    assert ds.classes == ["0", "2", "5"] and ds.arrays.shape == (9, 8, 8, 3)
    assert np.array_equal(ds.arrays, x)
    by_index = {int(s.path.split("#")[1]): s.label for s in ds.train + ds.val}
    assert [ds.classes[by_index[i]] for i in range(9)] == [str(v) for v in labels]


def test_rows_without_a_header_and_fractions_of_255(tmp_path):
    x, y = _pictures(6, (8, 8), 4)
    path = tmp_path / "digits.csv"
    path.write_text("\n".join(",".join([str(lab)] + [f"{v / 255:.6f}" for v in row])
                              for lab, row in zip(y, x.reshape(6, -1).tolist())) + "\n")
    table = pixel_table(path)
    assert table is not None and table.label == 0 and not table.header and table.shape == (8, 8)
    assert np.array_equal(discover(str(path)).arrays, x)


def test_other_tables_are_no_pixel_tables(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\na.jpg,cat\nb.jpg,dog\n")
    (tmp_path / "sizes.csv").write_text("w,h,label\n3,4,cat\n5,6,dog\n")
    wide = tmp_path / "wide.csv"  # 70 numbers a row: no square picture
    wide.write_text(",".join(f"f{i}" for i in range(70)) + "\n" + ",".join("1" * 70) + "\n")
    assert [pixel_table(p) for p in (tmp_path / "labels.csv", tmp_path / "sizes.csv", wide)] == [None] * 3


def test_a_broken_pixel_cell_is_one_line_with_its_row(tmp_path):
    x, y = _pictures(4, (8, 8), 5)
    path = _write(tmp_path / "train.csv", x, y)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ","
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TunevisionError, match=r"train\.csv:4: an empty pixel cell"):
        discover(str(path))


def test_a_model_trained_on_pixel_rows_predicts_an_unlabelled_table(tmp_path):
    """Kaggle's digits: train on train.csv, predict test.csv's rows (each a picture named test.csv#N)."""
    import tunevision as tv
    rng = np.random.default_rng(6)
    labels = np.arange(30) % 2
    x = np.zeros((30, 8, 8), np.uint8)
    x[labels == 1, :, :4] = 220  # class 1: a bright left half
    x = np.clip(x + rng.integers(0, 30, x.shape), 0, 255).astype(np.uint8)
    _write(tmp_path / "train.csv", x, labels)
    _write(tmp_path / "test.csv", x[:6], None)
    model = tv.fit(str(tmp_path / "train.csv"), backbone="tiny_cnn", pretrained=False, epochs=3, device="cpu",
                   cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True, audit=False)
    preds = model.predict(str(tmp_path / "test.csv"), top_k=1)
    assert [p.path for p in preds] == [f"{tmp_path / 'test.csv'}#{k}" for k in range(1, 7)]
    assert all(not p.error and p.label in ("0", "1") for p in preds)
    assert model.predict_proba(str(tmp_path / "test.csv")).shape == (6, 2)
