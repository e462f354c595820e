"""Rules pinned by hand-computed values, not by comparing two runs of the same code: the EMA update with
its warm-up, and FID's closed form on raw features.
"""

from __future__ import annotations

import pytest
import torch

from ablate.cell import Parts
from ablate.store import Store
from ablate.study import load_study
from ablate.train import train_cell
from studies import write_study

PINNED = {"study": {"name": "pinned"}, "data": {"name": "gmm2d", "n_train": 64, "n_test": 16},
          "model": {"name": "mlp", "hidden": 8, "depth": 1}, "schedule": {"name": "linear", "T": 50},
          "train": {"steps": 3, "batch_size": 16, "lr": 0.05, "warmup": 0, "device": "cpu", "checkpoint_every": 1}}


@pytest.mark.parametrize("ema", [0.999, 0.15])
def test_ema_update_rule_with_warm_up(tmp_path, ema):
    """ema_p <- d_n ema_p + (1 - d_n) p after each step, d_n = min(ema, (1 + n) / (10 + n)), n = steps done
    before the update, starting from the initial weights. ema = 0.999 is all warm-up (d = 0.1, 0.18, 0.25);
    ema = 0.15 caps the second and third updates at 0.15."""
    study = load_study(write_study(tmp_path, "s.toml", base=PINNED, train={"ema": ema}))
    (cell,) = study.cells
    parts = Parts.from_config(study.registry, cell.config)
    data = study.registry.from_table("dataset", cell.config["data"]).load()
    store = Store(tmp_path / "ablate.db")
    run = store.start_run("pinned", None, "s.toml", {}, {}, {})
    store.add_cell(run, cell.key, cell.config, cell.arm, cell.seed)
    run_dir = tmp_path / "cell"
    run_dir.mkdir()
    live, averaged = {}, {}

    def on_step(step, ema_module):
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        live[step] = {k: v.double() for k, v in ckpt["model"].items()}
        averaged[step] = {k: v.detach().double().clone() for k, v in ema_module.state_dict().items()}

    try:
        train_cell(cell.key, cell.config, parts, data, run_dir, store, progress=False, at_steps=(1, 2, 3), on_step=on_step)
    finally:
        store.close()
    torch.manual_seed(cell.seed)  # the initial weights: train_cell seeds, then builds the model
    initial = {k: v.double() for k, v in parts.model.build(data.spec).state_dict().items()}
    assert all((live[1][k] - initial[k]).abs().max() > 1e-3 for k in initial), "the lr must move every weight"
    expected = initial
    for n, step in enumerate((1, 2, 3)):
        decay = min(ema, (1 + n) / (10 + n))
        expected = {k: decay * expected[k] + (1 - decay) * live[step][k] for k in expected}
        for k in expected:
            assert torch.allclose(averaged[step][k], expected[k], rtol=0, atol=1e-6), (step, k)


def raw_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID through torchmetrics with the fid plugin's raw features (flattened values)."""
    from ablate_plugins.features import Flatten
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Flatten(real[0].numel()))
    metric.update(real.float(), real=True)
    metric.update(fake.float(), real=False)
    return float(metric.compute())


def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    assert abs(raw_fid(x, x)) < 1e-3


def test_fid_of_a_mean_shift_is_the_squared_shift():
    """Same covariance, means apart by delta: FID = ||delta||^2 + Tr(S + S - 2 (S S)^1/2) = ||delta||^2."""
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1)).double() @ torch.tensor(
        [[1.0, 0.3, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 0.8]], dtype=torch.float64)
    delta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    assert raw_fid(x, x + delta) == pytest.approx(float(delta.pow(2).sum()), rel=1e-3)
