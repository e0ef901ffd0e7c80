"""Data read by content whatever the folder's names: split folders in any case (and Kaggle's training_set/,
seg_train/), the folder an archive wraps data in, what tools leave behind and tunevision's own runs, Kaggle's
unlabelled test/ and its train.csv, classes in file names, split lists (Oxford-IIIT Pet, Food-101, VOC), label
columns among other facts, images without an image name, and detection and segmentation layouts (Ultralytics'
split image folders and polygons, a COCO file whatever its name and wherever its images, box tables, class maps
against instance masks)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, make_class_folders, make_image
from PIL import Image

from tunevision.core.errors import TunevisionError
from tunevision.data.annotations import read_scene_data, sniff_format
from tunevision.data.discover import discover
from tunevision.data.layout import split_dirs, unwrap


def _leave_tool_junk(folder: Path) -> None:
    """What a macOS zip and a notebook leave in every class folder."""
    for d in [p for p in folder.rglob("*") if p.is_dir()]:
        (d / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble: not an image
        (d / ".ipynb_checkpoints").mkdir()
        (d / "Thumbs.db").write_bytes(b"junk")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._x.jpg").write_bytes(b"junk")


def test_wrapped_capitalised_splits_with_tool_junk(tmp_path):
    inner = tmp_path / "pets" / "pets"
    rng = np.random.default_rng(0)
    for split, n in (("Training", 6), ("Validation", 3)):
        for c in ("blue", "red"):
            (inner / split / c.title()).mkdir(parents=True)
            for i in range(n):
                make_image(COLOURS[c], rng).save(inner / split / c.title() / f"IMG_{i}.JPG")
    _leave_tool_junk(inner)
    ds = discover(str(tmp_path / "pets"))
    assert ds.classes == ["Blue", "Red"]  # not ["Training", "Validation"], nor the wrapper as one class
    assert (len(ds.train), len(ds.val)) == (12, 6) and ds.explicit_split
    assert all("Validation" in s.path for s in ds.val)
    # leftovers are not data: listed as such (none decoded: an AppleDouble file is no "corrupt image")
    assert ds.skipped and all("left by the system or a tool" in s.reason for s in ds.skipped)
    assert not any("__MACOSX" in s.path for s in ds.train + ds.val)
    assert "Training/Validation" in ds.layout and "in pets/" in ds.layout


def test_train_with_unlabelled_test_folder_is_split_by_seed(tmp_path):
    make_class_folders(tmp_path / "train", n=10)
    (tmp_path / "test").mkdir()
    for i in range(3):
        make_image((9, 9, 9), np.random.default_rng(i)).save(tmp_path / "test" / f"{i}.jpg")
    ds = discover(str(tmp_path))
    assert ds.classes == ["blue", "red"] and not ds.explicit_split
    assert len(ds.train) + len(ds.val) == 20 and len(ds.val) == 4
    assert [s.path for s in ds.skipped] == [str(tmp_path / "test")]
    assert "unlabelled" in ds.skipped[0].reason


def test_a_class_called_train_is_a_class(tmp_path):
    """Folders of loose images named like splits (a vehicles set: train, bus) are classes, not splits."""
    rng = np.random.default_rng(0)
    for c in ("train", "bus", "test"):
        (tmp_path / c).mkdir()
        for i in range(4):
            make_image(COLOURS["red"], rng).save(tmp_path / c / f"{i}.png")
    assert discover(str(tmp_path)).classes == ["bus", "test", "train"]


def test_split_roles_by_name_any_case(tmp_path):
    for name in ("TRAINING", "Valid", "test", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "val.txt").write_text("a file is no split")
    assert split_dirs(tmp_path) == {"train": tmp_path / "TRAINING", "val": tmp_path / "Valid",
                                    "test": tmp_path / "test"}


def test_unwrap_never_enters_a_folder_of_images(tmp_path):
    make_class_folders(tmp_path / "one", n=2, classes=("blue",))
    assert unwrap(tmp_path / "one") == tmp_path / "one"  # one class folder of images: the data itself
    assert unwrap(tmp_path) == tmp_path / "one"         # ...which a lone wrapper folder leads to


def test_tab_and_space_separated_lists(tmp_path):
    make_class_folders(tmp_path / "imgs", n=6)
    files = sorted((tmp_path / "imgs").rglob("*.*"))
    rows = [(f.relative_to(tmp_path).as_posix(), int(f.parent.name == "red")) for f in files]
    (tmp_path / "labels.tsv").write_text("".join(f"{p}\t{k}\n" for p, k in rows))
    (tmp_path / "list.txt").write_text("".join(f"{p} {k}\n" for p, k in rows))
    for name in ("labels.tsv", "list.txt"):
        ds = discover(str(tmp_path / name))
        assert ds.classes == ["0", "1"] and len(ds.train) + len(ds.val) == 12, name
        assert all((Path(s.path).parent.name == "red") == (s.label == 1) for s in ds.train + ds.val)


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(COLOURS["blue"], np.random.default_rng(seed), size=48).save(path)


def test_ultralytics_split_folders_are_the_split(tmp_path):
    root = tmp_path / "set" / "set"  # wrapped, as a zip unpacks
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):  # the same file names in both splits: neither may hide the other
            _image(root / "images" / split / f"{i}.jpg", i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    (root / "data.yaml").write_text("names: [thing]\n")
    (tmp_path / "set" / "__MACOSX" / "set" / "images").mkdir(parents=True)
    (tmp_path / "set" / "__MACOSX" / "set" / "images" / "._0.jpg").write_bytes(b"junk")
    assert sniff_format(tmp_path / "set") == "yolo"
    data = read_scene_data(tmp_path / "set")
    assert sorted(it.split for it in data.items) == ["train"] * 4 + ["val"] * 2
    assert data.problems == []


def test_coco_file_found_by_content(tmp_path):
    images, anns = [], []
    for i in range(3):
        _image(tmp_path / "pics" / f"{i}.jpg", i)
        images.append({"id": i, "file_name": f"pics/{i}.jpg", "width": 56, "height": 48})
        anns.append({"id": i, "image_id": i, "category_id": 7, "bbox": [4, 4, 20, 20]})
    (tmp_path / "notes.json").write_text(json.dumps({"author": "me"}))
    (tmp_path / "train.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                    "categories": [{"id": 7, "name": "cat"}]}))
    assert sniff_format(tmp_path) == "coco"
    data = read_scene_data(tmp_path)
    assert data.classes == ["cat"] and len(data.items) == 3


def test_predicting_a_folder_passes_over_tool_junk(tmp_path):
    from tunevision.data.inputs import expand_inputs
    make_class_folders(tmp_path / "photos", n=2)
    _leave_tool_junk(tmp_path / "photos")
    [(_, found)] = expand_inputs([str(tmp_path / "photos")])
    assert len(found) == 4 and not any("._" in f or "__MACOSX" in f for f in found)


def test_classes_from_file_names_in_a_flat_folder(tmp_path):
    """Kaggle's dogs-vs-cats: train/cat.0.jpg ... beside an unlabelled test1/ of numbers."""
    rng = np.random.default_rng(0)
    for d in ("train", "test1"):
        (tmp_path / d).mkdir()
    for i in range(5):
        make_image(COLOURS["blue"], rng).save(tmp_path / "train" / f"cat.{i}.jpg")
        make_image(COLOURS["red"], rng).save(tmp_path / "train" / f"dog.{i}.jpg")
        make_image(COLOURS["red"], rng).save(tmp_path / "test1" / f"{i}.jpg")
    make_image(COLOURS["red"], rng).save(tmp_path / "train" / "README.png")
    ds = discover(str(tmp_path))
    assert ds.classes == ["cat", "dog"] and len(ds.train) + len(ds.val) == 10
    assert all(Path(s.path).name.startswith(ds.classes[s.label]) for s in ds.train + ds.val)
    assert [(Path(s.path).name, s.reason) for s in ds.skipped] == [
        ("README.png", "no class in its name"), ("test1", "no classes in its file names: not used")]
    assert "file names" in ds.layout


def test_camera_names_are_no_classes(tmp_path):
    from tunevision.data.layout import classes_from_names
    assert classes_from_names([f"IMG_{i:04d}.jpg" for i in range(9)]) == {}
    assert classes_from_names([f"{c}_{i:04d}.jpg" for c in ("IMG", "DSC", "PXL") for i in range(9)]) == {}
    assert classes_from_names(["a.jpg", "b.jpg", "c.jpg"]) == {}
    pets = [f"Abyssinian_{i}.jpg" for i in range(5)] + [f"american_bulldog ({i}).jpg" for i in range(5)]
    assert list(classes_from_names(pets + ["photo.jpg"])) == ["Abyssinian", "american_bulldog"]
    assert classes_from_names(pets + ["photo.jpg", "other.jpg"]) == {}  # 10 of 12: too few named


def test_class_folders_beside_folders_without_images(tmp_path):
    """DTD: dtd/images/<class>/ beside dtd/labels/*.txt and dtd/imdb/imdb.mat."""
    make_class_folders(tmp_path / "dtd" / "images", n=4)
    (tmp_path / "dtd" / "labels").mkdir()
    (tmp_path / "dtd" / "labels" / "train1.txt").write_text("blue/blue_000.jpg\n")
    ds = discover(str(tmp_path / "dtd"))
    assert ds.classes == ["blue", "red"] and ds.skipped == [] and "in images/" in ds.layout


def test_coco_images_found_by_name_where_file_name_does_not_say(tmp_path):
    """COCO's own layout: annotations/instances_train.json names `0.jpg`, the image lies in train2017/."""
    (tmp_path / "annotations").mkdir()
    images = []
    for i in range(2):
        _image(tmp_path / "train2017" / f"{i}.jpg", i)
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 56, "height": 48})
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in range(2)]
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    data = read_scene_data(tmp_path)
    assert data.problems == [] and [it.image.parent.name for it in data.items] == ["train2017"] * 2


def test_yolo_polygon_lines_give_their_boxes(tmp_path):
    _image(tmp_path / "images" / "a.jpg", 0)  # 56 x 48
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.75 0.25 0.5 0.75\n1 0.5 0.5 0.1\n")
    (tmp_path / "classes.txt").write_text("box\npolygon\n")
    with pytest.raises(TunevisionError, match="a.txt: unreadable YOLO label .*4 values in a line"):
        read_scene_data(tmp_path)  # the line of four values: said, not guessed
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.75 0.25 0.5 0.75\n")
    [item] = read_scene_data(tmp_path).items
    np.testing.assert_allclose(item.boxes, [[21, 12, 35, 36], [14, 12, 42, 36]], atol=1e-4)
    assert item.labels.tolist() == [0, 1]


def test_images_without_an_image_name_are_read_by_their_bytes(tmp_path):
    make_class_folders(tmp_path, n=3)
    (tmp_path / "blue" / "blue_000.jpg").rename(tmp_path / "blue" / "photo")          # saved from a browser
    (tmp_path / "red" / "red_001.png").rename(tmp_path / "red" / "image.download")
    (tmp_path / "red" / "notes").write_text("taken in the garden")
    ds = discover(str(tmp_path))
    found = {Path(s.path).name for s in ds.train + ds.val}
    assert {"photo", "image.download"} <= found and len(found) == 6
    assert [Path(s.path).name for s in ds.skipped] == ["notes"]


def test_a_folder_without_class_folders_trains_on_the_table_it_comes_with(tmp_path):
    """Kaggle: train.csv (id,label) beside train/ and test/ of loose images, and a sample_submission.csv."""
    rng = np.random.default_rng(0)
    for d in ("train", "test"):
        (tmp_path / d).mkdir()
    rows = []
    for i in range(12):
        colour = ("blue", "red")[i % 2]
        make_image(COLOURS[colour], rng).save(tmp_path / "train" / f"{i:04x}.jpg")
        make_image(COLOURS[colour], rng).save(tmp_path / "test" / f"t{i}.jpg")
        rows.append(f"{i:04x},{colour}\n")
    (tmp_path / "sample_submission.csv").write_text("id,label\n" + "".join(f"t{i},blue\n" for i in range(12)))
    (tmp_path / "train.csv").write_text("id,label\n" + "".join(rows))
    ds = discover(str(tmp_path))
    assert ds.classes == ["blue", "red"] and len(ds.train) + len(ds.val) == 12  # not the classes "test", "train"
    assert all(("red", "blue")[int(Path(s.path).stem, 16) % 2 == 0] == ds.classes[s.label] for s in ds.train)
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "classify"


def test_a_stray_table_beside_class_folders_changes_nothing(tmp_path):
    make_class_folders(tmp_path, n=4, split=True)
    (tmp_path / "metadata.csv").write_text("file,licence\n" + "".join(
        f"train/blue/blue_{i:03d}.jpg,{('cc-by', 'cc0')[i % 2]}\n" for i in range(2)))
    assert discover(str(tmp_path)).classes == ["blue", "red"]


def test_class_maps_are_read_as_classes_and_train_a_segmenter(tmp_path):
    """Masks whose pixel values are classes (a names file with two or more classes): each value present is one
    region of its class; VOC's void outline is no object; `--task auto` segments."""
    from tests.scenes import write_class_masks
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    from tunevision.data.scenes import decode_scene
    root = write_class_masks(tmp_path / "pets")
    data = read_scene_data(root)
    assert data.classes == ["cat", "dog"] and data.problems == []
    for it in data.items:
        m = np.asarray(Image.open(it.mask))
        assert it.labels.tolist() == [v - 1 for v in sorted(set(np.unique(m)) - {0, 255})]
        sample = decode_scene(it, 80)
        assert len(sample.masks) == len(sample.boxes) == len(it.labels)
        expected = np.where(m == 255, 0, m)  # void counts as background in the class map
        assert np.array_equal(sample.semantic().numpy(), expected)
    assert task_name_for_data(RunConfig.from_options(str(root))) == "segment"
    (root / "classes.txt").write_text("background\ncat\n")  # one class: values are instances of it again
    assert task_name_for_data(RunConfig.from_options(str(root))) == "detect"


def test_class_maps_without_names_and_values_without_a_name(tmp_path):
    from tests.scenes import write_class_masks
    root = write_class_masks(tmp_path / "a", names=None, mask_dir="SegmentationClass")
    assert read_scene_data(root).classes == ["class 1", "class 2"]
    root = write_class_masks(tmp_path / "b", names="cat\ndog\n")
    Image.fromarray(np.full((80, 96), 3, np.uint8)).save(root / "masks" / "im0.png")
    assert "pixel value 3 has no class" in dict(read_scene_data(root).problems)[str(root / "masks" / "im0.png")]


def test_pascal_voc_segmentation_set(tmp_path):
    """VOC2012 as it unpacks: an XML of boxes for every image (detection, the default), class masks in VOC's palette
    for some of them (`--task segment`: VOC's 20 classes, no names file), split by ImageSets/Segmentation/."""
    from tests.scenes import draw
    from tunevision.core.config import RunConfig
    from tunevision.data.annotated import voc_colours
    from tunevision.data.annotations import VOC_CLASSES
    from tunevision.data.discover import task_name_for_data
    root, rng = tmp_path / "VOCdevkit" / "VOC2012", np.random.default_rng(0)
    for d in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject", "ImageSets/Main",
              "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    stems = [f"2007_{i:06d}" for i in range(10)]
    for i, stem in enumerate(stems):
        image, instances, boxes = draw(rng)
        Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg")
        objects = "".join(f"<object><name>person</name><bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
                          f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>96</width><height>80</height></size>"
            f"{objects}</annotation>")
        if i < 6:  # the segmentation set is a part of the images, as VOC's 2,913 of 17,125
            classes = np.where(instances > 0, 15, 0).astype(np.uint8)  # 15: person
            classes[0, :] = 255  # void, as VOC marks objects' borders
            mask = Image.fromarray(classes, "P")
            mask.putpalette(voc_colours(256))
            mask.save(root / "SegmentationClass" / f"{stem}.png")
            Image.fromarray(instances).save(root / "SegmentationObject" / f"{stem}.png")  # an instance mask beside
    (root / "ImageSets/Main/train.txt").write_text("\n".join(stems[:7]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(stems[7:]) + "\n")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(stems[:4]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(stems[4:6]) + "\n")
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "detect"
    boxes = read_scene_data(tmp_path)
    assert boxes.format == "voc" and len(boxes.items) == 10 and [it.split for it in boxes.items].count("val") == 3
    assert all(it.image.parent.name == "JPEGImages" for it in boxes.items)  # not SegmentationObject's PNGs
    masks = read_scene_data(tmp_path, task="segment")
    assert masks.format == "masks" and masks.classes == list(VOC_CLASSES) and not masks.problems
    assert [it.split for it in masks.items] == ["train"] * 4 + ["val"] * 2
    assert all(list(it.labels) == [VOC_CLASSES.index("person")] for it in masks.items)
    assert all(it.image.parent.name == "JPEGImages" and it.mask.parent.name == "SegmentationClass"
               for it in masks.items)


def test_cvat_colour_masks_with_a_labelmap(tmp_path):
    """CVAT's "Segmentation mask" export: RGB class masks coloured as labelmap.txt says (background first), instance
    masks beside them, ImageSets/Segmentation/default.txt; a colour no class has leaves its image out with the
    reason; VOC's masks saved as RGB read by VOC's colour map."""
    from tests.scenes import draw
    from tunevision.core.config import RunConfig
    from tunevision.data.annotated import voc_colours
    from tunevision.data.discover import task_name_for_data
    from tunevision.data.scenes import decode_scene
    root, rng = tmp_path / "task_1", np.random.default_rng(0)
    for d in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    colours = {1: (250, 50, 83), 2: (51, 221, 255)}  # car, person
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:250,50,83::\n"
                                       "person:51,221,255::\n")
    expected = {}
    for i in range(4):
        image, instances, _ = draw(rng, n_max=2)
        classes = np.where(instances > 0, instances, 0)  # object k is class k: car, then person
        rgb = np.zeros((*classes.shape, 3), np.uint8)
        for k, c in colours.items():
            rgb[classes == k] = c
        Image.fromarray(image).save(root / "JPEGImages" / f"frame_{i}.jpg")
        Image.fromarray(rgb).save(root / "SegmentationClass" / f"frame_{i}.png")
        Image.fromarray(np.stack([instances * 60] * 3, -1).astype(np.uint8)).save(
            root / "SegmentationObject" / f"frame_{i}.png")
        expected[f"frame_{i}"] = sorted(set(np.unique(classes)) - {0})
    (root / "ImageSets/Segmentation/default.txt").write_text("\n".join(f"frame_{i}" for i in range(4)) + "\n")
    assert task_name_for_data(RunConfig.from_options(str(root))) == "segment"
    data = read_scene_data(root)
    assert data.format == "masks" and data.classes == ["car", "person"] and not data.problems
    for it in data.items:
        assert [int(v) + 1 for v in it.labels] == expected[it.image.stem]
        sample = decode_scene(it, 80)
        assert sample.masks.shape[0] == len(it.labels) and sample.masks.sum() > 0
    odd = np.asarray(Image.open(root / "SegmentationClass" / "frame_0.png")).copy()
    odd[:3, :3] = (9, 9, 9)
    Image.fromarray(odd).save(root / "SegmentationClass" / "frame_0.png")
    problems = dict(read_scene_data(root).problems)
    why = problems[str(root / "SegmentationClass" / "frame_0.png")]
    assert "colour (9, 9, 9) is in no class of labelmap.txt" in why

    (root / "labelmap.txt").unlink()  # VOC's own colours, no labelmap: values by VOC's colour map
    flat = voc_colours(256)
    for i in range(4):
        values = np.asarray(Image.open(root / "SegmentationClass" / f"frame_{i}.png").convert("RGB"))[..., 0] > 0
        rgb = np.zeros((*values.shape, 3), np.uint8)
        rgb[values] = flat[15 * 3:15 * 3 + 3]  # person
        Image.fromarray(rgb).save(root / "SegmentationClass" / f"frame_{i}.png")
    data = read_scene_data(root)
    assert data.classes[-1] == "class 15" and all(list(it.labels) == [14] for it in data.items)


def test_binary_masks_saved_as_0_and_255_are_one_object(tmp_path):
    from tests.scenes import write_class_masks
    root = write_class_masks(tmp_path / "cells", n=2, names=None)
    for p in (root / "masks").iterdir():
        Image.fromarray(np.where(np.asarray(Image.open(p)) > 0, 255, 0).astype(np.uint8)).save(p)
    data = read_scene_data(root)
    assert data.classes == ["object"] and all(len(it.labels) == 1 for it in data.items)


def test_binary_masks_saved_as_jpeg_are_a_class_to_segment(tmp_path):
    """Kvasir-SEG as it ships: images/ and masks/ of RGB JPEGs whose foreground is white, grey at its blurred edges:
    one class to segment, each mask cut at 128; the same masks saved as 0/255 PNGs alike."""
    from tests.scenes import draw
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    from tunevision.data.scenes import decode_scene
    root, rng = tmp_path / "Kvasir-SEG", np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = {}
    for i in range(4):
        image, instances, _ = draw(rng)
        Image.fromarray(image).save(root / "images" / f"cju{i}.jpg")
        white = np.where(instances > 0, 255, 0).astype(np.uint8)
        Image.fromarray(np.stack([white] * 3, -1)).save(root / "masks" / f"cju{i}.jpg", quality=75)
        truth[f"cju{i}"] = white > 0
    assert len(np.unique(np.asarray(Image.open(root / "masks" / "cju0.jpg")))) > 2  # JPEG's grey edges
    assert task_name_for_data(RunConfig.from_options(str(root))) == "segment"
    data = read_scene_data(root)
    assert data.classes == ["object"] and not data.problems and all(it.labels.tolist() == [0] for it in data.items)
    for it in data.items:
        mask = decode_scene(it, 80).masks[0].numpy().astype(bool)
        assert (mask == truth[it.image.stem]).mean() > 0.98
    for p in (root / "masks").iterdir():  # as 0/255 PNGs: the same
        Image.fromarray(np.where(np.asarray(Image.open(p).convert("L")) >= 128, 255, 0).astype(np.uint8)).save(
            p.with_suffix(".png"))
        p.unlink()
    assert task_name_for_data(RunConfig.from_options(str(root))) == "segment"
    assert read_scene_data(root).classes == ["object"]


def test_masks_found_beside_the_images_they_name(tmp_path):
    """Carvana's train/ beside train_masks/ of X_mask.gif (black and white palette, values 0/1) and ISIC's
    ..._Input/ beside ..._GroundTruth/ of X_segmentation.png: the image folder is the one the masks name. Face-mask
    photos in Mask/ beside Normal/, both numbered 0.jpg ..., stay classes."""
    from tests.scenes import draw
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    rng = np.random.default_rng(0)
    for name, images, masks, suffix in (("carvana", "train", "train_masks", "_mask.gif"),
                                        ("isic", "ISIC2018_Task1-2_Training_Input",
                                         "ISIC2018_Task1_Training_GroundTruth", "_segmentation.png")):
        root = tmp_path / name
        (root / images).mkdir(parents=True)
        (root / masks).mkdir()
        for i in range(3):
            image, instances, _ = draw(rng)
            Image.fromarray(image).save(root / images / f"{i:04d}.jpg")
            mask = Image.fromarray((instances > 0).astype(np.uint8), "P")
            mask.putpalette([0, 0, 0, 255, 255, 255])
            (mask if suffix.endswith(".gif") else mask.convert("L")).save(root / masks / f"{i:04d}{suffix}")
        assert task_name_for_data(RunConfig.from_options(str(root))) == "segment"
        data = read_scene_data(root)
        assert data.classes == ["object"] and len(data.items) == 3 and not data.problems
        assert all(it.image.parent.name == images and it.labels.tolist() == [0] for it in data.items)
    for folder in ("Mask", "Normal"):
        for i in range(3):
            _image(tmp_path / "faces" / folder / f"{i}.jpg", i)
    assert task_name_for_data(RunConfig.from_options(str(tmp_path / "faces"))) == "classify"


def test_labelimg_yolo_labels_beside_their_images(tmp_path):
    """LabelImg's YOLO mode: each image's .txt beside it and classes.txt with them, no images/ or labels/; captions
    in .txt files beside photos are no boxes."""
    from tests.scenes import write_yolo
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    made = write_yolo(tmp_path / "made")
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (made / "images").iterdir():
        f.rename(flat / f.name)
    for f in (made / "labels").iterdir():
        f.rename(flat / f.name)
    (flat / "classes.txt").write_text((made / "classes.txt").read_text())
    assert task_name_for_data(RunConfig.from_options(str(flat))) == "detect"
    data = read_scene_data(flat)
    assert data.format == "yolo" and data.classes == ["box"] and len(data.items) == 8 and not data.problems
    assert all(len(it.boxes) >= 1 for it in data.items)
    for f in flat.glob("*.txt"):
        if f.name != "classes.txt":
            f.write_text("a red box on a dark ground\n")
    assert sniff_format(flat) is None


def test_vgg_image_annotator_regions(tmp_path):
    """VIA's via_region_data.json in train/ and val/ (Mask R-CNN's balloon tutorial): polygons, rectangles and
    circles give boxes and outlines, a point none; classes from region attributes, `object` without any; VIA 1's
    numbered regions; a VIA project's `_via_img_metadata`."""
    import json

    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    polygon = {"name": "polygon", "all_points_x": [4, 30, 30, 4], "all_points_y": [6, 6, 40, 40]}
    rect = {"name": "rect", "x": 10, "y": 8, "width": 20, "height": 12}
    circle = {"name": "circle", "cx": 28, "cy": 24, "r": 10}
    for split in ("train", "val"):
        records = {}
        for i in range(3):
            _image(tmp_path / "balloon" / split / f"{i}.jpg", i)  # 56 x 48
            regions = [{"shape_attributes": polygon, "region_attributes": {}},
                       {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {}}]
            records[f"{i}.jpg1234"] = {"filename": f"{i}.jpg", "size": 1234, "regions": regions, "file_attributes": {}}
        (tmp_path / "balloon" / split / "via_region_data.json").write_text(json.dumps(records))
    root = tmp_path / "balloon"
    assert task_name_for_data(RunConfig.from_options(str(root))) == "detect"
    data = read_scene_data(root)
    assert data.format == "via" and data.classes == ["object"] and not data.problems
    assert sorted(it.split for it in data.items) == ["train"] * 3 + ["val"] * 3
    np.testing.assert_allclose(data.items[0].boxes, [[4, 6, 30, 40]])
    assert data.items[0].has_masks

    project = tmp_path / "project"
    for i in range(2):
        _image(project / f"{i}.jpg", i)
    regions = {"0": {"shape_attributes": rect, "region_attributes": {"name": "cat"}},  # VIA 1: numbered regions
               "1": {"shape_attributes": circle, "region_attributes": {"type": {"dog": True, "cat": False}}}}
    (project / "via_project.json").write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": {
        f"{i}.jpg99": {"filename": f"{i}.jpg", "size": 99, "regions": regions} for i in range(2)}}))
    data = read_scene_data(project)
    assert data.classes == ["cat", "dog"] and [it.labels.tolist() for it in data.items] == [[0, 1], [0, 1]]
    np.testing.assert_allclose(data.items[0].boxes, [[10, 8, 30, 20], [18, 14, 38, 34]], atol=0.01)


def test_a_box_table_is_detection_data(tmp_path):
    """TensorFlow's object-detection CSV (the raccoon set's original form): a row per box, one with no corners for
    an image with no object, corners in pixels or as fractions of the image."""
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    for i in range(3):
        _image(tmp_path / "images" / f"{i}.jpg", i)  # 56 x 48
    (tmp_path / "boxes.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "0.jpg,56,48,cat,4,4,24,24\n0.jpg,56,48,dog,30,10,50,40\n"
        "1.jpg,56,48,dog,0.25,0.5,0.75,1.0\n"
        "2.jpg,56,48,,,,,\n")
    for spec in (tmp_path / "boxes.csv", tmp_path):
        assert task_name_for_data(RunConfig.from_options(str(spec))) == "detect"
        data = read_scene_data(spec)
        assert data.classes == ["cat", "dog"] and data.problems == []
        by_name = {it.image.name: it for it in data.items}
        assert by_name["0.jpg"].labels.tolist() == [0, 1] and len(by_name["2.jpg"].boxes) == 0
        np.testing.assert_allclose(by_name["1.jpg"].boxes, [[14, 24, 42, 48]])
    (tmp_path / "boxes.csv").write_text("filename,class,xmin,ymin,xmax,ymax\n0.jpg,cat,4,4,x,24\n1.jpg,cat,1,1,9,9\n")
    data = read_scene_data(tmp_path / "boxes.csv")
    assert [it.image.name for it in data.items] == ["1.jpg"]
    assert "boxes.csv:2: box [" in data.problems[0][1] and "not four numbers" in data.problems[0][1]


def test_open_images_box_table(tmp_path):
    """Open Images' boxes as they ship: ImageID without an extension, LabelName as MIDs named by
    class-descriptions-boxable.csv, corners XMin, XMax, YMin, YMax as fractions (x and y apart)."""
    for i in range(2):
        _image(tmp_path / "train" / f"{i:04x}.jpg", i)  # 56 x 48
    (tmp_path / "class-descriptions-boxable.csv").write_text("/m/01yrx,Cat\n/m/0bt9lr,Dog\n")
    (tmp_path / "train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded\n"
        "0000,xclick,/m/01yrx,1,0.25,0.75,0.5,1.0,0\n0001,xclick,/m/0bt9lr,1,0.0,0.5,0.0,0.5,1\n")
    data = read_scene_data(tmp_path)
    assert data.format == "boxes" and data.classes == ["Cat", "Dog"] and not data.problems
    by_name = {it.image.name: it for it in data.items}
    np.testing.assert_allclose(by_name["0000.jpg"].boxes, [[14, 24, 42, 48]])
    assert by_name["0001.jpg"].labels.tolist() == [1]


def test_cocos_own_train_and_val_files_are_the_split(tmp_path):
    (tmp_path / "annotations").mkdir()
    for split, ids, cat in (("train", range(3), "cat"), ("val", range(3, 5), "cat")):
        images = []
        for i in ids:
            _image(tmp_path / f"{split}2017" / f"{i}.jpg", i)
            images.append({"id": i, "file_name": f"{i}.jpg", "width": 56, "height": 48})
        anns = [{"id": i, "image_id": i, "category_id": 3, "bbox": [4, 4, 20, 20]} for i in ids]
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 3, "name": cat}]}))
    data = read_scene_data(tmp_path)
    assert data.classes == ["cat"] and data.problems == []
    assert sorted((it.split, it.image.parent.name) for it in data.items) == [("train", "train2017")] * 3 + [
        ("val", "val2017")] * 2


def test_vocs_own_image_sets_are_the_split(tmp_path):
    from tests.scenes import write_voc
    root = write_voc(tmp_path / "VOC2012", n=6)
    assert {it.split for it in read_scene_data(root).items} == {""}  # no lists: a seeded split, drawn later
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("im0\nim1\nim2\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("im3\nim4\n")
    (root / "ImageSets" / "Main" / "box_train.txt").write_text("im0  1\nim5 -1\n")  # per-class lists: not a split
    splits = {it.image.stem: it.split for it in read_scene_data(root).items}
    assert splits == {"im0": "train", "im1": "train", "im2": "train", "im3": "val", "im4": "val", "im5": "unused"}


def test_roboflow_yolo_export_names_its_classes_beside_the_splits(tmp_path):
    """train/images + train/labels, valid/..., test/..., and one data.yaml at the top."""
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        for i in range(n):
            _image(tmp_path / split / "images" / f"{i}.jpg", i)
            (tmp_path / split / "labels").mkdir(exist_ok=True)
            (tmp_path / split / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['thing']\n")
    data = read_scene_data(tmp_path)
    assert data.classes == ["thing"] and sorted(it.split for it in data.items) == ["train"] * 3 + ["val"] * 2


def test_a_table_in_each_split_folder(tmp_path):
    """Roboflow's classification export: train/ and valid/, each with its loose images and a one-hot
    _classes.csv (header cells with a leading space)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("valid", 4)):
        (tmp_path / split).mkdir()
        rows = ["filename, blue, red"]
        for i in range(n):
            colour = ("blue", "red")[i % 2]
            make_image(COLOURS[colour], rng).save(tmp_path / split / f"{i}_jpg.rf.{i:08x}.jpg")
            rows.append(f"{i}_jpg.rf.{i:08x}.jpg, {int(colour == 'blue')}, {int(colour == 'red')}")
        (tmp_path / split / "_classes.csv").write_text("\n".join(rows) + "\n")
    ds = discover(str(tmp_path))
    assert ds.classes == ["blue", "red"] and (len(ds.train), len(ds.val)) == (8, 4) and ds.explicit_split
    assert all(Path(s.path).parent.name == "valid" for s in ds.val)


def test_split_folders_are_never_taken_for_classes(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        for i in range(3):
            _image(tmp_path / split / f"{i:05x}.jpg", i)  # names that carry no class, and no table
    with pytest.raises(TunevisionError, match="are splits, not classes"):
        discover(str(tmp_path))


def test_split_folders_inside_each_class_folder(tmp_path):
    """cats/train/, cats/test/, dogs/train/, dogs/test/: the split each class folder gives."""
    rng = np.random.default_rng(0)
    for c in ("blue", "red"):
        for split, n in (("train", 4), ("test", 2)):
            (tmp_path / c / split).mkdir(parents=True)
            for i in range(n):
                make_image(COLOURS[c], rng).save(tmp_path / c / split / f"{i}.jpg")
    ds = discover(str(tmp_path))
    assert ds.classes == ["blue", "red"] and (len(ds.train), len(ds.val)) == (8, 4) and ds.explicit_split
    assert all(Path(s.path).parent.name == "test" for s in ds.val)
    make_image(COLOURS["red"], rng).save(tmp_path / "red" / "loose.jpg")  # an image in no split: a seeded split
    assert not discover(str(tmp_path)).explicit_split


def _oxford_pet(root: Path, boxes_for_all: bool = False) -> Path:
    """Oxford-IIIT Pet as it unpacks: images/Breed_N.jpg (a stray .mat among them) beside annotations/ with
    list files naming the split (`Breed_N classid species breedid`), trimaps/ (PNG: images too) and head boxes in
    xmls/ for the trainval photos alone."""
    pet = root / "oxford-iiit-pet"
    rng = np.random.default_rng(0)
    for d in ("images", "annotations/trimaps", "annotations/xmls"):
        (pet / d).mkdir(parents=True)
    trainval, test = [], []
    for k, (breed, colour) in enumerate((("Abyssinian", "blue"), ("american_bulldog", "red")), 1):
        for i in range(1, 7):
            stem = f"{breed}_{i}"
            make_image(COLOURS[colour], rng).save(pet / "images" / f"{stem}.jpg")
            Image.fromarray(np.full((40, 48), 2, np.uint8)).save(pet / "annotations" / "trimaps" / f"{stem}.png")
            if i == 6:
                continue  # in no list, as some of the real set's photos
            (trainval if i <= 3 else test).append(f"{stem} {k} {k} 1")
            if i <= 3 or boxes_for_all:
                (pet / "annotations" / "xmls" / f"{stem}.xml").write_text(
                    f"<annotation><filename>{stem}.jpg</filename><size><width>48</width><height>40</height>"
                    f"<depth>3</depth></size><object><name>{'cat' if k == 1 else 'dog'}</name><bndbox><xmin>4"
                    "</xmin><ymin>4</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>")
    (pet / "images" / "Abyssinian_100.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    (pet / "annotations" / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n" + "\n".join(trainval + test))
    (pet / "annotations" / "trainval.txt").write_text("\n".join(trainval) + "\n")
    (pet / "annotations" / "test.txt").write_text("\n".join(test) + "\n")
    return pet


def test_oxford_pet_classes_from_names_split_from_its_lists(tmp_path):
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    pet = _oxford_pet(tmp_path)
    for spec in (tmp_path, pet, pet / "images"):  # the download, the data, or its images/ as fastai's lesson does
        ds = discover(str(spec))
        assert ds.classes == ["Abyssinian", "american_bulldog"] and ds.explicit_split  # not annotations/images
        assert sorted(Path(s.path).stem for s in ds.train) == [f"{b}_{i}" for b in ds.classes for i in (1, 2, 3)]
        assert sorted(Path(s.path).stem for s in ds.val) == [f"{b}_{i}" for b in ds.classes for i in (4, 5)]
        assert all(Path(s.path).parent.name == "images" for s in ds.train + ds.val)  # no trimap is a photo
        assert sorted(Path(s.path).stem for s in ds.skipped) == ["Abyssinian_6", "american_bulldog_6"]
        assert "trainval.txt and test.txt" in ds.layout
        # head boxes for half the photos: the names' breeds are what a user means; boxes only when asked for
        assert task_name_for_data(RunConfig.from_options(str(spec))) == "classify"
    assert task_name_for_data(RunConfig.from_options(str(pet), task="detect")) == "detect"
    assert read_scene_data(pet).classes == ["cat", "dog"]


def test_boxes_for_every_named_image_are_detection_data(tmp_path):
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    pet = _oxford_pet(tmp_path, boxes_for_all=True)
    for f in (pet / "images").glob("*_6.jpg"):
        f.unlink()  # every photo left has its box
    assert task_name_for_data(RunConfig.from_options(str(pet))) == "detect"


def test_split_lists_by_name(tmp_path):
    from tunevision.data.layout import listed_splits
    files = [f"/d/im{i}.jpg" for i in range(6)]

    def write(name: str, text: str) -> Path:
        (tmp_path / name).write_text(text)
        return tmp_path / name
    trainval = write("trainval.txt", "# header\nim0 1\nim1.jpg 2\nim2\n")  # names with and without extension
    assert listed_splits({"train": trainval, "test": write("test.txt", "im3\nim4\n")}, files) == [
        "train", "train", "train", "val", "val", "unused"]
    assert listed_splits({"train": trainval, "test": write("test.txt", "other\n")}, files) is None  # none held out
    assert listed_splits({"train": trainval}, files) is None  # a training list alone names no split
    # lists that name fewer than half the images are no split of them
    assert listed_splits({"train": write("train.txt", "im0\n"), "val": write("val.txt", "im1\n")}, files) is None


def test_vocs_trainval_and_test_lists_are_the_split(tmp_path):
    from tests.scenes import write_voc
    from tunevision.data.layout import split_lists
    root = write_voc(tmp_path / "VOC2007", n=6)
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("im0\nim1\nim2\nim3\n")
    (main / "test.txt").write_text("im4\nim5\n")
    assert {it.image.stem: it.split for it in read_scene_data(root).items} == {
        "im0": "train", "im1": "train", "im2": "train", "im3": "train", "im4": "val", "im5": "val"}
    (main / "train.txt").write_text("im0\nim1\n")
    (main / "val.txt").write_text("im2\nim3\n")
    assert split_lists(main)["train"].name == "train.txt"  # train.txt wins over trainval.txt, which holds val too
    assert {it.image.stem: it.split for it in read_scene_data(root).items} == {
        "im0": "train", "im1": "train", "im2": "val", "im3": "val", "im4": "unused", "im5": "unused"}


def _photos_and_table(images: Path, table: Path, header: str, n: int, name, cells) -> None:
    """n photos, blue and red in turn, named `name(i)` in `images`, and a table beside them: a row per photo, its
    name (no extension) then `cells(i)`."""
    rng = np.random.default_rng(0)
    images.mkdir(parents=True)
    for i in range(n):
        make_image(COLOURS[("blue", "red")[i % 2]], rng).save(images / f"{name(i)}.jpg")
    table.write_text("\n".join([header] + [f"{name(i)},{cells(i)}" for i in range(n)]) + "\n")


def test_the_column_named_label_among_other_facts(tmp_path):
    """The clothing dataset's images.csv: `image,sender_id,label,kids`, names without an extension; the sender ids
    and the 0/1 kids column are facts about the photo, not its classes (they were read as one-hot labels)."""
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    _photos_and_table(tmp_path / "images_original", tmp_path / "images.csv", "image,sender_id,label,kids", 12,
                      lambda i: f"4285fab0-{i:04d}",
                      lambda i: f"{100 + i % 5},{('T-Shirt', 'Shoes')[i % 2]},{'True' if i % 3 else 'False'}")
    assert task_name_for_data(RunConfig.from_options(str(tmp_path))) == "classify"
    ds = discover(str(tmp_path))
    assert ds.classes == ["Shoes", "T-Shirt"] and not ds.multilabel and len(ds.train) + len(ds.val) == 12


def test_image_ids_without_extension_spread_over_two_folders(tmp_path):
    """HAM10000: its metadata's image_id (no extension) after a lesion_id, the diagnosis in `dx`, the photos split
    over HAM10000_images_part_1/ and part_2/."""
    rng = np.random.default_rng(0)
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i in range(12):
        part = tmp_path / f"HAM10000_images_part_{i % 2 + 1}"
        part.mkdir(exist_ok=True)
        make_image(COLOURS["blue" if i < 6 else "red"], rng).save(part / f"ISIC_{i:07d}.jpg")
        rows.append(f"HAM_{i // 2:07d},ISIC_{i:07d},{'nv' if i < 6 else 'mel'},histo,45.0,male,back")
    (tmp_path / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    ds = discover(str(tmp_path))
    assert ds.classes == ["mel", "nv"] and ds.skipped == []
    assert all(Path(s.path).is_file() and (ds.classes[s.label] == "nv") == (int(Path(s.path).stem[5:]) < 6)
               for s in ds.train + ds.val)


def test_split_folders_named_with_more_words_and_wrapped_again(tmp_path):
    """Kaggle's cat-and-dog (training_set/training_set/<class>/, test_set/test_set/<class>/) and Intel's scenes
    (seg_train/seg_train/, seg_test/seg_test/, an unlabelled seg_pred/seg_pred/): trained on the classes
    'training_set' and 'test_set' before."""
    from tunevision.data.layout import split_role
    for split, n in (("training_set", 6), ("test_set", 3)):
        make_class_folders(tmp_path / "cd" / split / split, n=n)
    for split, n in (("seg_train", 6), ("seg_test", 3), ("seg_pred", 2)):
        make_class_folders(tmp_path / "intel" / split / split, n=n)
    for name in ("cd", "intel"):
        ds = discover(str(tmp_path / name))
        assert ds.classes == ["blue", "red"] and ds.explicit_split and (len(ds.train), len(ds.val)) == (12, 6)
    assert [split_role(n) for n in ("train2017", "TEST_SET", "dataset-val", "test_tube", "seg_pred", "trainval")] == [
        "train", "test", "val", "", "", ""]


def test_food101_meta_lists_split_its_class_folders(tmp_path):
    """food-101/images/<class>/<id>.jpg beside meta/train.txt and meta/test.txt (`class/id` lines); the same file
    name in two classes is told apart by its class folder."""
    root = tmp_path / "food-101"
    make_class_folders(root / "images", n=6)  # blue/blue_000.jpg ..., red/red_000.png ...
    for f in (root / "images").rglob("*_00[0-5].*"):
        f.rename(f.with_name(f.name.split("_")[1]))  # 000.jpg in both classes
    (root / "meta").mkdir()
    (root / "meta" / "train.txt").write_text("".join(f"{c}/{i:03d}\n" for c in ("blue", "red") for i in range(4)))
    (root / "meta" / "test.txt").write_text("blue/004\nblue/005\nred/004\n")
    ds = discover(str(tmp_path))
    assert ds.classes == ["blue", "red"] and ds.explicit_split and "train.txt and test.txt in meta/" in ds.layout
    assert sorted(f"{ds.classes[s.label]}/{Path(s.path).stem}" for s in ds.val) == ["blue/004", "blue/005", "red/004"]
    assert len(ds.train) == 8 and [Path(s.path).name for s in ds.skipped] == ["005.png"]


def test_box_tables_of_a_corner_and_a_size(tmp_path):
    """Global Wheat's train.csv (`image_id,width,height,bbox,source`, the box a COCO-style [x, y, w, h] list in one
    cell, ids without an extension, the images in train/) and a table of x,y,w,h columns."""
    from tunevision.core.config import RunConfig
    from tunevision.data.discover import task_name_for_data
    for i in range(2):
        _image(tmp_path / "wheat" / "train" / f"b6ab77fd{i}.jpg", i)  # 56 x 48
    (tmp_path / "wheat" / "train.csv").write_text(
        'image_id,width,height,bbox,source\n'
        'b6ab77fd0,56,48,"[4.0, 6.0, 20.0, 10.0]",usask_1\n'
        'b6ab77fd0,56,48,"[30.0, 20.0, 8.0, 8.0]",usask_1\n'
        'b6ab77fd1,56,48,"[1.0, 2.0, 3.0, 4.0]",arvalis_1\n')
    assert task_name_for_data(RunConfig.from_options(str(tmp_path / "wheat"))) == "detect"
    data = read_scene_data(tmp_path / "wheat")
    assert data.problems == [] and data.classes == ["object"]
    by_name = {it.image.name: it.boxes.tolist() for it in data.items}
    assert by_name == {"b6ab77fd0.jpg": [[4, 6, 24, 16], [30, 20, 38, 28]], "b6ab77fd1.jpg": [[1, 2, 4, 6]]}
    _image(tmp_path / "xywh" / "0.jpg", 0)
    (tmp_path / "xywh" / "boxes.csv").write_text("file,label,x,y,w,h\n0.jpg,cat,4,4,10,20\n")
    assert read_scene_data(tmp_path / "xywh").items[0].boxes.tolist() == [[4, 4, 14, 24]]


def test_label_column_chooses_among_several(tmp_path):
    """Fashion products' styles.csv: `id,gender,masterCategory,articleType,...`, ids without an extension in
    images/. By content the first repeating column (gender) is the label; --label-column picks another, by name
    or number, an unknown one is one line listing the columns, and evaluate reads the column the model trained on."""
    import tunevision as tv
    work, tmp_path = tmp_path, tmp_path / "fashion"
    _photos_and_table(tmp_path / "images", tmp_path / "styles.csv", "id,gender,masterCategory,articleType", 24,
                      lambda i: str(15970 + i), lambda i: f"{('Men', 'Women', 'Boys')[i % 3]},Apparel,"
                                                          f"{('Shirts', 'Jeans')[i % 2]}")
    assert discover(str(tmp_path)).classes == ["Boys", "Men", "Women"]
    for column in ("articleType", "ARTICLETYPE", "4"):
        assert discover(str(tmp_path), label_column=column).classes == ["Jeans", "Shirts"]
    with pytest.raises(TunevisionError, match=r"styles\.csv: no column 'colour' .*id, gender, masterCategory"):
        discover(str(tmp_path / "styles.csv"), label_column="colour")
    model = tv.fit(str(tmp_path), label_column="articleType", backbone="tiny_cnn", pretrained=False, epochs=1,
                   device="cpu", cache_dir=str(work / "c"), out=str(work / "runs"), quiet=True, audit=False)
    assert model.classes == ["Jeans", "Shirts"]
    assert model.evaluate(str(tmp_path)).classes == ["Jeans", "Shirts"]


def test_runs_written_inside_the_data_folder_are_no_class(tmp_path, monkeypatch):
    """`cd data && tunevision train .` twice: the second run learnt a class "runs" from the first run's report
    pictures. A run, audit or bundle folder (and a folder of them) is never data."""
    import tunevision as tv
    make_class_folders(tmp_path / "data", n=6)
    monkeypatch.chdir(tmp_path / "data")
    for _ in range(2):
        model = tv.fit(".", backbone="tiny_cnn", pretrained=False, epochs=1, device="cpu",
                       cache_dir=str(tmp_path / "c"), quiet=True, audit=False)
        assert model.classes == ["blue", "red"]
    assert len(list((tmp_path / "data" / "runs").iterdir())) == 2
    model.save(tmp_path / "data" / "bundle")
    ds = discover(".")
    assert ds.classes == ["blue", "red"]
    assert sorted((Path(s.path).name, "written by tunevision" in s.reason) for s in ds.skipped) == [
        ("bundle", True), ("runs", True)]


def test_a_coco_category_no_box_uses_is_no_class(tmp_path):
    """Roboflow's COCO export lists the dataset as category 0 ("boxes", the supercategory of "box"): it made a
    second, empty class for the detector."""
    from tests.scenes import write_coco
    root = write_coco(tmp_path / "train", n=4)
    coco = json.loads((root / "annotations.json").read_text())
    coco["categories"].insert(0, {"id": 0, "name": "boxes", "supercategory": "none"})
    (root / "annotations.json").write_text(json.dumps(coco))
    data = read_scene_data(root)
    assert data.classes == ["box"] and data.problems == []
    assert {int(k) for it in data.items for k in it.labels} == {0}
