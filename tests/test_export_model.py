"""diffusers interop: the `diffusers_unet` model trains in a study, and `ablate export-model` saves a trained
cell as a DDPMPipeline whose UNet and scheduler give ablate's x0 prediction for the same x_t and t (each
target), whose ancestral step is ablate's posterior (fixed_small), and which loads and samples offline.
ablate's own `unet` exports when its weights map onto UNet2DModel, and says why not in one line otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ablate.cell import Parts
from ablate.cli import main
from ablate.plugins import load_registry
from ablate.train import load_checkpoint
from studies import run, write_study

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_UNET = {"name": "diffusers_unet", "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}
UNET = {"name": "unet", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
# digits at T = 1000, three steps per arm: each exported as a pipeline
DIGITS = {"study": {"name": "export_model_tiny", "seeds": [0]}, "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": 16},
          "train": {"steps": 3, "batch_size": 8, "warmup": 0, "device": "cpu"}, "eval": {"grid_samples": 0}}
ARMS = [*({"model": DIFFUSERS_UNET, "target": {"name": target}} for target in ("epsilon", "x0", "v")), {"model": UNET},
        {"model": {"name": "unet", "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}},
        {"target": {"name": "epsilon"}}]
PREDICTION = {"epsilon": "epsilon", "x0": "sample", "v": "v_prediction"}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Cell key by (model name, target name, ch): each arm trained 3 steps, as `ablate run` trains it."""
    folder = tmp_path_factory.mktemp("export_model")
    assert run(write_study(folder, base={}, **DIGITS, arm=ARMS)) == 0
    out = {}
    for run_dir in (folder / "runs").iterdir():
        if (run_dir / "config.json").is_file():
            config = json.loads((run_dir / "config.json").read_text())
            out[(config["model"]["name"], config["target"]["name"], config["model"].get("ch"))] = run_dir
    assert len(out) == 6
    return out


def ablate_side(run_dir):
    """The cell's EMA network, its denoiser and its Diffusion, built the way evaluation builds them."""
    config = json.loads((run_dir / "config.json").read_text())
    parts = Parts.from_config(load_registry(), config)
    data = parts.dataset.load()
    module = parts.model.build(data.spec)
    module.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", torch.device("cpu"))["ema"])
    diffusion = parts.schedule.diffusion()
    return module.eval(), parts.model.denoiser(module.eval(), parts.target, diffusion, data.spec), diffusion, data


@pytest.mark.parametrize("target", ["epsilon", "x0", "v"])
def test_pipeline_reproduces_ablates_x0_and_posterior(cells, tmp_path, target):
    run_dir = cells[("diffusers_unet", target, None)]
    assert main(["export-model", run_dir.name, "--to", str(tmp_path / "pipe"), "--runs-dir", str(run_dir.parent)]) == 0
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "pipe")
    config = pipe.scheduler.config
    assert config.prediction_type == PREDICTION[target] and config.variance_type == "fixed_small"
    assert config.clip_sample is True and config.clip_sample_range == 1.0  # image data: ablate clips x0_hat
    _, denoiser, diffusion, data = ablate_side(run_dir)
    assert config.num_train_timesteps == diffusion.T
    torch.testing.assert_close(torch.tensor(config.trained_betas, dtype=torch.float64), diffusion.betas)
    scheduler = diffusers.DDPMScheduler.from_config(config, clip_sample=False)  # ablate's x0 before clipping
    gen = torch.Generator().manual_seed(0)
    x0 = data.test[:8]
    for t in (0, 1, 10, 100, 500, 900, 999):
        x_t = diffusion.q_sample(x0, torch.full((8,), t), torch.randn(x0.shape, generator=gen))
        with torch.no_grad():
            output = pipe.unet(x_t, t).sample
        step = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(t))
        mine = denoiser(x_t, torch.full((8,), t)).x0
        torch.testing.assert_close(step.pred_original_sample, mine, rtol=1e-5, atol=1e-5)
        # ancestral step: the posterior mean of ablate's x0 plus sqrt(posterior variance) times the same noise
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        expected = diffusion.posterior_mean(mine.double(), x_t.double(), torch.full((8,), t)) \
            + (diffusion.posterior_variance[t].sqrt() * noise if t > 0 else 0)
        torch.testing.assert_close(step.prev_sample.double(), expected, rtol=1e-4, atol=1e-4)


def test_exported_pipeline_loads_and_samples_offline(cells, tmp_path):
    run_dir = cells[("diffusers_unet", "epsilon", None)]
    assert main(["export-model", str(run_dir), "--to", str(tmp_path / "pipe")]) == 0
    script = textwrap.dedent(f"""
        import numpy as np
        from diffusers import DDPMPipeline
        pipe = DDPMPipeline.from_pretrained({str(tmp_path / "pipe")!r})
        images = pipe(batch_size=2, num_inference_steps=2, output_type="np").images
        assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all(), images.shape
        assert images.min() >= 0 and images.max() <= 1
        print("sampled")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "no-hub-cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "sampled" in done.stdout, done.stderr[-2000:]
    meta = json.loads((tmp_path / "pipe" / "ablate_cell.json").read_text())
    assert meta["cell"] == run_dir.name and meta["step"] == 3 and meta["weights"] == "ema"


def test_ablates_unet_exports_when_its_weights_map(cells, tmp_path):
    run_dir = cells[("unet", "epsilon", 32)]
    assert main(["export-model", run_dir.name, "--to", str(tmp_path / "pipe"), "--runs-dir", str(run_dir.parent)]) == 0
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "pipe" / "unet").eval()
    module, _, _, _ = ablate_side(run_dir)
    x = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 7, 300, 999])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, module(x, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("key", "why"), [(("unet", "epsilon", 8), "groups"), (("mlp", "epsilon", None), "'mlp'")])
def test_other_models_say_only_diffusers_unet_cells_export(cells, tmp_path, capsys, key, why):
    run_dir = cells[key]
    assert main(["export-model", str(run_dir), "--to", str(tmp_path / "pipe")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "only diffusers_unet cells export" in err and why in err
    assert not (tmp_path / "pipe").exists()


def test_bad_targets_are_one_line(cells, tmp_path, capsys):
    run_dir = cells[("diffusers_unet", "x0", None)]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    for args, expected in ((["nope", "--to", str(tmp_path / "p")], "not a cell's run dir"),
                           ([str(run_dir), "--to", str(tmp_path / "full")], "not an empty folder")):
        assert main(["export-model", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_without_diffusers_the_registry_loads_and_a_study_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # what `import diffusers` sees where it is not installed
    assert "diffusers_unet" in load_registry().names("model")
    assert run(write_study(tmp_path, base={**DIGITS, "model": {"name": "diffusers_unet"}})) == 2
    err = capsys.readouterr().err
    assert "pip install 'ablate[diffusers]'" in err and "Traceback" not in err
    assert main(["export-model", "abc", "--to", str(tmp_path / "p")]) == 2
    assert "pip install 'ablate[diffusers]'" in capsys.readouterr().err
