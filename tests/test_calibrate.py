import numpy as np
import torch

from tunevision.engine.calibrate import expected_calibration_error, fit_temperature, reliability


def test_overconfident_logits_get_temperature_above_one_and_lower_ece() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (2000,), generator=g)
    logits = torch.randn(2000, 5, generator=g)
    logits[torch.arange(2000), labels] += 1.5          # informative, ~60 % accurate
    logits = logits * 4                                 # ... and far too confident
    t = fit_temperature(logits, labels)
    before = expected_calibration_error(torch.softmax(logits, 1).numpy(), labels.numpy())
    after = expected_calibration_error(torch.softmax(logits / t, 1).numpy(), labels.numpy())
    assert t > 1.5 and after < before / 2


def test_reliability_bins() -> None:
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = np.array([0, 1, 0, 0])
    conf, acc, count = reliability(probs, labels, bins=10)
    assert count[9] == 2 and count[5] == 2 and acc[9] == 0.5 and acc[5] == 1.0
    assert abs(expected_calibration_error(probs, labels, 10) - (2 * 0.45 + 2 * 0.45) / 4) < 1e-9
