"""Evaluation as a reviewer would check it: samples scored as saved images, x0 clipping at the
denoiser seam, common random numbers across samplers, the real-data floor, the memorisation check,
learning curves and the record of clipped gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ablate
from ablate.datatypes import Data, DataSpec, EvalContext, Prediction
from ablate.evaluate import ClippedDenoiser, as_saved, draw_samples
from ablate.store import REAL_DATA
from studies import ORACLE, TINY, merged, query, run, write_study


def _ctx(data: Data, tmp_path: Path) -> EvalContext:
    return EvalContext(data=data, denoiser=None, diffusion=None, device=torch.device("cpu"), cache_dir=tmp_path,
                       generator=torch.Generator().manual_seed(0))


def test_saved_images_are_clamped_and_8_bit():
    spec = DataSpec("img", (1, 4, 4))
    x = torch.randn(8, 1, 4, 4) * 150
    saved = as_saved(x, spec)
    assert saved.min() >= -1 and saved.max() <= 1
    levels = (saved + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    # exactly what a PNG holds: uint8 levels read back
    png = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.allclose(saved, png.float() / 127.5 - 1, atol=1e-6)
    points = DataSpec("pts", (2,))
    assert torch.equal(as_saved(x[:, 0, 0, :2], points), x[:, 0, 0, :2])  # points have no range to clamp to


class Scaled(ablate.Sampler):
    """Returns its starting noise times `scale` (optionally clamped): saturated 'samples'."""

    name = "scaled"

    class Params(ablate.Sampler.Params):
        scale: float = 150.0
        clamp: bool = False

    def sample(self, denoiser, diffusion, x, t_start, generator):
        x = x * self.params.scale
        return x.clamp(-1, 1) if self.params.clamp else x


def test_noise_times_150_scores_like_the_clamped_batch(registry, tmp_path):
    """Pixel magnitude beyond the image range cannot inflate FID: the noise x150 and its clamp are one image."""
    data = registry.create("dataset", "digits").load()
    diffusion = registry.create("schedule", "linear", {"T": 50}).diffusion()
    fid = registry.create("metric", "fid", {"features": "raw", "num_samples": 200})
    real = as_saved(data.test, data.spec)
    scores = []
    for clamp in (False, True):
        samples, nfe, _ = draw_samples(Scaled(Scaled.Params(clamp=clamp)), None, diffusion, data.spec, 200, 100,
                                       seed=0, device=torch.device("cpu"), desc="", progress=False)
        assert nfe == 0
        scores.append(fid.evaluate(samples, real, _ctx(data, tmp_path))["fid"])
    assert scores[0] == pytest.approx(scores[1], rel=1e-9)
    # and unclamped floats would have scored orders of magnitude worse
    raw = 150 * torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert fid.evaluate(raw, real, _ctx(data, tmp_path))["fid"] > 100 * scores[0]


def test_clipping_at_the_seam_clamps_x0_and_keeps_x_t_consistent(registry):
    diffusion = registry.create("schedule", "linear", {"T": 100}).diffusion()

    def wild(x_t, t):  # a denoiser whose x0 estimate leaves the image range
        x0 = 3 * torch.ones_like(x_t)
        return Prediction(x0=x0, eps=diffusion.eps_from_x0(x_t, t, x0))

    x_t, t = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 10, 50, 99])
    pred = ClippedDenoiser(wild, diffusion)(x_t, t)
    assert torch.equal(pred.x0, torch.ones_like(x_t))
    abar = diffusion.alpha_bars[t].view(-1, 1, 1, 1)
    assert torch.allclose(abar.sqrt() * pred.x0 + (1 - abar).sqrt() * pred.eps, x_t, atol=1e-10)


CRN = merged(ORACLE, {"study": {"name": "crn", "seeds": [0, 1]}, "data": {"n_test": 500, "n_train": 500},
                      "eval": {"batch_size": 150},
                      "sampler": [{"name": "ancestral"}, {"name": "ddim", "steps": 50, "eta": 1.0},
                                  {"name": "ddim", "steps": 50, "eta": 0.0}],
                      "metric": [{"name": "gmm_fit", "num_samples": 400}]})


def test_samplers_share_x_T_and_the_noise_stream(tmp_path):
    """Common random numbers: on the exact oracle, DDIM with eta = 1 at every step is the ancestral
    chain, so at each seed both give the same metric values; deterministic DDIM does not."""
    frame = ablate.run_study(write_study(tmp_path, base=CRN), runs_dir=tmp_path / "runs", progress=False)
    nll = frame[frame.key == "nll"].pivot_table(index="seed", columns="sampler", values="value")
    # equal up to float32 rounding of two algebraically equal updates (different seeds differ by ~1e-2)
    assert nll["ancestral"].tolist() == pytest.approx(nll["ddim(eta=1.0)"].tolist(), rel=1e-5)
    assert (nll["ancestral"] - nll["ddim"]).abs().min() > 1e-3
    assert nll["ancestral"][0] != nll["ancestral"][1]  # seeds differ
    # the floor: one half of the 500 held-out points in place of samples (250 of them), no NFE
    floor = frame[(frame.sampler == REAL_DATA) & (frame.key == "nll")]
    assert set(floor.num_samples) == {250} and set(floor.nfe) == {0}
    assert floor.value.iloc[0] == pytest.approx(nll["ancestral"].mean(), abs=0.3)


def test_nearest_neighbour_exposes_a_copying_model(registry, tmp_path):
    data = registry.create("dataset", "digits").load()
    nn = registry.create("metric", "nearest_neighbour")
    train = as_saved(data.train, data.spec)
    copies = nn.evaluate(train[:200], train, _ctx(data, tmp_path))
    held_out = nn.evaluate(as_saved(data.test, data.spec)[:200], train, _ctx(data, tmp_path))
    assert copies["nn_distance"] < 1e-6 and copies["close_copies"] == 1.0
    assert held_out["nn_distance"] > 0.1 and held_out["close_copies"] < 0.05


CURVES = merged(TINY, {"study": {"name": "curves"}, "data": {"n_train": 1000, "n_test": 300}, "model": {"hidden": 32, "depth": 2},
                       "train": {"steps": 60, "batch_size": 64, "lr": 3e-3, "warmup": 5, "grad_clip": 0.01,
                                 "checkpoint_every": 100},
                       "eval": {"batch_size": 300, "at_steps": [20, 40], "raw_weights": True},
                       "sampler": [{"name": "ddim", "steps": 5}],
                       "metric": [{"name": "x0_error_by_t", "num_samples": 100, "timesteps": [0, 25, 49]},
                                  {"name": "gmm_fit", "num_samples": 300}]})


def test_learning_curves_raw_weights_and_clipping_are_recorded(tmp_path):
    runs = tmp_path / "runs"
    ablate.run_study(write_study(tmp_path, base=CURVES), runs_dir=runs, progress=False)
    rows = set(query(runs, "SELECT sampler, metric, step, weights FROM evals"))
    ((clipped, steps),) = query(runs, "SELECT clipped_steps, step FROM cells")
    curve = {(s, w) for sampler, m, s, w in rows if m.startswith("x0_error_by_t")}
    assert curve == {(20, "ema"), (40, "ema"), (-1, "ema"), (-1, "raw")}
    # the sampled metric is not cheap: final weights only (EMA and raw), plus its real-data floor
    sampled = {(sampler, s, w) for sampler, m, s, w in rows if m.startswith("gmm_fit")}
    assert sampled == {("ddim(steps=5)", -1, "ema"), ("ddim(steps=5)", -1, "raw"), (REAL_DATA, -1, "ema")}
    assert steps == 60 and clipped == 60  # a 0.01 norm limit clips every step


@pytest.mark.parametrize("target, expected", [("epsilon", 1.0), ("x0", (0.75**2 + 2 * 0.06**2) / 2)])
def test_trivial_loss_is_the_closed_form(registry, target, expected):
    """Predicting 0 costs E[eps^2] = 1 for epsilon and E[x0^2] per value for x0 (gmm2d on a ring of
    radius 0.75, std 0.06): the line a trained cell's loss must be below."""
    from ablate.cell import Parts
    from ablate.train import trivial_loss

    parts = Parts(schedule=registry.create("schedule", "linear"), target=registry.create("target", target),
                  weighting=registry.create("weighting", "simple"), model=registry.create("model", "mlp"))
    diffusion = parts.schedule.diffusion()
    data = registry.create("dataset", "gmm2d").load()
    weights = parts.weighting.weights(diffusion, parts.target, torch.arange(diffusion.T)).float()
    got = trivial_loss(parts, diffusion, data.train, weights, seed=0, n=200_000)
    assert got == pytest.approx(expected, rel=0.01)


def test_mlp_skip_adds_the_input(registry):
    """skip = true is a residual around the same network: output = net(x_t, t) + x_t."""
    spec = DataSpec("pts", (2,))
    torch.manual_seed(0)
    plain = registry.create("model", "mlp", {"hidden": 16}).build(spec)
    torch.manual_seed(0)
    skip = registry.create("model", "mlp", {"hidden": 16, "skip": True}).build(spec)
    x, t = torch.randn(5, 2), torch.tensor([0, 1, 2, 3, 4])
    assert torch.allclose(skip(x, t), plain(x, t) + x)


def test_progress_without_a_terminal_prints_lines(tmp_path, capsys):
    """Under CI or into a log file tqdm stays silent, so training prints a line every tenth of the run."""

    assert run(write_study(tmp_path, "s.toml", base=CURVES, eval={"at_steps": None, "raw_weights": None})) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  train step ")]
    assert [line.split(",")[0] for line in lines] == [f"  train step {s}/60" for s in range(6, 61, 6)]


def test_changing_what_an_evaluation_measures_makes_its_results_stale(tmp_path, capsys):
    """eval.reference and eval.clip_x0 change what a stored number means: a rerun with another value
    stops (exit 2) instead of reusing them, and --recompute-stale recomputes."""
    from ablate.cli import main

    study = write_study(tmp_path, "s.toml", base=CRN, sampler=CRN["sampler"][:2])
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["run", str(study), *runs]) == 0
    assert main(["run", str(study), *runs]) == 0  # unchanged: reused
    capsys.readouterr()
    assert main(["run", str(study), "--set", "eval.reference=train", *runs]) == 2
    assert "--recompute-stale" in capsys.readouterr().err
    assert main(["run", str(study), "--set", "eval.reference=train", "--recompute-stale", *runs]) == 0
