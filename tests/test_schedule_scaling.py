"""Issue 17.1: the linear schedule scales both ends by 1000/T (improved DDPM), so every T reaches noise;
T = 1000 is DDPM's schedule bit for bit; a study whose schedule stops short of noise is warned about."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ablate.errors import StudyError
from ablate.plugins import load_registry
from ablate.study import load_study
from studies import write_study


@pytest.fixture(scope="module")
def registry():
    return load_registry([])


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [50, 200, 1000])
def test_default_schedules_reach_noise(registry, name, T):
    assert float(registry.create("schedule", name, {"T": T}).diffusion().alpha_bars[-1]) < 1e-3


def test_linear_at_1000_is_ddpm_unchanged(registry):
    betas = registry.create("schedule", "linear", {"T": 1000}).betas(1000)
    assert betas[0].item() == 1e-4 and betas[-1].item() == 0.02
    assert torch.equal(betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))  # the code before the scaling
    hand = torch.tensor([1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)], dtype=torch.float64)
    torch.testing.assert_close(betas, hand, rtol=1e-12, atol=0)


def test_linear_scales_both_ends_and_keeps_the_unscaled_form(registry):
    scaled = registry.create("schedule", "linear", {"T": 200}).betas(200)
    assert scaled[0].item() == pytest.approx(5e-4) and scaled[-1].item() == pytest.approx(0.1)
    plain = registry.create("schedule", "linear", {"T": 200, "scale_with_T": False}).diffusion()
    # sum of log(1 - beta) over 200 evenly spaced betas from 1e-4 to 0.02: about -(mean beta) * 200 = -2.01
    assert float(plain.alpha_bars[-1]) == pytest.approx(math.exp(-2.01 - 0.5 * 200 * (0.02**2 + 0.02 * 1e-4 + 1e-8) / 3), rel=1e-2)
    assert float(plain.alpha_bars[-1]) == pytest.approx(0.13, abs=0.01)  # the value issue 17 reports


def test_a_schedule_short_of_noise_is_warned_about(tmp_path):
    path = write_study(tmp_path, study={"name": "noise"}, schedule={"T": 200, "scale_with_T": False})
    with pytest.warns(UserWarning, match=r"abar_T = 0\.13.*scale_with_T = true"):
        load_study(path)
    write_study(tmp_path, study={"name": "noise"}, schedule={"T": 200})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_study(path)


def test_a_scaled_beta_of_one_is_a_study_error(tmp_path):
    path = write_study(tmp_path, study={"name": "noise"}, schedule={"T": 20})
    with pytest.raises(StudyError, match=r"schedule.*x 1000/T = 1 at T = 20"):
        load_study(path)
