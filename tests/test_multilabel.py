"""Multi-label classification end to end on tiny synthetic scenes (a red left half, a blue right half, both or
neither): every CSV dialect, every training mode, thresholds in the bundle, predict, evaluate, export, serve,
resume, and the bad inputs. tiny_cnn keeps each run to seconds."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tunevision as tv
from tests.conftest import tiny_args
from tunevision.cli.main import main
from tunevision.core.errors import TunevisionError
from tunevision.data.tables import read_label_table

LABELS = ("red", "blue")


def scene(labels: list[str], rng: np.random.Generator) -> Image.Image:
    im = np.full((40, 48, 3), 90, np.uint8) + rng.integers(0, 30, (40, 48, 3), dtype=np.uint8)
    if "red" in labels:
        im[:, :24] = (220, 30, 30)
    if "blue" in labels:
        im[:, 24:] = (30, 30, 220)
    return Image.fromarray(im)


def write_scenes(root: Path, n: int = 48, seed: int = 0, images_dir: str = "images") -> list[list[str]]:
    rng = np.random.default_rng(seed)
    (root / images_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        labels = [("red", "blue"), ("red",), ("blue",), ()][i % 4]
        scene(list(labels), rng).save(root / images_dir / f"{i}.png")
        rows.append(list(labels))
    return rows


def write_csv(root: Path, rows: list[list[str]], style: str) -> Path:
    path = root / "labels.csv"
    if style == "quoted":
        text = "Filenames,labels\n" + "".join(f'{i}.png,"{",".join(r)}"\n' for i, r in enumerate(rows))
    elif style == "space":  # Kaggle planet: image_name,tags with space-separated tags
        text = "image_name,tags\n" + "".join(f"{i}.png,{' '.join(r)}\n" for i, r in enumerate(rows))
    elif style in ("semicolon", "pipe"):
        sep = ";" if style == "semicolon" else "|"
        text = "path,labels\n" + "".join(f"images/{i}.png,{sep.join(r)}\n" for i, r in enumerate(rows))
    elif style == "pylist":  # a pandas column of lists, written as Python prints them
        text = "file,labels\n" + "".join(f'{i}.png,"{r}"\n' for i, r in enumerate(rows))
    elif style == "plusminus":  # PASCAL VOC's classification lists: 1 present, -1 absent
        text = "image,red,blue\n" + "".join(f"{i}.png,{1 if 'red' in r else -1},{1 if 'blue' in r else -1}\n"
                                             for i, r in enumerate(rows))
    else:  # one-hot
        text = "Filenames,red,blue\n" + "".join(f"{i}.png,{int('red' in r)},{int('blue' in r)}\n"
                                                for i, r in enumerate(rows))
    path.write_text(text)
    return path


@pytest.mark.parametrize("style", ["quoted", "space", "semicolon", "pipe", "onehot", "pylist", "plusminus"])
def test_every_label_table_dialect_reads_the_same_labels(tmp_path: Path, style: str) -> None:
    rows = write_scenes(tmp_path)
    table = read_label_table(write_csv(tmp_path, rows, style))
    assert table.multilabel and sorted(table.names) == ["blue", "red"]
    assert [sorted(ls) for ls in table.labels] == [sorted(r) for r in rows]
    assert all(Path(p).is_file() for p in table.paths)  # relative to the CSV, or to images/ beside it


def test_images_dir_and_split_column_are_honoured(tmp_path: Path) -> None:
    rows = write_scenes(tmp_path / "elsewhere", images_dir="pics")
    (tmp_path / "t.csv").write_text("file;tags;fold\n" + "".join(
        f"{i}.png;{'|'.join(r)};{'val' if i % 5 == 0 else 'train'}\n" for i, r in enumerate(rows)))
    table = read_label_table(tmp_path / "t.csv", images=str(tmp_path / "elsewhere" / "pics"))
    assert table.multilabel and all(Path(p).is_file() for p in table.paths)
    assert table.splits.count("val") == 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ml")
    rows = write_scenes(root / "data")
    csv_path = write_csv(root / "data", rows, "quoted")
    r = CliRunner().invoke(main, ["train", str(csv_path), "--epochs", "30", "--lr", "0.01",
                                  *tiny_args(str(root / "cache"), root / "runs")])
    assert r.exit_code == 0, r.output
    return root, csv_path, next((root / "runs").iterdir()), r.output


def test_the_task_is_found_from_the_data_and_trains_with_per_label_thresholds(trained) -> None:
    root, _, run, output = trained
    assert "val mAP" in output and "threshold" in output
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["task"] == "multilabel" and len(meta["extra"]["thresholds"]) == 2
    assert meta["fit"] == "squash" and "whole photo" in meta["preprocessing"]  # --resize auto, for labels anywhere
    assert len(meta["extra"]["temperatures"]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_val_map"] > 0.6 and {"micro_f1", "macro_f1", "exact_match", "hamming_loss"} <= set(summary)
    page = (run / "report.html").read_text()
    assert "precision-recall per label" in page and "co-occurrence" in page


def test_the_bundle_predicts_what_the_run_scored(trained) -> None:
    """predict reads the squash from the bundle: its probabilities are the run's own validation scores."""
    import csv
    _, _, run, _ = trained
    rows = list(csv.DictReader(open(run / "eval" / "predictions.csv")))
    model = tv.load(str(run), device="cpu")
    probs = model.predict_proba([r["path"] for r in rows])
    scored = np.array([[float(r[f"p_{c}"]) for c in model.classes] for r in rows])
    assert np.abs(probs - scored).max() < 2e-3


def test_squash_keeps_what_a_centre_crop_cuts_off() -> None:
    from tunevision.data.images import square
    im = np.full((40, 120, 3), 128, np.uint8)
    im[:, :20] = (255, 0, 0)  # a red strip at the left edge, outside the centre square
    crop, squash = square(Image.fromarray(im), 32, "crop"), square(Image.fromarray(im), 32, "squash")
    assert crop[:, :, 0].max() < 140 and squash[:, :3, 0].min() > 240 and squash.shape == crop.shape == (32, 32, 3)


def test_predict_gives_labels_above_thresholds_and_probabilities(trained) -> None:
    root, _, run, _ = trained
    model = tv.load(str(run), device="cpu")
    image = root / "data" / "images" / "0.png"
    pred = model.predict(str(image))
    assert set(pred.probs) == {"red", "blue"} and pred.labels == [c for c in pred.probs
                                                                   if pred.probs[c] >= model.meta.thresholds[
                                                                       model.classes.index(c)]]
    assert model.predict(str(image), threshold=0.0).labels and model.predict(str(image), threshold=1.0).labels == []
    probs = model.predict_proba([str(root / "data" / "images" / f"{i}.png") for i in range(4)])
    assert probs.shape == (4, 2) and not np.allclose(probs.sum(1), 1)
    r = CliRunner().invoke(main, ["predict", str(run), str(image), "--json", "--threshold", "0.01"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["labels"]


def test_evaluate_on_another_csv_and_unknown_labels(trained, tmp_path: Path) -> None:
    root, _, run, _ = trained
    rows = write_scenes(tmp_path, n=8, seed=3)
    rows[0] = ["red", "green"]
    (tmp_path / "other.csv").write_text("path,labels\n" + "".join(f'images/{i}.png,"{",".join(r)}"\n'
                                                                  for i, r in enumerate(rows)))
    r = CliRunner().invoke(main, ["evaluate", str(run), str(tmp_path / "other.csv"), "--device", "cpu"])
    assert r.exit_code == 2 and "green" in r.output
    r = CliRunner().invoke(main, ["evaluate", str(run), str(tmp_path / "other.csv"), "--device", "cpu",
                                  "--unknown-classes", "skip"])
    assert r.exit_code == 0, r.output
    assert "8 images, mAP" in r.output


def test_export_matches_pytorch_on_the_sigmoid_outputs(trained, tmp_path: Path) -> None:
    _, _, run, _ = trained
    exported = tv.load(str(run), device="cpu").export("onnx", tmp_path / "x")
    assert exported.parity.ok
    onnx_model = tv.load(str(exported.path))
    assert onnx_model.predict_proba(np.zeros((40, 48, 3), np.uint8)).shape == (1, 2)


def test_serve_answers_with_a_labels_list(trained) -> None:
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient

    from tunevision.serve.app import create_app
    root, _, run, _ = trained
    buf = io.BytesIO()
    scene(["red"], np.random.default_rng(9)).save(buf, "PNG")
    with TestClient(create_app(str(run))) as client:
        answer = client.post("/predict", files={"file": ("a.png", buf.getvalue(), "image/png")}).json()
    prediction = answer["predictions"][0]
    assert isinstance(prediction["labels"], list) and set(prediction["probs"]) == {"red", "blue"}


@pytest.mark.parametrize("mode, extra", [("freeze", []), ("finetune", ["--mixup", "0.2"]), ("partial", ["--top-stages", "1"]),
                                         ("auto", ["--time-budget", "20s"])])
def test_every_training_mode_trains_a_multilabel_model(tmp_path: Path, mode: str, extra: list[str]) -> None:
    rows = write_scenes(tmp_path / "d", n=24)
    csv_path = write_csv(tmp_path / "d", rows, "onehot")
    r = CliRunner().invoke(main, ["train", str(csv_path), "--mode", mode, "--epochs", "2", *extra,
                                  *tiny_args(str(tmp_path / "c"), tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert "final_val_map" in summary and summary["mode"] == mode


def test_a_killed_multilabel_run_resumes(tmp_path: Path, monkeypatch) -> None:
    import tunevision.classify.loops as loops
    rows = write_scenes(tmp_path / "d", n=24)
    csv_path = write_csv(tmp_path / "d", rows, "semicolon")
    real, calls = loops.train_one_epoch, []

    def dies_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(loops, "train_one_epoch", dies_in_epoch_two)
    args = ["train", str(csv_path), "--mode", "finetune", "--epochs", "3", "--freeze-epochs", "0",
            *tiny_args(str(tmp_path / "c"), tmp_path / "runs")]
    CliRunner().invoke(main, args)
    run = next((tmp_path / "runs").iterdir())
    assert (run / "checkpoint.pt").is_file()
    r = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert r.exit_code == 0, r.output
    assert len((run / "metrics.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("content, fragment", [
    ("Filenames,red,blue\n0.png,1,0\n1.png,2,0\n2.png,0,1\n", "labels.csv:3: column 'red' holds '2'"),
    ("path,labels,split\n0.png,\"red,blue\",train\n1.png,red,train\n2.png,\"blue,green\",val\n3.png,blue,train\n",
     "label 'green' appears only in validation"),
])
def test_bad_label_tables_are_one_line(tmp_path: Path, content: str, fragment: str) -> None:
    write_scenes(tmp_path, n=4)
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(TunevisionError, match=fragment):
        tv.fit(str(tmp_path / "labels.csv"), backbone="tiny_cnn", pretrained=False, epochs=1, device="cpu",
               cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True)


def test_a_row_with_no_labels_is_a_valid_none_of_these_image(tmp_path: Path) -> None:
    rows = write_scenes(tmp_path)
    table = read_label_table(write_csv(tmp_path, rows, "quoted"))
    assert sum(1 for ls in table.labels if not ls) == 12 and not table.problems


def test_kaggle_planet_layout_with_extensionless_names_in_a_sibling_folder(tmp_path: Path) -> None:
    (tmp_path / "train-jpg").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "train-jpg" / f"train_{i}.jpg")
    (tmp_path / "train_v2.csv").write_text("image_name,tags\ntrain_0,haze primary\ntrain_1,clear primary water\n"
                                           "train_2,cloudy\n")
    table = read_label_table(tmp_path / "train_v2.csv")
    assert table.multilabel and table.labels[1] == ["clear", "primary", "water"]
    assert table.paths[0] == str(tmp_path / "train-jpg" / "train_0.jpg")


def test_metrics_json_holds_no_nan_for_a_label_without_positives(tmp_path: Path) -> None:
    from tunevision.classify.multilabel import MultiLabelEvaluation
    ev = MultiLabelEvaluation(["sea", "snow"], np.array([[1, 0], [0, 0], [1, 0]], float),
                              np.array([[0.9, 0.2], [0.1, 0.1], [0.8, 0.3]]), ["a", "b", "c"], np.array([0.5, 0.5]))
    ev.write(tmp_path)

    def refuse(constant: str):
        raise ValueError(f"{constant} in metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert [r["ap"] for r in metrics["per_label"]] == [1.0, None] and metrics["final_val_map"] == 1.0


def test_a_row_per_label_is_joined_per_image(tmp_path: Path) -> None:
    """Open Images' long form (`ImageID,LabelName,Confidence`, ids without an extension): an image's rows are its
    labels. A single-label table with one image in two hundred labelled twice stays single-label, that image's
    first label kept and the other listed; a row given twice alike is one image."""
    (tmp_path / "images").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{i:04x}.jpg")
    (tmp_path / "labels.csv").write_text("ImageID,LabelName,Confidence\n0000,sea,1\n0001,sea,1\n0001,sunset,1\n"
                                         "0002,trees,1\n0003,sea,1\n0003,trees,1\n0003,sunset,1\n")
    table = read_label_table(tmp_path / "labels.csv")
    assert table.multilabel and table.names == ["sea", "sunset", "trees"] and "a row per label" in table.layout
    assert [Path(p).name for p in table.paths] == ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg"]
    assert table.labels == [["sea"], ["sea", "sunset"], ["trees"], ["sea", "trees", "sunset"]]

    # Open Images as it ships: a Source column, labels as MIDs named in class-descriptions.csv, Confidence 0 for a
    # label verified absent
    (tmp_path / "oi").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "oi" / f"{i:04x}.jpg")
    (tmp_path / "oi" / "class-descriptions.csv").write_text('/m/06mf6,Rabbit\n/m/0c9ph5,Flower\n"/m/01yrx","Cat"\n')
    (tmp_path / "oi" / "labels.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n0000,verification,/m/06mf6,1\n0000,verification,/m/0c9ph5,0\n"
        "0001,crowdsource-verification,/m/0c9ph5,1\n0001,verification,/m/01yrx,1\n0002,verification,/m/01yrx,1\n")
    from tunevision.data.discover import discover
    ds = discover(str(tmp_path / "oi" / "labels.csv"))
    assert ds.multilabel and sorted(ds.classes) == ["Cat", "Flower", "Rabbit"]
    given = {Path(s.path).stem: sorted(ds.classes[j] for j in s.labels) for s in ds.train + ds.val}
    assert given == {"0000": ["Rabbit"], "0001": ["Cat", "Flower"], "0002": ["Cat"]}

    (tmp_path / "images" / "image_0001.jpg").write_bytes((tmp_path / "images" / "0000.jpg").read_bytes())
    (tmp_path / "bare.csv").write_text("image_0001,sea\n0000,sunset\n")  # no header: its first row is an image
    assert [Path(p).name for p in read_label_table(tmp_path / "bare.csv").paths] == ["image_0001.jpg", "0000.jpg"]

    (tmp_path / "votes.csv").write_text("image,annotator,label\n0000.jpg,a,sea\n0000.jpg,b,sea\n0000.jpg,c,trees\n"
                                        "0001.jpg,a,trees\n0001.jpg,b,trees\n0002.jpg,a,sunset\n")
    table = read_label_table(tmp_path / "votes.csv")  # three annotators: each image's most common label
    assert not table.multilabel and table.labels == [["sea"], ["trees"], ["sunset"]] and "votes" in table.layout

    rows = [f"{i}.jpg,{'cat' if i % 2 else 'dog'}" for i in range(200)] + ["7.jpg,dog", "8.jpg,dog"]
    (tmp_path / "pets.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    table = read_label_table(tmp_path / "pets.csv")
    assert not table.multilabel and len(table.paths) == 200 and table.names == ["cat", "dog"]
    assert table.labels[7] == ["cat"] and table.labels[8] == ["dog"]
    why = "labelled cat and dog by the table's rows: cat kept"
    assert [(Path(p).name, reason) for p, reason in table.problems] == [("7.jpg", why)]


def test_stage_features_equal_the_plain_body_on_their_last_columns() -> None:
    import torch

    from tunevision.models.backbones import create_backbone
    plain = create_backbone("efficientnet_lite0", pretrained=False)
    staged = create_backbone("efficientnet_lite0+stages", pretrained=False)
    staged.body.load_state_dict(plain.body.state_dict(), strict=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out, last = staged.body.eval()(x), plain.body.eval()(x)
    assert staged.num_features == out.shape[1] == 1984 and torch.allclose(out[:, -1280:], last, atol=1e-5)
    with pytest.raises(TunevisionError, match="stage features need"):
        create_backbone("tiny_cnn+stages", pretrained=False)


def test_multilabel_heads_read_stage_features_through_bundle_and_export(tmp_path: Path) -> None:
    rows = write_scenes(tmp_path / "data", n=24)
    csv_path = write_csv(tmp_path / "data", rows, "quoted")
    args = ["train", str(csv_path), "--backbone", "efficientnet_lite0", "--no-pretrained", "--image-size", "32",
            "--epochs", "3", "--views", "0", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
            "--precision", "fp32"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "model" / "model.json").read_text())["architecture"] == "efficientnet_lite0+stages"
    model = tv.load(str(run), device="cpu")
    assert model.network.head.in_features == 1984
    assert model.export("onnx", tmp_path / "x").parity.ok
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "last"), "--features", "last"])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "last").iterdir())
    assert json.loads((run / "model" / "model.json").read_text())["architecture"] == "efficientnet_lite0"


def test_table_paths_from_windows_other_machines_and_split_folders(tmp_path: Path) -> None:
    """HAM10000: ids in a CSV, images spread over two folders; paths written on Windows or on another machine."""
    rows = write_scenes(tmp_path, n=8, images_dir="part_1")
    for i in range(4, 8):
        (tmp_path / "part_2").mkdir(exist_ok=True)
        (tmp_path / "part_1" / f"{i}.png").rename(tmp_path / "part_2" / f"{i}.png")
    names = ["0", "1.png", "part_1\\2.png", "C:\\Users\\me\\data\\3.png", "/home/me/data/4.png", "5", "part_2/6.png",
             "7.png"]
    (tmp_path / "labels.csv").write_text("image,labels\n" + "".join(f'{n},"{",".join(r) or ""}"\n'
                                                                  for n, r in zip(names, rows)))
    table = read_label_table(tmp_path / "labels.csv")
    assert [Path(p).name for p in table.paths] == [f"{i}.png" for i in range(8)]
    assert all(Path(p).is_file() for p in table.paths)


def test_class_indices_take_their_names_from_a_names_file(tmp_path: Path) -> None:
    write_scenes(tmp_path, n=4)
    (tmp_path / "labels.csv").write_text("".join(f"images/{i}.png,{i % 2}\n" for i in range(4)))
    assert read_label_table(tmp_path / "labels.csv").names == ["0", "1"]
    (tmp_path / "classes.txt").write_text("sky\nsea\n")
    table = read_label_table(tmp_path / "labels.csv")
    assert table.names == ["sea", "sky"] and [ls[0] for ls in table.labels] == ["sky", "sea", "sky", "sea"]


def test_a_multilabel_run_audits_its_label_sets(trained) -> None:
    """Label-set issues, duplicates and odd images for multi-label data too; given and suggested are label sets."""
    _, _, run, output = trained
    rows = list(csv.DictReader((run / "audit" / "audit.csv").read_text().splitlines()))
    assert "audit" in output and (run / "audit" / "audit.html").is_file()
    assert all(set(filter(None, r["given"].split(";"))) <= {"red", "blue"} for r in rows if r["issue"] == "label")
    assert "Data audit" in (run / "report.html").read_text()


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252"])
def test_tables_as_excel_saves_them(tmp_path: Path, encoding: str) -> None:
    """CSV UTF-8 (a byte-order mark), "Unicode text" (UTF-16, tabs), and a European Excel's own code page."""
    write_scenes(tmp_path, n=4)
    sep = "\t" if encoding == "utf-16" else ","
    text = f"path{sep}label\n" + "".join(f"images/{i}.png{sep}{('café', 'crème')[i % 2]}\n" for i in range(4))
    (tmp_path / "labels.csv").write_bytes(text.encode(encoding))
    table = read_label_table(tmp_path / "labels.csv")
    assert table.names == ["café", "crème"] and table.paths and all(Path(p).is_file() for p in table.paths)


def test_multilabel_from_the_objects_of_a_voc_folder(tmp_path: Path) -> None:
    """`--task multilabel` on detection data (VOC2007's classification benchmark): each image labelled with the
    classes of its boxes, none for an image without any, the split its ImageSets give."""
    from tunevision.data.discover import discover
    rows = write_scenes(tmp_path / "VOC", n=24)
    (tmp_path / "VOC" / "Annotations").mkdir()
    for i, labels in enumerate(rows):
        boxes = "".join(f"<object><name>{c}</name><bndbox><xmin>{1 if c == 'red' else 25}</xmin><ymin>1</ymin>"
                        f"<xmax>{23 if c == 'red' else 47}</xmax><ymax>39</ymax></bndbox></object>" for c in labels)
        (tmp_path / "VOC" / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.png</filename><size><width>48</width><height>40</height></size>{boxes}"
            "</annotation>")
    (tmp_path / "VOC" / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "VOC" / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in range(16)))
    (tmp_path / "VOC" / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in range(16, 24)))
    ds = discover(str(tmp_path / "VOC"), multilabel=True)
    assert ds.multilabel and ds.explicit_split and (len(ds.train), len(ds.val)) == (16, 8)
    assert {Path(s.path).stem: sorted(ds.classes[k] for k in s.labels) for s in ds.train + ds.val} == {
        str(i): sorted(r) for i, r in enumerate(rows)}
    run = tv.fit(str(tmp_path / "VOC"), task="multilabel", backbone="tiny_cnn", pretrained=False, epochs=2,
                 device="cpu", cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True)
    meta = json.loads((Path(run.run_dir) / "model" / "model.json").read_text())
    assert meta["task"] == "multilabel" and sorted(meta["classes"]) == ["blue", "red"]
