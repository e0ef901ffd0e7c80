"""The forward path for frozen features is chosen by measurement, remembered per machine, exact where it must be,
and gives the same features as torch fp32."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tunevision.classify import reader
from tunevision.classify.prepare import prepare_data
from tunevision.core.config import RunConfig
from tunevision.core.runtime import Runtime
from tunevision.core.ui import RunLog
from tunevision.engine import forward
from tunevision.engine.forward import ForwardPath, PathChooser, candidates, choose, onnx_forward
from tunevision.models.backbones import build_classifier, create_backbone

CPU = Runtime(torch.device("cpu"), False)


def _path(name: str, batch: int, exact: bool, calls: list[str] | None = None) -> ForwardPath:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(name)
        return x.mean(dim=(2, 3))
    return ForwardPath(name, batch, exact, forward, CPU)


def test_choose_times_each_candidate_on_the_sample() -> None:
    calls: list[str] = []
    paths = [_path("fast", 8, False, calls), _path("exact", 8, True, calls)]
    fastest, rates = choose(paths, torch.rand(16, 3, 8, 8))
    assert set(rates) == {"fast x8", "exact x8"} and fastest is max(paths, key=lambda p: rates[p.label])
    assert calls.count("fast") == calls.count("exact") == 1 + 2  # a warm-up batch, then the sample's two batches


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"machine": {"fast x8": "quick"}}', '{"machine": 3}'])
def test_a_damaged_memo_is_timed_again_and_rewritten(tmp_path: Path, text: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "WARMUP", 0)
    monkeypatch.setattr(forward, "MIN_TIMED", 1)
    memo = tmp_path / "paths.json"
    memo.write_text(text)
    chooser = PathChooser([_path("fast", 8, False), _path("exact", 8, True)], memo, "machine")
    assert not chooser.settled
    for _ in range(2):
        path = chooser.pick(exact=False)
        chooser.timed(path)(torch.rand(8, 3, 4, 4))
        chooser.settle()
    assert chooser.settled and set(json.loads(memo.read_text())["machine"]) == {"fast x8", "exact x8"}


def test_candidates_on_a_gpu_are_torch_only() -> None:
    rt = Runtime(torch.device("cuda"), True)
    paths = candidates(lambda x: x, rt, onnx=lambda: pytest.fail("no ONNX Runtime on a GPU"))
    assert [(p.name, p.exact) for p in paths] == [("torch bf16", False)]


def test_candidates_without_onnxruntime_time_torch_fp32() -> None:
    paths = candidates(lambda x: x, Runtime(torch.device("cpu"), True), onnx=lambda: None)
    assert {p.name for p in paths} == {"torch bf16", "torch fp32"}
    assert all(p.exact == (p.name == "torch fp32") for p in paths)


def test_onnx_features_match_torch_fp32_even_from_a_model_in_training_mode(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 3).train()  # requires_grad weights
    forward = onnx_forward(model, model.forward_features, 32, tmp_path / "f.onnx")
    assert forward is not None and (tmp_path / "f.onnx").is_file()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        want = model.eval().forward_features(x)
    assert torch.allclose(forward(x.contiguous(memory_format=torch.channels_last)), want, atol=1e-5)
    # the file is reused, not exported again; a damaged one is deleted and the path skipped
    (tmp_path / "f.onnx").write_bytes(b"not onnx")
    assert onnx_forward(model, model.forward_features, 32, tmp_path / "f.onnx") is None
    assert not (tmp_path / "f.onnx").exists()


def test_the_chooser_times_each_candidate_on_the_work_then_keeps_to_the_fastest(tmp_path: Path) -> None:
    calls: list[str] = []
    plain, fast = _path("slow", 8, True, calls), _path("fast", 8, False, calls)

    def sleepy(x: torch.Tensor) -> torch.Tensor:  # 'slow' really is slower
        time.sleep(0.002)
        return plain.forward(x)
    slow = replace(plain, forward=sleepy)
    memo = tmp_path / "paths.json"
    chooser = PathChooser([slow, fast], memo, "machine")
    picked = []
    for _ in range(16):  # sixteen batches of 8 images, one forward call each
        path = chooser.pick(exact=False)
        picked.append(path.name)
        assert torch.equal(chooser.timed(path)(torch.ones(8, 3, 2, 2)), torch.ones(8, 3))  # the work is kept
        chooser.settle()
    warm, timed = forward.WARMUP, forward.MIN_TIMED // 8
    assert picked[:warm + timed] == ["slow"] * (warm + timed)  # in turn, each until it has a rate
    assert picked[warm + timed:2 * (warm + timed)] == ["fast"] * (warm + timed)
    assert set(picked[2 * (warm + timed):]) == {"fast"} and len(calls) == 16  # then the fastest; no call wasted
    assert chooser.pick(exact=True).name == "slow"  # exact work stays on an exact path, however slow
    rates = json.loads(memo.read_text())["machine"]
    assert set(rates) == {"slow x8", "fast x8"} and rates["fast x8"] > rates["slow x8"]
    # the next run believes the memo: nothing timed, the fastest from the first batch
    again = PathChooser([slow, fast], memo, "machine")
    assert again.settled and again.pick(exact=False).name == "fast"
    # another machine's entry does not answer for this one
    assert not PathChooser([slow, fast], memo, "other machine").settled


@pytest.mark.parametrize("bf16_rate, chosen", [(130.0, "ort"), (160.0, "bf16")])
def test_training_features_go_inexact_only_when_clearly_faster(bf16_rate: float, chosen: str) -> None:
    ort, bf16 = _path("ort", 16, True), _path("bf16", 8, False)
    chooser = PathChooser([bf16, ort], known={"ort x16": 100.0, "bf16 x8": bf16_rate})
    assert chooser.pick(exact=False).name == chosen and chooser.pick(exact=True).name == "ort"


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_without_an_exact_candidate_the_chooser_keeps_an_fp32_twin_for_validation(device: str) -> None:
    bf16 = ForwardPath("torch bf16", 64, False, lambda x: x, Runtime(torch.device(device), True))
    chooser = PathChooser([bf16])
    exact = chooser.pick(exact=True)
    assert exact.exact and exact.name == "torch fp32" and not exact.runtime.bf16
    assert chooser.pick(exact=False) is bf16


def test_reader_caches_each_view_under_its_paths_precision(tmp_path: Path, colour_folders: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "TIMED_FROM", 1)  # time the paths even on a few images
    monkeypatch.setattr(reader, "FEATURE_BATCH", 2)  # batches enough for every candidate on 24 images
    monkeypatch.setattr(forward, "WARMUP", 0)
    monkeypatch.setattr(forward, "MIN_TIMED", 1)
    cfg = RunConfig.from_dict({"data": {"data": str(colour_folders), "cache_dir": str(tmp_path / "cache"),
                                        "image_size": 32},
                               "model": {"backbone": "tiny_cnn", "pretrained": False}})
    log = RunLog(None, quiet=True)
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 2).eval()
    data = prepare_data(cfg, create_backbone("tiny_cnn", pretrained=False), log)
    rt = Runtime(torch.device("cpu"), True)
    view = lambda b, i: data.prep.batch(b)  # noqa: E731
    _, read = reader.feature_reader(model, data, cfg, rt, log, advance=lambda n: None)
    val = read(data.val_images, reader.VAL_EVAL, view)
    train = read(data.train_images, reader.TRAIN_EVAL, view)
    with torch.no_grad():
        want = model.forward_features(data.prep.batch(torch.from_numpy(np.array(data.val_images))))
    assert torch.allclose(val, want, atol=1e-5)  # validation always on an exact path
    memo = json.loads((tmp_path / "cache" / "forward_paths.json").read_text())
    assert any("torch bf16 x8" in rates for rates in memo.values())
    # a new reader finds both in the cache: nothing is timed or computed again
    monkeypatch.setattr(reader, "forward_paths", lambda *a: pytest.fail("cached features were recomputed"))
    _, read = reader.feature_reader(model, data, cfg, rt, log, advance=lambda n: None)
    assert torch.equal(read(data.val_images, reader.VAL_EVAL, view), val)
    assert torch.equal(read(data.train_images, reader.TRAIN_EVAL, view), train)


def test_inference_in_chunks_gives_the_same_probabilities() -> None:
    from tunevision.classify.inference import fastest_exact, predict_probs
    torch.manual_seed(0)
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 3).eval()
    images = np.random.default_rng(0).integers(0, 255, (40, 36, 36, 3), dtype=np.uint8)
    whole = predict_probs(model, images, CPU, 32)
    assert np.allclose(predict_probs(model, images, CPU, 32, chunk=8), whole, atol=1e-6)
    assert fastest_exact(model, images, CPU, 32) == (model, None)  # a small set is not worth timing
    many = np.repeat(images, 6, axis=0)
    network, chunk = fastest_exact(model, many, CPU, 32)
    assert chunk in (8, 16, 64) if network is model else chunk in (8, 16)
    # whichever path measured fastest, it is exact: the same probabilities as torch fp32 on whole batches
    assert np.allclose(predict_probs(network, many, CPU, 32, chunk=chunk), np.repeat(whole, 6, axis=0), atol=1e-5)


def test_evaluation_scores_on_onnx_runtime_when_it_measures_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunevision.classify import inference
    from tunevision.engine import forward
    torch.manual_seed(0)
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 3, multilabel=True).eval()
    images = np.random.default_rng(1).integers(0, 255, (240, 36, 36, 3), dtype=np.uint8)
    monkeypatch.setattr(forward, "images_per_second", lambda p, x: 100.0 if p.name.startswith("onnx") else 10.0)
    network, chunk = inference.fastest_exact(model, images, CPU, 32)
    assert isinstance(network, inference.PathNetwork) and network.multilabel and chunk in (8, 16)
    assert np.allclose(inference.predict_probs(network, images, CPU, 32, chunk=chunk),
                       inference.predict_probs(model, images, CPU, 32), atol=1e-5)


def test_the_feature_fingerprint_follows_the_normalisation_in_front_of_the_body() -> None:
    """`--normalize data` gives other features from the same weights: they must not share a cache entry, nor an
    ONNX graph (which carries the normalisation), with a run on the backbone's statistics."""
    backbone = create_backbone("tiny_cnn", pretrained=False)
    default = build_classifier(backbone, 2)
    assert reader.body_fingerprint(build_classifier(backbone, 5)) == reader.body_fingerprint(default)  # any head
    backbone.mean, backbone.std = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)
    assert reader.body_fingerprint(build_classifier(backbone, 2)) != reader.body_fingerprint(default)


def test_evaluation_runs_the_body_graph_its_training_run_exported(tmp_path: Path) -> None:
    from tunevision.classify.inference import on_body_graph, predict_probs
    torch.manual_seed(0)
    backbone = create_backbone("tiny_cnn", pretrained=False)
    model = build_classifier(backbone, 3).eval()
    assert on_body_graph(model, 32, CPU, tmp_path) is None  # nothing exported yet
    graph = reader.body_graph(tmp_path, reader.body_fingerprint(model), 32)
    graph.parent.mkdir(parents=True)
    onnx_forward(model, model.forward_features, 32, graph)  # what a training run's feature pass leaves
    network = on_body_graph(model, 32, CPU, tmp_path)
    assert on_body_graph(model, 32, Runtime(torch.device("cpu"), True), tmp_path) is None  # bf16 asked for: torch
    images = np.random.default_rng(2).integers(0, 255, (20, 36, 36, 3), dtype=np.uint8)
    assert np.allclose(predict_probs(network, images, CPU, 32, chunk=8), predict_probs(model, images, CPU, 32),
                       atol=1e-5)
    backbone.mean = (0.2, 0.2, 0.2)  # the same weights behind other statistics: not that graph
    assert on_body_graph(build_classifier(backbone, 3), 32, CPU, tmp_path) is None
    other = build_classifier(create_backbone("tiny_cnn", pretrained=False), 3).eval()
    onnx_forward(other, other.forward_features, 32, tmp_path / "other.onnx")
    (tmp_path / "other.onnx").replace(graph)  # another network's graph under this body's name: not believed
    assert on_body_graph(model, 32, CPU, tmp_path) is None


def test_predict_and_evaluate_find_the_graph_their_training_run_kept(tmp_path: Path, colour_folders: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import tunevision as tv
    from tunevision.classify import evaluate, inference, predict, serving
    from tunevision.classify import model as api_model
    from tunevision.classify.predict import model_source
    from tunevision.cli.main import main
    monkeypatch.setattr(reader, "TIMED_FROM", 1)  # the feature passes export the body even for 24 images
    cache = tmp_path / "cache"
    run = tv.fit(str(colour_folders), backbone="tiny_cnn", pretrained=False, cache_dir=str(cache),
                 out=str(tmp_path / "runs"), device="cpu", precision="fp32", mode="freeze", epochs=2, quiet=True)
    model = tv.load(run.run_dir)
    assert model.training_cache() == cache
    assert inference.on_body_graph(model.network, model.meta.image_size, CPU, cache) is not None
    used = []
    real = inference.on_body_graph
    for module in (inference, evaluate, predict, api_model):  # where on_body_graph is called from
        monkeypatch.setattr(module, "on_body_graph", lambda *a: used.append(real(*a)) or used[-1])
    assert model.evaluate(str(colour_folders)).accuracy == run.evaluation.accuracy and used
    r = CliRunner().invoke(main, ["predict", str(run.run_dir), str(colour_folders / "red"), "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.output)
    assert len(used) == 2 and all(isinstance(n, inference.PathNetwork) for n in used)  # both on the kept graph
    assert [p["top"][0]["label"] for p in printed] == [p.label for p in model.predict(str(colour_folders / "red"))]
    assert len(used) == 3 and model.predict_proba(str(colour_folders / "red")).shape == (12, 2)
    assert len(used) == 3  # the Python API found it once, and keeps it while the body is unchanged
    served = serving.classifier_service(model_source(str(run.run_dir)), "torch", 0.5)
    assert len(used) == 4 and isinstance(served.model, inference.PathNetwork)  # the server too
    with torch.no_grad():
        model.network.body[0].weight.mul_(2)  # a body changed in place: not that graph any more
    model.predict(str(colour_folders / "red"))
    assert len(used) == 5 and used[-1] is None
