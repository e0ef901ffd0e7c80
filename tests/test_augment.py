from __future__ import annotations

import pytest
import torch

from tunevision import augment as aug
from tunevision.errors import TunevisionError


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
