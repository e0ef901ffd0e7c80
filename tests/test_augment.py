from __future__ import annotations

import pytest
import torch

from tunevision.data import augment as aug
from tunevision.core.errors import TunevisionError


def test_parse_spec_and_presets() -> None:
    ops = aug.parse("hflip,rrc(scale=0.1-1,ratio=0.5-2),jitter(b=0.5,c=0.5,s=0.5,h=0.5)")
    assert ops == [("hflip", {}), ("rrc", {"scale": (0.1, 1.0), "ratio": (0.5, 2.0)}),
                   ("jitter", {"b": 0.5, "c": 0.5, "s": 0.5, "h": 0.5})]
    assert aug.parse("none") == [("center", {})]
    assert aug.parse("hflip")[0] == ("center", {})  # a crop op is always there to produce the size


@pytest.mark.parametrize("bad", ["blur", "rrc(scale)", "hflip,,(", "rrc(scale=abc)"])
def test_bad_specs_fail_with_a_clear_error(bad: str) -> None:
    with pytest.raises(TunevisionError):
        aug.make_pipeline(bad, 16)


def test_bad_parameter_fails_at_build_time() -> None:
    with pytest.raises(TunevisionError, match="jitter"):
        aug.make_pipeline("jitter(q=1)", 16)


def test_eval_view_is_a_deterministic_centre_crop() -> None:
    x = torch.arange(6 * 6 * 3, dtype=torch.uint8).view(1, 6, 6, 3)
    v = aug.eval_view(x, 4)
    assert v.shape == (1, 3, 4, 4)
    assert torch.equal(v, (x[:, 1:5, 1:5].permute(0, 3, 1, 2).float() / 255))


def test_hflip_mirrors_exactly_when_p_is_one() -> None:
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(aug.hflip(x, torch.Generator().manual_seed(0), 8, p=1.0), x.flip(3))
    assert torch.equal(aug.vflip(x, torch.Generator().manual_seed(0), 8, p=0.0), x)


def test_flips_mirror_the_drawn_images_only_and_leave_the_input_alone() -> None:
    x = torch.randint(0, 255, (16, 6, 6, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels_last, as cached
    before = x.clone()
    hit = torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5  # the op's own draw
    out = aug.hflip(x, torch.Generator().manual_seed(3), 6)
    assert 0 < int(hit.sum()) < 16 and torch.equal(x, before)
    assert torch.equal(out[hit], x[hit].flip(3)) and torch.equal(out[~hit], x[~hit])
    assert out.is_contiguous(memory_format=torch.channels_last)  # the layout the forward paths read without a copy
    out = aug.vflip(x, torch.Generator().manual_seed(3), 6)
    assert torch.equal(out[hit], x[hit].flip(2)) and torch.equal(out[~hit], x[~hit])


def test_rrc_output_is_channels_last_and_matches_one_interpolation_per_box() -> None:
    x = torch.randint(0, 255, (4, 20, 20, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    out = aug.random_resized_crop(x, torch.Generator().manual_seed(0), 12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.uint8
    want = torch.nn.functional.interpolate(x, size=(12, 12), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(out, want)


def test_rrc_full_scale_unit_ratio_is_identity_resample() -> None:
    x = torch.rand(2, 3, 16, 16)
    out = aug.random_resized_crop(x, torch.Generator().manual_seed(0), 16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_rrc_crop_covers_the_requested_area() -> None:
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(8, 3, 64, 64).contiguous()
    out = aug.random_resized_crop(ramp, torch.Generator().manual_seed(1), 16, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    assert out.shape == (8, 3, 16, 16)
    span = out[:, 0, 0, -1] - out[:, 0, 0, 0]  # a quarter of the area = half the width, horizontally
    assert torch.allclose(span, torch.full_like(span, 0.5), atol=0.05)
    assert out[:, 0, 0, 0].std() > 0.05  # crop positions vary


def test_jitter_brightness_scales_pixels() -> None:
    x = torch.full((64, 3, 4, 4), 0.5)
    out = aug.color_jitter(x, torch.Generator().manual_seed(0), 4, b=0.5)
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6 and factors.std() > 0.1


def test_hue_rotation_keeps_grey_grey_and_changes_colour() -> None:
    grey = torch.full((4, 3, 2, 2), 0.5)
    assert torch.allclose(aug.color_jitter(grey, torch.Generator().manual_seed(0), 2, h=0.5), grey, atol=1e-4)
    red = torch.zeros(4, 3, 2, 2)
    red[:, 0] = 0.8
    assert not torch.allclose(aug.color_jitter(red, torch.Generator().manual_seed(0), 2, h=0.5), red, atol=0.05)


def test_training_randomness_comes_from_the_generator() -> None:
    pipe = aug.make_pipeline("strong", 16)
    x = torch.randint(0, 255, (4, 20, 20, 3), dtype=torch.uint8)
    a = pipe(x, torch.Generator().manual_seed(3))
    b = pipe(x, torch.Generator().manual_seed(3))
    c = pipe(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 3, 16, 16)


def test_mixup_blends_images_and_targets_in_the_same_proportion() -> None:
    x = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed, target = aug.mixup(x, y, alpha=0.4, g=torch.Generator().manual_seed(5))
    for i in range(2):
        share_of_ones = mixed[i].mean()           # pixel value = share of image 1 in the blend
        assert torch.allclose(target[i, 1], share_of_ones, atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(2))


def test_cutmix_targets_match_the_pasted_area() -> None:
    x = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for seed in range(5):
        mixed, target = aug.cutmix(x, y, alpha=1.0, g=torch.Generator().manual_seed(seed))
        for i in range(2):
            assert torch.allclose(target[i, 1], mixed[i, 0].mean(), atol=1e-6)


def test_mix_batch_returns_soft_targets() -> None:
    x = torch.rand(8, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    _, target = aug.mix_batch(x, labels, 3, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert target.shape == (8, 3) and torch.allclose(target.sum(1), torch.ones(8))


def test_preview_writes_grids(tmp_path, colour_folders) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from tunevision.cli.main import main
    img = next((colour_folders / "red").glob("*.png"))
    r = CliRunner().invoke(main, ["preview", str(img), "--size", "32", "--out", str(tmp_path / "a.png")])
    assert r.exit_code == 0 and Image.open(tmp_path / "a.png").size == (880, 480)  # 2 x 4 grid
    r = CliRunner().invoke(main, ["preview", str(colour_folders), "--batch", "--size", "32", "--rows", "1",
                                  "--out", str(tmp_path / "b.png")])
    assert r.exit_code == 0 and Image.open(tmp_path / "b.png").size == (880, 240)


def test_torchvision_policies_change_images() -> None:
    torch.manual_seed(0)  # the v2 policies draw from torch's global generator
    x = torch.randint(0, 255, (8, 40, 40, 3), dtype=torch.uint8)
    plain = aug.make_pipeline("center", 32)(x, torch.Generator())
    for spec in ("randaugment(n=2,m=15)", "rotate(degrees=30)", "affine(degrees=20)"):
        out = aug.make_pipeline(spec, 32)(x, torch.Generator())
        assert out.shape == plain.shape and not torch.allclose(out, plain), spec
