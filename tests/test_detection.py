"""Detection and segmentation end to end on tiny synthetic sets: train -> run folder -> predict -> export -> serve.
Lite0 with random weights at 64-96 px keeps each run to seconds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import tunevision as tv
from tests.scenes import write_coco, write_labelme, write_masks, write_voc
from tunevision.cli.main import main
from tunevision.core.config import RunConfig
from tunevision.tasks import task_name_for_data as resolve_task

FAST = dict(epochs=2, image_size=64, pretrained=False, val_fraction=0.25, device="cpu")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("det")
    data = write_voc(root / "boxes", n=8)
    return data, tv.fit(str(data), out=str(root / "runs"), quiet=True, **FAST)


def test_task_comes_from_the_data(tmp_path: Path, colour_folders: Path) -> None:
    assert resolve_task(RunConfig.from_options(str(write_voc(tmp_path / "v", n=1)))) == "detect"
    assert resolve_task(RunConfig.from_options(str(colour_folders))) == "classify"
    assert resolve_task(RunConfig.from_options(str(colour_folders), task="segment")) == "segment"


def test_fit_writes_a_detection_run_folder_and_returns_a_model_that_predicts_boxes(detector) -> None:
    data, model = detector
    run = model.run_dir
    assert run.name.startswith("boxes-detect-")
    for name in ("config.yaml", "metrics.csv", "summary.json", "report.html", "split.csv", "skipped.csv",
                 "eval/metrics.json", "model/model.safetensors", "model/model.json", "report/pr_curves.png",
                 "report/val_images.jpg"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["val_images"] == 2 and 0 <= summary["map_50"] <= 1
    audited = json.loads((run / "audit" / "audit.json").read_text())  # the data audit, as a classifier's run has
    assert audited["images"] == 8 and "Data audit" in (run / "report.html").read_text()
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["task"] == "detect" and meta["classes"] == ["box"] and meta["extra"]["spec"]["arch"] == "fasterrcnn"
    found = model.predict(str(data / "images" / "im0.jpg"), threshold=0.0)
    assert found.detections and all(0 <= d.score <= 1 and len(d.box) == 4 for d in found.detections)
    assert found.plot().size == (96, 80)
    assert len(model.predict([str(data / "images")])) == 8


def test_report_is_rewritten_for_a_detection_run(detector) -> None:
    _, model = detector
    (model.run_dir / "report.html").unlink()
    r = CliRunner().invoke(main, ["report", str(model.run_dir)])
    assert r.exit_code == 0, r.output
    page = (model.run_dir / "report.html").read_text()
    assert "precision-recall" in page and "mAP@0.5" in page


def test_load_and_evaluate_score_the_held_out_split(detector) -> None:
    data, model = detector
    again = tv.load(model.run_dir, device="cpu")
    assert type(again).__name__ == "SceneModel" and again.classes == ["box"] and len(again.history) == 2
    scores = again.evaluate(data)
    assert scores.map_50 == pytest.approx(model.scores.map_50, abs=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_boxes_and_scores(detector, fmt: str, tmp_path: Path) -> None:
    _, model = detector
    done = model.export(fmt, tmp_path)
    assert done.path.is_file() and done.parity.ok and done.parity.compared > 0
    assert json.loads((tmp_path / f"parity-{fmt}.json").read_text())["matched"] == done.parity.compared


def test_cli_predict_draws_boxes_and_writes_json(detector, tmp_path: Path) -> None:
    data, model = detector
    out = tmp_path / "pred"
    r = CliRunner().invoke(main, ["predict", str(model.run_dir), str(data / "images" / "im1.jpg"), "--threshold",
                                  "0", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert rows[0]["detections"] and Path(rows[0]["output"]).is_file()
    assert json.loads((out / "predictions.json").read_text()) == rows


def test_serve_returns_boxes(detector) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from tunevision.serve.app import create_app
    data, model = detector
    expected = model.predict(str(data / "images" / "im0.jpg"), threshold=0.0).to_dict()["detections"]
    with TestClient(create_app(str(model.run_dir), threshold=0.0)) as client:
        assert client.get("/health").json()["task"] == "detect"
        r = client.post("/predict", files={"files": ("a.jpg", (data / "images" / "im0.jpg").read_bytes(),
                                                     "image/jpeg")})
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["filename"] == "a.jpg" and pred["detections"] == expected and len(expected[0]["box"]) == 4


def test_segmentation_trains_predicts_masks_and_exports(tmp_path: Path) -> None:
    data = write_masks(tmp_path / "people", n=8)
    model = tv.fit(str(data), task="segment", out=str(tmp_path / "runs"), quiet=True, **FAST)
    assert model.task == "segment" and model.run_dir.name.startswith("people-segment-")
    assert 0 <= model.scores.miou <= 1 and set(model.scores.per_class_iou) == {"background", "object"}
    pred = model.predict(str(data / "PNGImages" / "im0.png"))
    assert pred.mask.shape == (80, 96) and set(pred.to_dict()["pixel_fractions"]) <= {"background", "object"}
    assert model.export("onnx", tmp_path / "x").parity.ok


def test_segmenters_and_mask_rcnn_train_on_polygon_outlines(tmp_path: Path) -> None:
    data = write_coco(tmp_path / "coco", n=8, outlines=True)
    model = tv.fit(str(data), task="segment", out=str(tmp_path / "runs"), quiet=True, **FAST)
    assert model.task == "segment" and 0 <= model.scores.miou <= 1
    assert 0 <= model.evaluate(str(data)).miou <= 1
    shapes = write_labelme(tmp_path / "labelme", n=6)
    pred = tv.fit(str(shapes), arch="maskrcnn", out=str(tmp_path / "runs"), quiet=True, **FAST).predict(
        str(shapes / "images" / "im0.jpg"), threshold=0.0)
    assert pred.mask is not None and pred.mask.shape == (80, 96)


def test_segment_on_box_only_data_is_refused_before_training(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=4)
    with pytest.raises(tv.TunevisionError, match="--task segment needs masks"):
        tv.fit(str(data), task="segment", out=str(tmp_path / "runs"), quiet=True, **FAST)
    assert not any((tmp_path / "runs").glob("*/metrics.csv"))


def test_cli_train_lists_bad_annotations_and_trains_on_the_rest(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=6)
    (data / "annotations" / "im0.xml").write_text("not xml")
    r = CliRunner().invoke(main, ["train", str(data), "--epochs", "1", "--image-size", "64", "--no-pretrained",
                                  "--val-fraction", "0.25", "--out", str(tmp_path / "runs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "left out" in r.output and "im0.xml: unreadable VOC XML" in r.output
    assert "5 boxes" not in r.output and "4 train / 1 val images" in r.output


def test_a_hub_detector_takes_a_local_coco_state_dict_and_gets_a_head_for_our_classes(tmp_path: Path) -> None:
    import torch
    import torchvision
    from tunevision.models.detectors import SceneSpec, create_scene_model
    coco = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None,
                                        num_classes=91)
    torch.save(coco.state_dict(), tmp_path / "coco.pth")
    spec = SceneSpec("fasterrcnn_mobilenet_v3_large_320_fpn", "", 2, 160, 266)
    model = create_scene_model("detect", spec, weights=str(tmp_path / "coco.pth"))
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    torch.testing.assert_close(model.backbone.body["0"][0].weight, coco.backbone.body["0"][0].weight)
    assert model.transform.min_size == (160,)


def test_cli_evaluate_prints_map_for_a_detector(detector) -> None:
    data, model = detector
    r = CliRunner().invoke(main, ["evaluate", str(model.run_dir), str(data), "--device", "cpu", "--out",
                                  str(data.parent / "ev")])
    assert r.exit_code == 0, r.output
    assert "mAP@0.5" in r.output and "box" in r.output
    assert (data.parent / "ev" / "pr_curves.png").is_file()
    assert "map_50" in json.loads((data.parent / "ev" / "metrics.json").read_text())


def test_a_killed_detection_run_resumes_from_its_last_epoch(tmp_path: Path, monkeypatch) -> None:
    import tunevision.scene.train as st
    from tunevision.tasks import fit
    data = write_voc(tmp_path / "v", n=6)
    real, calls = st.train_scene_epoch, []

    def dies_in_epoch_two(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(st, "train_scene_epoch", dies_in_epoch_two)
    cfg = RunConfig.from_options(str(data), out=str(tmp_path / "runs"), **{**FAST, "epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    run = next((tmp_path / "runs").iterdir())
    assert (run / "checkpoint.pt").is_file() and len((run / "metrics.csv").read_text().splitlines()) == 2
    result = fit(RunConfig.load(run / "config.yaml"), resume_dir=run)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"] and len(calls) == 4
    assert result.run_dir == run and (run / "summary.json").is_file()


def test_mask_rcnn_on_a_masks_folder_predicts_boxes_and_an_instance_mask(tmp_path: Path) -> None:
    data = write_masks(tmp_path / "people", n=6)
    model = tv.fit(str(data), arch="maskrcnn", out=str(tmp_path / "runs"), quiet=True, **FAST)
    pred = model.predict(str(data / "PNGImages" / "im0.png"), threshold=0.0)
    assert pred.detections and pred.mask is not None and pred.mask.shape == (80, 96)
    row = pred.to_dict()
    assert "detections" in row and "pixel_fractions" in row
    with pytest.raises(tv.TunevisionError, match="--arch maskrcnn needs masks"):
        tv.fit(str(write_voc(tmp_path / "v", n=4)), arch="maskrcnn", out=str(tmp_path / "runs"), quiet=True, **FAST)


@pytest.mark.parametrize("arch", ["fpn", "lraspp"])
def test_segmenters_give_full_size_logits_and_train_only_past_the_early_stages(arch: str) -> None:
    import torch
    from tunevision.models.detectors import SceneSpec, create_scene_model
    model = create_scene_model("segment", SceneSpec(arch, "efficientnet_lite0", 2, 64, 106), pretrained=False)
    assert model(torch.rand(2, 3, 64, 80)).shape == (2, 3, 64, 80)
    trunk = model.trunk if arch == "lraspp" else model.pyramid.trunk
    assert not any(p.requires_grad for m in (trunk.stem, *trunk.blocks[:2]) for p in m.parameters())
    assert all(p.requires_grad for p in trunk.blocks[2].parameters())


def test_class_maps_train_a_segmenter_of_their_classes(tmp_path: Path) -> None:
    from tests.scenes import write_class_masks
    data = write_class_masks(tmp_path / "pets", n=8)
    model = tv.fit(str(data), out=str(tmp_path / "runs"), quiet=True, **FAST)  # auto: class maps -> segment
    assert model.task == "segment" and set(model.scores.per_class_iou) == {"background", "cat", "dog"}
    assert set(model.predict(str(data / "images" / "im0.jpg")).to_dict()["pixel_fractions"]) <= {
        "background", "cat", "dog"}


def test_the_audit_of_boxes_and_masks_reads_the_photos_in_the_runs_split(tmp_path: Path) -> None:
    """`tunevision audit` on detection or segmentation data audits its photos (never the masks beside them), each
    labelled with its objects' classes, split as a detector's run splits them: a photo filed twice is found."""
    import shutil

    from tunevision.classify.audit import audit
    data = write_masks(tmp_path / "people", n=8)
    shutil.copy(data / "PNGImages" / "im0.png", data / "PNGImages" / "im8.png")
    shutil.copy(data / "PedMasks" / "im0_mask.png", data / "PedMasks" / "im8_mask.png")
    result = audit(RunConfig.from_options(str(data), cache_dir=str(tmp_path / "c")), out=tmp_path / "audit")
    assert result.summary["images"] == 9 and all("PNGImages" in r["path"] for r in result.rows)
    pairs = {frozenset((r["path"], r["other"])) for r in result.rows if r["issue"] in ("duplicate", "leakage")}
    assert frozenset((str(data / "PNGImages" / "im0.png"), str(data / "PNGImages" / "im8.png"))) in pairs
    fixes = tmp_path / "fixes.csv"  # the user's decision on the pair: drop the copy
    fixes.write_text(f"path,issue,action\n{data / 'PNGImages' / 'im8.png'},duplicate,drop\n")
    run = tv.fit(str(data), out=str(tmp_path / "runs"), quiet=True, audit=False, fixes=str(fixes), **FAST)
    assert not (run.run_dir / "audit").exists() and (run.run_dir / "fixes.csv").is_file()
    split = (run.run_dir / "split.csv").read_text()
    assert "im0.png" in split and "im8.png" not in split
    fixes.write_text("path,issue,action\nPNGImages/im1.png,label,relabel:person\n")
    with pytest.raises(tv.TunevisionError, match="line 2: 'relabel:person'; images with boxes or masks take keep"):
        tv.fit(str(data), out=str(tmp_path / "runs"), quiet=True, audit=False, fixes=str(fixes), **FAST)
