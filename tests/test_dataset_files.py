"""Labels and splits that well-known datasets keep in files of their own, read as those datasets ship: Oxford
Flowers-102's MATLAB label and split vectors, Stanford Cars' MATLAB records, CUB-200-2011's numbered image and split
lists, CelebA's attribute list (a count line, a header without the image column, -1/1 cells), the JSON of class
names beside folders numbered 1..N (Udacity's flowers), class folders named for two labels (`black_jeans/`) as
multi-label data, DTD's split lists in labels/ (no YOLO labels), labels kept in JSON (records, a map, COCO's form
without boxes), Tiny ImageNet's validation table and WordNet-id folders named as ImageNet names them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, make_image
from PIL import Image

from tunevision.core.config import RunConfig
from tunevision.data.discover import discover, task_name_for_data

scipy_io = pytest.importorskip("scipy.io")


def test_flowers102_mat_labels_and_split(tmp_path):
    rng = np.random.default_rng(0)
    colours = ["blue", "red", "green"] * 6
    rng.shuffle(colours)
    (tmp_path / "jpg").mkdir()
    for i, c in enumerate(colours, start=1):
        make_image(COLOURS[c], rng).save(tmp_path / "jpg" / f"image_{i:05d}.jpg")
    numbers = {"blue": 1, "red": 2, "green": 3}
    scipy_io.savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[numbers[c] for c in colours]])})
    ids = np.arange(1, 19)
    scipy_io.savemat(tmp_path / "setid.mat", {"trnid": ids[None, :9], "valid": ids[None, 9:15],
                                              "tstid": ids[None, 15:]})
    (tmp_path / "classes.txt").write_text("blue\nred\ngreen\n")
    ds = discover(str(tmp_path))
    assert ds.explicit_split and "MATLAB labels" in ds.layout
    assert ds.classes == ["blue", "red", "green"]
    assert len(ds.train) == 9 and len(ds.val) == 6 and len(ds.skipped) == 3
    for s in ds.train + ds.val:  # each image keeps the class its number was given
        number = int(s.path[-9:-4])
        assert ds.classes[s.label] == colours[number - 1]
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "classify"
    given_the_images = discover(str(tmp_path / "jpg"))  # the labels beside the folder pointed at
    assert given_the_images.classes == ds.classes and len(given_the_images.val) == 6


def _car_records(items: list[tuple[str, int]], with_class: bool = True, test: list[int] | None = None) -> np.ndarray:
    """Stanford Cars' annotations as scipy.io.savemat writes a MATLAB struct array: boxes, class, file name."""
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O")]
    fields += ([("class", "O")] if with_class else []) + [("fname", "O")] + ([("test", "O")] if test else [])
    records = np.zeros((1, len(items)), dtype=fields)
    for i, (name, number) in enumerate(items):
        cells = [np.array([[v]], np.uint16) for v in (3, 4, 36, 35)]
        cells += [np.array([[number]], np.uint8)] if with_class else []
        records[0, i] = tuple(cells + [np.array([name])] + ([np.array([[test[i]]], np.uint8)] if test else []))
    return records


def test_stanford_cars_records_and_class_names(tmp_path):
    """cars_train/ and cars_test/ with the same file names, devkit/cars_train_annos.mat, the labelled test records
    beside them (the devkit's own test records have no class), cars_meta.mat's names; then cars_annos.mat alone
    (relative paths, a test flag)."""
    root, rng = tmp_path / "stanford_cars", np.random.default_rng(0)
    (root / "devkit").mkdir(parents=True)
    colours = {"blue": 1, "red": 2}
    parts = {"cars_train": [], "cars_test": []}
    for part, n in (("cars_train", 6), ("cars_test", 4)):
        (root / part).mkdir()
        for i in range(n):
            c = ("blue", "red")[i % 2] if part == "cars_train" else ("red", "blue")[i % 2]  # the names differ in class
            make_image(COLOURS[c], rng).save(root / part / f"{i + 1:05d}.jpg")
            parts[part].append((f"{i + 1:05d}.jpg", colours[c]))
    scipy_io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _car_records(parts["cars_train"])})
    scipy_io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": _car_records(parts["cars_test"], False)})
    scipy_io.savemat(root / "cars_test_annos_withlabels.mat", {"annotations": _car_records(parts["cars_test"])})
    scipy_io.savemat(root / "devkit" / "cars_meta.mat",
                     {"class_names": np.array([["Blue Sedan 2012", "Red Coupe 2009"]], dtype=object)})
    (root / "cars_test" / "00004.jpg").unlink()  # a record whose image is not there
    ds = discover(str(tmp_path))
    assert ds.explicit_split and "MATLAB records" in ds.layout
    assert ds.classes == ["Blue Sedan 2012", "Red Coupe 2009"]
    assert len(ds.train) == 6 and len(ds.val) == 3 and [Path(s.path).name for s in ds.skipped] == ["00004.jpg"]
    for s in ds.train + ds.val:  # the test records' 00001.jpg is cars_test's, not cars_train's
        pixel = np.asarray(Image.open(s.path).convert("RGB"))[20, 20]
        assert ("blue" if pixel[2] > pixel[0] else "red") == ds.classes[s.label].split()[0].lower()
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "classify"
    assert discover(str(root / "cars_train")).classes == ds.classes  # given the image folder: the records beside it

    whole = tmp_path / "cars_annos"
    (whole / "car_ims").mkdir(parents=True)
    items, flags = [], []
    for i in range(8):
        c = ("blue", "red")[i % 2]
        make_image(COLOURS[c], rng).save(whole / "car_ims" / f"{i:06d}.jpg")
        items.append((f"car_ims/{i:06d}.jpg", colours[c]))
        flags.append(int(i >= 6))
    scipy_io.savemat(whole / "cars_annos.mat", {"annotations": _car_records(items, test=flags),
                                                "class_names": np.array([["Blue", "Red"]], dtype=object)})
    ds = discover(str(whole))
    assert ds.classes == ["Blue", "Red"] and len(ds.train) == 6 and len(ds.val) == 2


def test_mat_files_that_label_no_image_folder_are_ignored(tmp_path):
    for c in ("blue", "red"):
        (tmp_path / c).mkdir()
        for i in range(3):
            make_image(COLOURS[c], np.random.default_rng(i)).save(tmp_path / c / f"{i}.jpg")
    scipy_io.savemat(tmp_path / "weights.mat", {"w": np.arange(10)[None]})
    (tmp_path / "cut.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(20))  # cut short: labels nothing either
    ds = discover(str(tmp_path))
    assert ds.classes == ["blue", "red"] and ds.layout.startswith("class folders")


def test_cub_numbered_lists_give_the_split(tmp_path):
    root = tmp_path / "CUB_200_2011"
    rng = np.random.default_rng(0)
    lines, flags = [], []
    for k, c in enumerate(("blue", "red"), start=1):
        folder = root / "images" / f"{k:03d}.{c}"
        folder.mkdir(parents=True)
        for i in range(6):
            make_image(COLOURS[c], rng).save(folder / f"{c}_{i}.jpg")
            lines.append(f"{len(lines) + 1} {folder.name}/{c}_{i}.jpg")
            flags.append(f"{len(flags) + 1} {int(i < 4)}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(flags) + "\n")
    ds = discover(str(root))
    assert ds.explicit_split and "train_test_split.txt" in ds.layout
    assert ds.classes == ["blue", "red"]  # the folders' numbers (001.blue) left out
    assert sorted(s.path.rsplit("_", 1)[1] for s in ds.val) == ["4.jpg", "4.jpg", "5.jpg", "5.jpg"]
    assert len(ds.train) == 8


def test_celeba_attribute_list(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img_align").mkdir()
    names = ["Smiling", "Young", "Bald"]
    rows = []
    for i in range(12):
        make_image(COLOURS["blue"], rng).save(tmp_path / "img_align" / f"{i:06d}.jpg")
        cells = ["1" if (i >> j) % 2 or j == 2 and i < 3 else "-1" for j in range(3)]
        rows.append(f"{i:06d}.jpg " + "  ".join(cells))
    (tmp_path / "list_attr.txt").write_text(f"{len(rows)}\n{' '.join(names)}\n" + "\n".join(rows) + "\n")
    ds = discover(str(tmp_path))
    assert ds.multilabel and ds.classes == names
    by_name = {s.path[-10:-4]: {ds.classes[x] for x in s.labels} for s in ds.train + ds.val}
    assert by_name["000003"] == {"Smiling", "Young"} and by_name["000000"] == {"Bald"}
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "multilabel"


def test_numbered_class_folders_named_by_a_json_beside_them(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("valid", 2)):
        for number, c in ((1, "blue"), (2, "red")):
            (tmp_path / "flower_data" / split / str(number)).mkdir(parents=True)
            for i in range(n):
                make_image(COLOURS[c], rng).save(tmp_path / "flower_data" / split / str(number) / f"{i}.jpg")
    (tmp_path / "cat_to_name.json").write_text(json.dumps({"1": "blue flower", "2": "red flower", "3": "other"}))
    ds = discover(str(tmp_path / "flower_data"))
    assert ds.classes == ["blue flower", "red flower"]
    assert all(ds.classes[s.label].split()[0] in s.path.replace("/1/", "/blue/").replace("/2/", "/red/")
               for s in ds.train + ds.val)
    (tmp_path / "cat_to_name.json").write_text(json.dumps({"1": "blue flower"}))  # names one class only: not used
    assert discover(str(tmp_path / "flower_data")).classes == ["1", "2"]


def test_tiny_imagenet_validation_table_and_words(tmp_path):
    """train/<wnid>/images/ with a box list beside them, val/images/ labelled by val_annotations.txt (tab-separated,
    boxes after the label), an unlabelled test/, and words.txt naming all of WordNet."""
    root, rng = tmp_path / "tiny-imagenet-200", np.random.default_rng(0)
    wnids = {"blue": "n01443537", "red": "n01629819"}
    annotations = []
    for c, wnid in wnids.items():
        (root / "train" / wnid / "images").mkdir(parents=True)
        for i in range(4):
            make_image(COLOURS[c], rng).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", "JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t1\t2\t30\t31\n")
        for i in range(3):
            name = f"val_{len(annotations)}.JPEG"
            (root / "val" / "images").mkdir(parents=True, exist_ok=True)
            make_image(COLOURS[c], rng).save(root / "val" / "images" / name, "JPEG")
            annotations.append(f"{name}\t{wnid}\t{i + 1}\t{2 * i}\t{30 + i}\t{29 - i}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    (root / "test" / "images").mkdir(parents=True)
    make_image(COLOURS["green"], rng).save(root / "test" / "images" / "test_0.JPEG", "JPEG")
    (root / "wnids.txt").write_text("\n".join(wnids.values()) + "\n")
    (root / "words.txt").write_text("n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\n"
                                    "n01629819\tEuropean fire salamander, Salamandra salamandra\n")
    ds = discover(str(tmp_path))
    assert ds.explicit_split and "val/val_annotations.txt" in ds.layout and "words.txt" in ds.layout
    assert ds.classes == ["goldfish", "European fire salamander"]
    assert len(ds.train) == 8 and len(ds.val) == 6
    colour = {"goldfish": "blue", "European fire salamander": "red"}
    for s in ds.val:  # each validation image has the class its row gives
        assert annotations[int(Path(s.path).stem.split("_")[1])].split("\t")[1] == wnids[colour[ds.classes[s.label]]]
    alone = discover(str(root / "val"))  # `tunevision evaluate RUN val/`: the same names as the run's
    assert alone.classes == ds.classes and len(alone.train) + len(alone.val) == 6


def test_wordnet_folders_named_without_a_names_file(tmp_path):
    """Imagenette's train/n01440764/: ImageNet's names from timm's synset list; a name given twice keeps its id."""
    pytest.importorskip("timm")
    rng = np.random.default_rng(0)
    for wnid, c in (("n01440764", "blue"), ("n02012849", "red"), ("n03126707", "green")):
        for split in ("train", "val"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(2):
                make_image(COLOURS[c], rng).save(tmp_path / split / wnid / f"{i}.JPEG", "JPEG")
    ds = discover(str(tmp_path))
    assert ds.classes == ["tench", "crane (n02012849)", "crane (n03126707)"]
    assert "timm's ImageNet synsets" in ds.layout


def test_a_file_of_class_indices_does_not_rename_the_classes(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("blue", "red"):
        (tmp_path / c).mkdir()
        for i in range(3):
            make_image(COLOURS[c], rng).save(tmp_path / c / f"{i}.jpg")
    (tmp_path / "labels.txt").write_text("blue 0\nred 1\n")
    assert discover(str(tmp_path)).classes == ["blue", "red"]
    (tmp_path / "README.txt").write_text("Cards photographed at home.\nblue - 3 images\nred - 4 images\nCC-BY\n")
    assert discover(str(tmp_path)).classes == ["blue", "red"]  # prose about the classes names nothing
    (tmp_path / "names.txt").write_text("blue: a blue card\nred: a red card\n")  # a map of names: used
    assert discover(str(tmp_path)).classes == ["a blue card", "a red card"]


def test_multilabel_runs_may_leave_the_audit_out():
    cfg = RunConfig.from_options("x.csv", audit=False).for_task("multilabel")
    assert cfg.data.audit is False


def test_multilabel_asked_of_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("black_jeans", "blue_dress", "blue_jeans", "red_dress"):
        (tmp_path / "joined" / name).mkdir(parents=True)
        for i in range(4):
            make_image(COLOURS["blue"], rng).save(tmp_path / "joined" / name / f"{i}.jpg")
    ds = discover(str(tmp_path / "joined"), multilabel=True)
    assert ds.multilabel and ds.classes == ["black", "blue", "dress", "jeans", "red"]
    for s in ds.train + ds.val:  # each image's labels are the words of its folder's name
        assert {ds.classes[x] for x in s.labels} == set(s.path.split("/")[-2].split("_"))
    assert not discover(str(tmp_path / "joined")).multilabel  # asked for one label: the folders are the classes
    make = tmp_path / "cars"  # names that share no word: each folder is one label
    for name in ("sedan_car", "pickup_truck"):
        (make / name).mkdir(parents=True)
        for i in range(3):
            make_image(COLOURS["red"], rng).save(make / name / f"{i}.jpg")
    ds = discover(str(make), multilabel=True)
    assert ds.multilabel and ds.classes == ["pickup_truck", "sedan_car"]
    assert sorted(s.labels for s in ds.train + ds.val) == [(0,)] * 3 + [(1,)] * 3


def test_split_lists_named_with_other_words(tmp_path):
    """TrashNet's one-indexed-files-notrash_{train,val,test}.txt beside its wrapped class folders: the split."""
    rng = np.random.default_rng(0)
    outer = tmp_path / "Garbage classification"
    inner = outer / "Garbage classification"
    lists = {"train": [], "val": [], "test": []}
    for k, c in enumerate(("blue", "red")):
        (inner / c).mkdir(parents=True)
        for i in range(1, 9):
            make_image(COLOURS[c], rng).save(inner / c / f"{c}{i}.jpg")
            lists["train" if i <= 5 else "val" if i <= 7 else "test"].append(f"{c}{i}.jpg {k + 1}")
    for role, lines in lists.items():
        (outer / f"one-indexed-files-notrash_{role}.txt").write_text("\n".join(lines) + "\n")
    (outer / "train_log.txt").write_text("epoch 1 loss 0.5\n")  # names no image: no split list
    ds = discover(str(tmp_path))
    assert ds.explicit_split and (len(ds.train), len(ds.val)) == (10, 4)
    assert sorted(s.path.rsplit("/", 1)[1] for s in ds.val) == ["blue6.jpg", "blue7.jpg", "red6.jpg", "red7.jpg"]
    assert sum("not used" in s.reason for s in ds.skipped) == 2


def test_class_names_lose_the_numbers_every_folder_starts_with():
    from tunevision.data.sources import numbered_names
    assert numbered_names(["001.Black_footed_Albatross", "002.Laysan_Albatross"]) == ["Black_footed_Albatross",
                                                                                    "Laysan_Albatross"]
    assert numbered_names(["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]) == ["Chihuahua", "Japanese_spaniel"]
    assert numbered_names(["1.5mm", "2.5mm"]) == [] and numbered_names(["001.cat", "dog"]) == []
    assert numbered_names(["001.cat", "002.cat"]) == []  # names that would collide keep their numbers


def test_split_lists_in_a_labels_folder_are_not_yolo_labels(tmp_path):
    """DTD ships images/<class>/ beside labels/train1.txt ... (image paths, one per line): class folders, where a
    labels/ folder of 'class cx cy w h' lines is YOLO detection data."""
    paths = []
    for c in ("blue", "red"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(4):
            make_image(COLOURS[c], np.random.default_rng(i)).save(tmp_path / "images" / c / f"{c}_{i:04d}.jpg")
            paths.append(f"{c}/{c}_{i:04d}.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "train1.txt").write_text("\n".join(paths[::2]) + "\n")
    (tmp_path / "labels" / "test1.txt").write_text("\n".join(paths[1::2]) + "\n")
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "classify"
    assert discover(str(tmp_path)).classes == ["blue", "red"]
    (tmp_path / "labels" / "train1.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # now a YOLO label file
    (tmp_path / "labels" / "test1.txt").unlink()
    (tmp_path / "classes.txt").write_text("thing\n")
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "detect"


def _loose_images(folder, colours):
    folder.mkdir(parents=True)
    for i, c in enumerate(colours):
        make_image(COLOURS[c], np.random.default_rng(i)).save(folder / f"im{i}.jpg")
    return [f"im{i}.jpg" for i in range(len(colours))]


def test_labels_kept_in_json(tmp_path):
    """Records, a map of images to labels (or to lists of them) and COCO's form without boxes (iNaturalist's) are
    label tables; a records file named annotations.json is no COCO detection data."""
    colours = ["blue", "red", "green"] * 4
    records = tmp_path / "records"
    names = _loose_images(records / "images", colours)
    (records / "annotations.json").write_text(json.dumps([{"file_name": n, "label": c, "width": 40}
                                                          for n, c in zip(names, colours)]))
    assert task_name_for_data(RunConfig.from_options(str(records))) == "classify"
    ds = discover(str(records))
    assert ds.layout.startswith("JSON") and ds.classes == ["blue", "green", "red"]
    assert len(ds.train) + len(ds.val) == 12
    assert all(ds.classes[s.label] == colours[int(Path(s.path).stem[2:])] for s in ds.train + ds.val)

    tags = tmp_path / "tags"
    names = _loose_images(tags / "images", colours)
    (tags / "labels.json").write_text(json.dumps({n: [c, "any"] if i % 2 else [c] for i, (n, c) in
                                                  enumerate(zip(names, colours))}))
    assert task_name_for_data(RunConfig.from_options(str(tags))) == "multilabel"
    ds = discover(str(tags / "labels.json"))
    assert ds.multilabel and ds.classes == ["any", "blue", "green", "red"]

    coco = tmp_path / "inat"
    names = _loose_images(coco / "train", colours)
    doc = {"images": [{"id": 100 + i, "file_name": n} for i, n in enumerate(names)],
           "categories": [{"id": 7, "name": "blue"}, {"id": 8, "name": "red"}, {"id": 9, "name": "green"}],
           "annotations": [{"id": i, "image_id": 100 + i, "category_id": {"blue": 7, "red": 8, "green": 9}[c]}
                           for i, c in enumerate(colours)]}
    (coco / "train2018.json").write_text(json.dumps(doc))
    assert task_name_for_data(RunConfig.from_options(str(coco))) == "classify"
    ds = discover(str(coco))
    assert sorted(ds.classes) == ["blue", "green", "red"] and len(ds.train) + len(ds.val) == 12
    for a in doc["annotations"]:  # with boxes the same file is detection data
        a["bbox"] = [1, 1, 10, 10]
    (coco / "train2018.json").write_text(json.dumps(doc))
    assert task_name_for_data(RunConfig.from_options(str(coco))) == "detect"


def test_json_annotations_of_shapes_are_no_label_table(tmp_path):
    """A folder's other JSON (LabelMe's shapes per image) is not read as its labels: nested values are refused."""
    from tunevision.core.errors import TunevisionError
    from tunevision.data.tables import read_label_table
    names = _loose_images(tmp_path / "images", ["blue", "red"] * 3)
    (tmp_path / "shapes.json").write_text(json.dumps([{"imagePath": n, "shapes": [{"label": "x", "points": [[1, 2]]}]}
                                                      for n in names]))
    with pytest.raises(TunevisionError, match="nested values"):
        read_label_table(tmp_path / "shapes.json")
    (tmp_path / "broken.json").write_text('[{"file_name": ')
    with pytest.raises(TunevisionError, match="not readable JSON"):
        read_label_table(tmp_path / "broken.json")
