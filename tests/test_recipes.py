"""Fine-tuning recipes: layer-wise LR decay, gradual unfreezing, the head warm-up and data normalisation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import make_class_folders, tiny_args
from tunevision.data import augment as aug
from tunevision.cli.main import main
from tunevision.core.config import ModelConfig, RunConfig, TrainConfig
from tunevision.data.sources import channel_stats
from tunevision.models.backbones import body_stages, build_classifier, create_backbone
from tunevision.core.runtime import compiled_for_training, resolve_runtime
from tunevision.classify.loops import freeze_stages, train_one_epoch, trainable_stages
from tunevision.engine.optim import make_optimizer, make_scheduler


def small_model():
    torch.manual_seed(0)
    return build_classifier(create_backbone("small_cnn", pretrained=False), 2)


def test_body_stages_cover_every_body_parameter_in_forward_order() -> None:
    model = small_model()
    stages = body_stages(model.body)
    assert len(stages) == 3  # three conv blocks, each BatchNorm joined to its conv
    ids = [id(p) for s in stages for m in s for p in m.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.body.parameters())
    assert [s[0].in_channels for s in stages] == [3, 32, 64]


def test_layer_decay_gives_each_stage_lr_times_decay_to_the_depth() -> None:
    model = small_model()
    cfg = RunConfig(train=TrainConfig(mode="finetune", lr=1e-3, layer_decay=0.5, head_lr_mult=10))
    opt = make_optimizer(model, cfg.train)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-2])
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    plain = make_optimizer(model, TrainConfig(mode="finetune", lr=1e-3))
    assert [g["lr"] for g in plain.param_groups] == pytest.approx([1e-3, 1e-2])


def test_gradual_unfreezing_thaws_top_down_and_all_by_the_middle_epoch() -> None:
    counts = [trainable_stages(e, 8, 9, "gradual") for e in range(1, 9)]
    assert counts == sorted(counts) and counts[0] < 9 and counts[3:] == [9] * 5
    assert all(trainable_stages(e, 8, 9, "all") == 9 for e in range(1, 9))


def test_frozen_stages_do_not_change_during_an_epoch() -> None:
    model = small_model()
    stages = body_stages(model.body)
    frozen = freeze_stages(stages, 1)  # only the top stage (and the head) train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RunConfig(train=TrainConfig(mode="finetune", lr=1e-2, batch_size=8)).for_task("classify")
    opt = make_optimizer(model, cfg.train)
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    labels = torch.tensor([0, 1] * 8)
    train_one_epoch(model, images, labels, aug.make_pipeline("hflip", 32), opt, make_scheduler(opt, "cosine", 2),
                    resolve_runtime("cpu", "fp32"), cfg, torch.Generator().manual_seed(0), lambda n: None,
                    frozen=frozen)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(("body.0.", "body.1.", "body.4.", "body.5.")) for k in changed)  # stages 1-2
    assert any(k.startswith("body.8.") for k in changed) and "head.weight" in changed


@pytest.mark.parametrize("mode, train_bn, pretrained, moves", [
    ("finetune", False, True, False), ("finetune", True, True, True), ("scratch", False, True, True),
    ("finetune", False, False, True),  # no pretrained statistics to keep
])
def test_fine_tuning_keeps_the_pretrained_batchnorm_statistics(mode: str, train_bn: bool, pretrained: bool,
                                                               moves: bool) -> None:
    model = small_model()
    bn = model.body[1]
    before = (bn.running_mean.clone(), bn.weight.clone())
    cfg = RunConfig(model=ModelConfig(pretrained=pretrained),
                    train=TrainConfig(mode=mode, lr=1e-2, batch_size=8, **({"train_bn": True} if train_bn else {}))).for_task("classify")
    opt = make_optimizer(model, cfg.train)
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    train_one_epoch(model, images, torch.tensor([0, 1] * 8), aug.make_pipeline("hflip", 32), opt,
                    make_scheduler(opt, "cosine", 2), resolve_runtime("cpu", "fp32"), cfg,
                    torch.Generator().manual_seed(0), lambda n: None)
    assert (not torch.equal(bn.running_mean, before[0])) == moves   # statistics: only when asked, or from scratch
    assert not torch.equal(bn.weight, before[1])                     # scale and shift learn either way
    assert model.body[0].training and bn.training == moves


def test_channel_stats_are_the_images_mean_and_std() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    mean, std = channel_stats(images, n=300)
    x = images.reshape(-1, 3) / 255.0
    assert np.allclose(mean, x.mean(0), atol=1e-4) and np.allclose(std, x.std(0), atol=1e-4)


def test_normalize_data_is_stored_in_the_bundle(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=8)
    r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                  "--mode", "scratch", "--epochs", "1", "--normalize", "data", "--name", "r")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "runs" / "r" / "model" / "model.json").read_text())
    # blue and red images: the red and blue channel means sit far from ImageNet's 0.485 / 0.406
    assert meta["mean"] != pytest.approx([0.485, 0.456, 0.406], abs=0.02)
    assert 0.3 < meta["mean"][0] < 0.65 and meta["std"][0] > 0.2


def test_head_warm_up_trains_the_head_before_the_network(tmp_path: Path) -> None:
    """With a near-zero network LR, only the frozen-feature warm-up can make the classifier accurate."""
    data = make_class_folders(tmp_path / "d", n=12, classes=("blue", "red", "green"))
    accs = {}
    for warm in (0, 60):
        r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                      "--mode", "finetune", "--epochs", "1", "--lr", "1e-9", "--freeze-epochs",
                                      str(warm), "--name", f"w{warm}", "--augment", "none")], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        accs[warm] = json.loads((tmp_path / "runs" / f"w{warm}" / "summary.json").read_text())["final_val_acc"]
    assert accs[60] == 1.0 and accs[0] < 0.9, accs


def test_compare_trains_each_mode_with_the_same_epochs(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=8)
    r = CliRunner().invoke(main, ["compare", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                  "--epochs", "2")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "runs" / "compare.json").read_text())
    assert [row["mode"] for row in rows] == ["finetune", "scratch"] and {row["epochs"] for row in rows} == {2}
    for row in rows:
        cfg = (Path(row["run_dir"]) / "config.yaml").read_text()
        assert f"mode: {row['mode']}" in cfg and 0 <= row["final_val_acc"] <= 1
    assert "finetune" in r.output and "scratch" in r.output


def test_one_cycle_and_cosine_schedules_shape_the_learning_rate() -> None:
    model = small_model()
    for schedule in ("onecycle", "cosine"):
        opt = make_optimizer(model, TrainConfig(mode="finetune", lr=1e-3, schedule=schedule))
        sched = make_scheduler(opt, schedule, 100)
        body, head = [], []
        for _ in range(100):
            body.append(opt.param_groups[0]["lr"])
            head.append(opt.param_groups[-1]["lr"])
            opt.step()
            sched.step()
        peak = int(np.argmax(body))
        assert body[0] <= 0.2 * max(body) + 1e-12 and body[-1] < 0.05 * max(body)  # warm up, then anneal to ~0
        assert (20 <= peak <= 30) if schedule == "onecycle" else (peak <= 6)
        assert max(body) == pytest.approx(1e-3) and max(head) == pytest.approx(1e-2)  # head 10x the body


def test_sgd_option_and_xavier_head() -> None:
    model = small_model()
    opt = make_optimizer(model, TrainConfig(mode="finetune", optimizer="sgd"))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    big = build_classifier(create_backbone("small_cnn", pretrained=False), 1000)
    bound = (6 / (128 + 1000)) ** 0.5  # xavier_uniform: U(-b, b)
    w = big.head.weight.detach()
    assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    assert torch.count_nonzero(big.head.bias) == 0


def test_label_smoothing_reaches_the_training_loss() -> None:
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    labels = torch.tensor([0, 1] * 8)
    losses = []
    for eps in (0.0, 0.3):
        model = small_model()
        cfg = RunConfig(train=TrainConfig(mode="finetune", lr=1e-12, batch_size=16, label_smoothing=eps))
        opt = make_optimizer(model, cfg.train)
        loss, _ = train_one_epoch(model, images, labels, aug.make_pipeline("none", 32), opt,
                                  make_scheduler(opt, "cosine", 1), resolve_runtime("cpu", "fp32"), cfg,
                                  torch.Generator().manual_seed(0), lambda n: None)
        losses.append(loss)
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_compile_failure_falls_back_to_eager_and_leaves_no_trace(monkeypatch) -> None:
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class FailsLazily(torch.nn.Module):  # as inductor does: torch.compile returns, the first call raises
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            self.m(x).sum().backward()  # touches BatchNorm statistics and gradients first
            raise RuntimeError("no C++ compiler found\nlong details")

    monkeypatch.setattr(torch, "compile", lambda m, **kw: FailsLazily(m))
    messages = []
    log = type("Log", (), {"info": lambda self, m: messages.append(m)})()
    out = compiled_for_training(model, torch.rand(4, 3, 32, 32), log)
    assert out is model and "torch.compile failed (RuntimeError: no C++ compiler found)" in messages[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
