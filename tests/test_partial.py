"""Partial fine-tuning on cached activations: the split reproduces the body, gradients reach only the top stages, and
training the top on cached activations equals training the full network with only those stages trainable."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

from tests.conftest import make_class_folders, tiny_args
from tunevision.cli.main import main
from tunevision.core.errors import TunevisionError
from tunevision.models.backbones import build_classifier, create_backbone
from tunevision.classify.partial import TopClassifier, split_body


def small_model():
    torch.manual_seed(0)
    return build_classifier(create_backbone("small_cnn", pretrained=False), 3)


def test_split_reproduces_the_body_and_refuses_bad_cuts() -> None:
    model = small_model().eval()
    trunk, top = split_body(model.body, 1)
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(top(trunk(x)), model.body(x), atol=1e-6)
    with pytest.raises(TunevisionError, match="top_stages must be in 1..2"):
        split_body(model.body, 3)


def test_training_the_top_on_activations_equals_the_full_network_with_a_frozen_trunk() -> None:
    x, y = torch.rand(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    runs = []
    for cached in (True, False):
        model = small_model()
        trunk, top = split_body(model.body, 1)
        trunk.requires_grad_(False).eval()  # the frozen trunk keeps its BatchNorm statistics
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(3):
            if cached:  # activations computed once, outside autograd, as partial mode caches them
                with torch.no_grad():
                    acts = trunk((x - model.mean) / model.std)
                top.train()
                logits = TopClassifier(top, model)(acts)
            else:
                model.train()
                trunk.eval()
                logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            if not cached:
                assert all(p.grad is None for p in trunk.parameters())  # gradients reach only the top stages
            opt.step()
        runs.append(model.state_dict())
    for k in runs[0]:
        assert torch.allclose(runs[0][k].float(), runs[1][k].float(), atol=1e-5), k


def test_partial_mode_trains_the_top_only(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=12)
    r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs", "--mode",
                                  "partial", "--top-stages", "1", "--epochs", "3", "--views", "1", "--name", "p")])
    assert r.exit_code == 0, r.output
    saved = load_file(str(tmp_path / "runs" / "p" / "model" / "model.safetensors"))
    torch.manual_seed(0)
    initial = build_classifier(create_backbone("tiny_cnn", pretrained=False), 2).state_dict()
    assert torch.equal(saved["body.0.weight"], initial["body.0.weight"])        # the trunk's first conv: frozen
    assert not torch.equal(saved["body.3.weight"], initial["body.3.weight"])    # the top stage trained
    r = CliRunner().invoke(main, ["train", str(data), "--mode", "auto", "--top-stages", "2"])
    assert r.exit_code == 2 and "top_stages is used by --mode partial only" in r.output


def test_partial_after_the_head_stage_still_trains_the_top(tmp_path: Path) -> None:
    """A time-budget plan runs the head stage first, which freezes the whole body; partial fine-tuning must thaw
    the top stages again (it once trained only the head there)."""
    import dataclasses

    from tunevision.core.config import RunConfig
    from tunevision.core.distributed import Dist
    from tunevision.classify.loops import fit_head
    from tunevision.classify.partial import fit_partial
    from tunevision.classify.prepare import prepare_data
    from tunevision.core.runtime import resolve_runtime
    from tunevision.core.ui import RunLog
    data_dir = make_class_folders(tmp_path / "d", n=10)
    cfg = RunConfig.from_options(str(data_dir), backbone="tiny_cnn", pretrained=False, device="cpu",
                                 precision="fp32", cache_dir=str(tmp_path / "c"), epochs=3).for_task("classify")
    torch.manual_seed(0)
    backbone = create_backbone("tiny_cnn", pretrained=False)
    data = prepare_data(cfg, backbone, RunLog(quiet=True))
    model = build_classifier(backbone, 2)
    rt, log = resolve_runtime("cpu", "fp32"), RunLog(quiet=True)
    fit_head(model, data, cfg, rt, log, lambda *a: False)
    trunk_before, top_before = model.body[0].weight.clone(), model.body[3].weight.clone()
    partial = dataclasses.replace(cfg, train=cfg.train.for_mode("partial", top_stages=1, epochs=2, views=0))
    fit_partial(model, data, partial, rt, log, lambda *a: False, Dist())
    assert torch.equal(model.body[0].weight, trunk_before) and not torch.equal(model.body[3].weight, top_before)
