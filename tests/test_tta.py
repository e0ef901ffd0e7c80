"""Test-time augmentation: every view reaches the model, views differ, and both reductions give probabilities."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import make_class_folders, tiny_args
from tunevision.cli.main import main
from tunevision.classify.inference import TTA, predict_probs
from tunevision.models.backbones import build_classifier, create_backbone
from tunevision.core.runtime import resolve_runtime


class Recorder(torch.nn.Module):
    """Wraps a model and keeps every input batch it sees."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.model(x)


@pytest.fixture
def model_and_images():
    torch.manual_seed(0)
    model = Recorder(build_classifier(create_backbone("tiny_cnn", pretrained=False), 3).eval())
    images = np.random.default_rng(0).integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    return model, images


def test_tta_calls_the_model_on_every_distinct_view(model_and_images) -> None:
    model, images = model_and_images
    rt = resolve_runtime("cpu", "fp32")
    predict_probs(model, images, rt, 32, tta=TTA(crops=3))
    assert len(model.seen) == 5 and all(x.shape == (5, 3, 32, 32) for x in model.seen)
    assert torch.equal(model.seen[1], model.seen[0].flip(3))  # the mirror of the centre crop
    assert len({x.sum().item() for x in model.seen}) == 5      # random crops differ from each other
    first = [x.clone() for x in model.seen]
    model.seen.clear()
    p1 = predict_probs(model, images, rt, 32, tta=TTA(crops=3))
    p2 = predict_probs(model, images, rt, 32, tta=TTA(crops=3))
    assert all(torch.equal(a, b) for a, b in zip(first, model.seen[:5]))  # same seed, same views
    assert np.array_equal(p1, p2)                                           # so the same probabilities
    p3 = predict_probs(model, images, rt, 32, tta=TTA(crops=3, seed=1))
    assert not np.array_equal(p1, p3)                                       # another seed, other crops


def test_tta_mean_and_max_are_probabilities_and_differ(model_and_images) -> None:
    model, images = model_and_images
    rt = resolve_runtime("cpu", "fp32")
    plain = predict_probs(model, images, rt, 32)
    mean = predict_probs(model, images, rt, 32, tta=TTA(crops=2))
    top = predict_probs(model, images, rt, 32, tta=TTA(crops=2, reduce="max"))
    for p in (mean, top):
        assert np.allclose(p.sum(1), 1, atol=1e-5)
    assert not np.allclose(mean, plain) and not np.allclose(mean, top)
    with pytest.raises(Exception):
        TTA(reduce="median")


def test_evaluate_tta_reports_both_scores_and_the_cost(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=8)
    r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                  "--mode", "finetune", "--epochs", "1", "--name", "r")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "runs" / "r"), str(data), "--device", "cpu",
                                  "--tta", "--tta-crops", "3"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "without TTA: accuracy" in r.output and "with TTA (5 views, mean)" in r.output
    assert "the inference time" in r.output
