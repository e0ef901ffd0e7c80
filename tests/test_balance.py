from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from tests.conftest import make_class_folders, tiny_args
from tunevision.cli.main import main
from tunevision.engine.optim import class_weights, epoch_order, train_step


def test_sampler_draws_classes_equally_from_imbalanced_labels() -> None:
    labels = torch.tensor([0] * 900 + [1] * 100)
    idx = epoch_order(labels, "sampler", torch.Generator().manual_seed(0))
    share = labels[idx].float().mean().item()
    assert len(idx) == 1000 and 0.45 < share < 0.55
    plain = epoch_order(labels, "none", torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(1000))


def test_class_weights_equalise_each_class_total() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    w = class_weights(labels, 3)
    assert torch.allclose(w[:2], torch.tensor([100 / (3 * 90), 100 / (3 * 10)])) and w[2] == 0
    totals = torch.bincount(labels, minlength=3).float() * w
    assert torch.allclose(totals[0], totals[1])


def test_both_balance_modes_train_and_tensorboard_logs(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=12)
    for p in sorted((data / "red").iterdir())[3:]:
        p.unlink()  # 12 blue vs 3 red
    for mode in ("sampler", "weights"):
        r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                      "--mode", "finetune", "--epochs", "2", "--balance", mode, "--name", mode,
                                      "--tensorboard")], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert list((tmp_path / "runs" / mode / "tensorboard").glob("events.out.tfevents.*"))


def test_weighted_loss_is_the_class_weighted_cross_entropy() -> None:
    """The loss train_step minimises with balance='weights': sum_i w[y_i] * CE_i / sum_i w[y_i]."""
    from tunevision.core.config import TrainConfig
    logits = torch.nn.Parameter(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]]))
    y = torch.tensor([0, 1, 1, 0])
    w = class_weights(torch.tensor([0] * 90 + [1] * 10), 2)
    opt = torch.optim.SGD([logits], lr=0.0)
    t = TrainConfig(mode="finetune", label_smoothing=0.0)
    loss, _ = train_step(lambda x: logits, torch.zeros(4), y, opt, t, torch.Generator(), num_classes=2, weight=w)
    ce = -torch.log_softmax(logits.detach(), 1)[torch.arange(4), y]
    expected = (w[y] * ce).sum() / w[y].sum()
    assert torch.allclose(loss, expected) and not torch.allclose(loss, ce.mean())
