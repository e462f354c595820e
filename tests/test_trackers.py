"""Experiment trackers mirror the results store: TensorBoard's and MLflow's own readers get back exactly
what the store holds (the config, the tags, every loss, every metric at every evaluated step, the sample
grids), once per step however often the study runs; a broken tracker costs one line on stderr and
nothing else; and trackers are not part of any cell key.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from test_tutorial import extract

import ablate
from ablate.interfaces import KINDS
from ablate.store import Store
from ablate.study import load_study
from ablate.tracking import Mirror, forget
from studies import DATA, TINY, merged, query, run, write_study

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40

TRACKED = merged(TINY, {"study": {"name": "tracked"}, "data": {"n_train": 2000, "n_test": 500},
                          "model": {"hidden": 32, "depth": 2}, "schedule": {"T": 100},
                          "train": {"steps": STEPS, "batch_size": 64, "warmup": None, "log_every": 10, "checkpoint_every": 20},
                          "eval": {"grid_samples": 16, "at_steps": [20]},
                          "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
                          "sampler": [{"name": "ddim", "steps": 10}],
                          "metric": [{"name": "gmm_fit", "num_samples": 200},
                                     {"name": "x0_error_by_t", "num_samples": 64, "timesteps": [0, 50, 99]}]})


def write(tmp_path: Path, trackers: tuple[str, ...] = (), plugins: tuple[str, ...] = (), metric: tuple[dict, ...] = (),
          tracker: tuple[dict, ...] = ()) -> Path:
    """The study with `[[tracker]]` tables (`tracker`, then one per name in `trackers`) and `metric` added."""
    return write_study(tmp_path, "tracked.toml", base=TRACKED, plugins=list(plugins) or None,
                       metric=[*TRACKED["metric"], *metric], tracker=[*tracker, *({"name": t} for t in trackers)] or None)


def stored(runs: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """cell -> name -> [(step, value)] from the store, named as the trackers document it."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for cell, step, loss in query(runs, "SELECT cell, step, loss FROM losses ORDER BY step"):
        out.setdefault(cell, {}).setdefault("train/loss", []).append((step, loss))
    for cell, sampler, metric, key, step, value in query(
            runs, "SELECT cell, sampler, metric, key, step, value FROM metrics ORDER BY step"):
        name = f"{metric}/{key}" if sampler == "-" else f"{sampler}/{metric}/{key}"
        out[cell].setdefault(name, []).append((STEPS if step == -1 else step, value))
    return {cell: {name: sorted(points) for name, points in names.items()} for cell, names in out.items()}


def cells(runs: Path) -> dict[str, tuple[str, int, dict]]:
    """cell -> (arm, seed, config)."""
    return {c: (arm, seed, json.loads(config)) for c, arm, seed, config in query(
        runs, "SELECT c.key, rc.arm, rc.seed, c.config FROM cells c JOIN run_cells rc ON rc.cell = c.key GROUP BY c.key")}


def tensorboard(runs: Path, cell: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs / "tensorboard" / "tracked" / cell), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def tensorboard_scalars(runs: Path, cell: str) -> dict[str, list[tuple[int, float]]]:
    acc = tensorboard(runs, cell)
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def mlflow_client(runs: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def mlflow_runs(runs: Path) -> dict[str, object]:
    """cell -> the MLflow run tagged with it (exactly one each)."""
    client = mlflow_client(runs)
    experiment = client.get_experiment_by_name("tracked")
    found = client.search_runs([experiment.experiment_id])
    by_cell = Counter(r.data.tags["ablate.cell"] for r in found)
    assert all(n == 1 for n in by_cell.values()), by_cell
    return {r.data.tags["ablate.cell"]: r for r in found}


def mlflow_name(name: str) -> str:
    """What MLflow's key rules leave of a name (written out here, not taken from the plugin)."""
    return (name.replace("real data (held-out)", "real data held-out").replace("(num_samples=200)", " num_samples 200")
            .replace("(steps=10)", " steps 10").replace("(num_samples=64, timesteps=[0, 50, 99])", " num_samples 64 timesteps 0 50 99")
            .replace("/t=", "/t "))


def mlflow_metrics(runs: Path, run) -> dict[str, list[tuple[int, float]]]:
    client = mlflow_client(runs)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}


def assert_mirrors(runs: Path, with_mlflow: bool = True) -> None:
    """Every loss and metric value of the store is in each tracker once, at its step, and nothing else is."""
    expected = stored(runs)
    assert len(expected) == 2
    for cell, names in expected.items():
        scalars = tensorboard_scalars(runs, cell)
        assert scalars.keys() == names.keys()
        for name, points in names.items():  # TensorBoard keeps float32
            assert [s for s, _ in scalars[name]] == [s for s, _ in points], name
            assert [v for _, v in scalars[name]] == pytest.approx([v for _, v in points], rel=1e-6), name
    if with_mlflow:
        by_cell = mlflow_runs(runs)
        assert by_cell.keys() == expected.keys()
        for cell, names in expected.items():
            assert mlflow_metrics(runs, by_cell[cell]) == {mlflow_name(n): p for n, p in names.items()}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, monkeypatch_module):
    """One run of the study with both trackers, MLflow at its default place (MLFLOW_TRACKING_URI unset)."""
    tmp = tmp_path_factory.mktemp("tracked")
    runs = tmp / "runs"
    ablate.run_study(write(tmp, ("tensorboard", "mlflow")), runs_dir=runs, progress=False)
    return runs


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield mp


def test_tensorboard_holds_every_loss_and_metric_of_the_store(tracked):
    expected = stored(tracked)
    some = next(iter(expected.values()))
    # the loss curve, the final metrics and the learning-curve points (eval.at_steps) are all there
    assert [s for s, _ in some["train/loss"]] == [10, 20, 30, 40]
    assert [s for s, _ in some["x0_error_by_t(num_samples=64, timesteps=[0, 50, 99])/t=0"]] == [20, 40]
    assert {"ddim(steps=10)/gmm_fit(num_samples=200)/nll", "real data (held-out)/gmm_fit(num_samples=200)/nll"} <= some.keys()
    assert_mirrors(tracked, with_mlflow=False)


def test_tensorboard_shows_the_config_the_tags_and_the_sample_grid(tracked):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for cell, (arm, _, config) in cells(tracked).items():
        acc = tensorboard(tracked, cell)
        text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == config
        tags = acc.Tensors("tags/text_summary")[0].tensor_proto.string_val[0].decode()
        assert f"- ablate.cell: `{cell}`" in tags and f"- axis.target: `{arm}`" in tags and "- plugin.model/mlp: `built-in" in tags
        start = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        hparams = start.session_start_info.hparams
        assert hparams["arm"].string_value == arm and hparams["train.steps"].number_value == STEPS
        assert hparams["target.name"].string_value == config["target"]["name"]
        (image,) = acc.Images("samples/ddim(steps=10)")
        assert image.step == STEPS
        picture = Image.open(io.BytesIO(image.encoded_image_string))
        assert picture.size == (image.width, image.height) and min(picture.size) >= 200
        assert len(picture.convert("RGB").getcolors(1 << 24)) > 2  # drawn points, not a blank canvas


def test_mlflow_holds_one_run_per_cell_with_params_tags_metrics_and_grid(tracked):
    by_cell = mlflow_runs(tracked)
    client = mlflow_client(tracked)
    for cell, (arm, seed, config) in cells(tracked).items():
        run = by_cell[cell]
        assert run.info.run_name == f"{arm} seed {seed}" and run.info.status == "FINISHED"
        assert run.data.params["train.steps"] == str(STEPS) and run.data.params["target.name"] == config["target"]["name"]
        assert run.data.params["model.hidden"] == "32" and run.data.params["seed"] == "0"
        assert run.data.params["data.name"] == "gmm2d"
        tags = run.data.tags
        assert (tags["ablate.study"], tags["ablate.arm"], tags["ablate.seed"], tags["axis.target"]) == ("tracked", arm, "0", arm)
        assert tags["plugin.target/" + config["target"]["name"]].startswith("built-in (ablate ")
        assert tags["plugin.sampler/ddim"].startswith("built-in") and tags["plugin.metric/gmm_fit"].startswith("built-in")
        (artifact,) = client.list_artifacts(run.info.run_id, "samples")
        assert artifact.path == "samples/ddim steps 10.png"
        picture = Image.open(client.download_artifacts(run.info.run_id, artifact.path))
        assert min(picture.size) >= 200
    assert (tracked / "mlartifacts" / "tracked").is_dir()  # the default store keeps its artifacts with the runs
    assert_mirrors(tracked)


def test_a_rerun_logs_nothing_twice_and_a_new_tracker_gets_the_whole_history(tmp_path, monkeypatch):
    """Run 1 computes one cell without trackers; run 2 (two worker processes) adds both trackers: the
    done cell is logged from the store, the other as its worker's rows are merged; run 3 logs nothing;
    run 4 adds a metric: only its rows are logged."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    ablate.run_study(write(tmp_path), runs_dir=runs, progress=False, overrides=['grid.target=[{name="epsilon"}]'])
    study = write(tmp_path, ("tensorboard",))
    ablate.run_study(study, runs_dir=runs, progress=False, overrides=['executor={name="local", workers=2}'], trackers=["mlflow"])
    assert_mirrors(runs)
    files = sorted(runs.rglob("events.out.tfevents.*"))
    ablate.run_study(study, runs_dir=runs, progress=False, trackers=["mlflow"])
    assert sorted(runs.rglob("events.out.tfevents.*")) == files  # nothing new: no tracker was called
    spread = {"name": "spread", "num_samples": 200}
    ablate.run_study(write(tmp_path, ("tensorboard", "mlflow"), metric=(spread,)), runs_dir=runs, progress=False)
    assert "ddim(steps=10)/spread(num_samples=200)/spread_ratio" in next(iter(stored(runs).values()))
    assert_mirrors(runs)  # every step once, the spread values included


def test_a_broken_tracker_costs_one_line_and_nothing_else(tmp_path, capsys, monkeypatch):
    """A tracker that raises on every cell and MLflow pointed where nothing can be written each get one
    line on stderr; the study stores every result and exits 0, and the working trackers (TensorBoard and
    the example of docs/writing-a-plugin.md) log everything; `--track` adds trackers from the CLI."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where MLflow wants a folder\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'mlflow.db'}")
    (tmp_path / "jsonl_tracker.py").write_text(extract(ROOT / "docs" / "writing-a-plugin.md")["jsonl_tracker.py"])
    study = write(tmp_path, ("broken", "jsonl"), plugins=(str(DATA / "broken_tracker.py"), "./jsonl_tracker.py"))
    runs = tmp_path / "runs"
    assert run(study, runs, "--track", "mlflow", "--track", "tensorboard") == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracker ")]
    assert len(err) == 2, err
    broken = next(line for line in err if line.startswith("tracker broken "))
    assert f"[{DATA / 'broken_tracker.py'}]" in broken and "ConnectionError: tracking server unreachable" in broken
    mlflow = next(line for line in err if line.startswith("tracker mlflow "))
    assert "mlflow [built-in]" in mlflow and str(blocker) in mlflow
    assert query(runs, "SELECT status FROM cells") == [("done",), ("done",)]
    assert query(runs, "SELECT COUNT(*) FROM evals") == [(8,)]  # per cell: gmm_fit x (ddim, floor), x0_error_by_t x (20, final)
    assert query(runs, "SELECT DISTINCT tracker FROM tracked ORDER BY 1") == [("jsonl",), ("tensorboard",)]
    assert_mirrors(runs, with_mlflow=False)
    lines = [json.loads(line) for line in (runs / "tracked.jsonl").read_text().splitlines()]
    assert sorted((r["cell"], r["name"], r["step"], r["value"]) for r in lines) == sorted(
        (cell, name, step, value) for cell, names in stored(runs).items() for name, points in names.items() for step, value in points)


def test_a_missing_tracker_package_is_one_line_naming_its_extra(tmp_path, capsys, monkeypatch):
    """As docs/study-format.md shows it; the run opens its trackers before the first cell."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what Python does for an uninstalled package
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    study = load_study(write(tmp_path, ("tensorboard", "mlflow")))
    store = Store(tmp_path / "runs" / "ablate.db")
    try:
        mirror = Mirror(study, store, tmp_path / "runs", {}, {"samplers": [], "metrics": []})
    finally:
        store.close()
    assert mirror.active == []
    off = "failed and is off for the rest of this run (the results store is unaffected): AblateError: needs the"
    assert capsys.readouterr().err.splitlines() == [
        f"tracker tensorboard [built-in] {off} tensorboard package: pip install 'ablate[tensorboard]'",
        f"tracker mlflow [built-in] {off} mlflow package: pip install 'ablate[mlflow]'"]
    documented = (ROOT / "docs" / "study-format.md").read_text()
    assert f"tracker mlflow [built-in] {off} mlflow package: pip install 'ablate[mlflow]'" in documented


def test_track_names_an_unknown_tracker_before_anything_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert run(write(tmp_path), runs, "--track", "tensorbord") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--track: unknown tracker 'tensorbord'" in err and "did you mean 'tensorboard'" in err
    assert not (runs / "ablate.db").exists()


def test_a_tracker_is_not_part_of_the_cell(tmp_path):
    assert KINDS["tracker"].many and not KINDS["tracker"].cell
    plain = load_study(write(tmp_path))
    with_trackers = load_study(write(tmp_path, ("tensorboard", "mlflow")))
    assert [c.key for c in with_trackers.cells] == [c.key for c in plain.cells]
    assert all("tracker" not in c.config for c in with_trackers.cells)



def test_a_tracker_table_is_validated_with_the_study(tmp_path):
    study = write(tmp_path, tracker=({"name": "tensorboard", "logdir": "x"},))
    with pytest.raises(ablate.StudyError, match=r"tracker\[0\]\.logdir: unknown key"):
        load_study(study)



def test_recomputed_results_are_logged_again(tracked, tmp_path):
    """--recompute-stale deletes a changed cell or evaluation (ablate.runner.settle_stale): what the trackers
    logged of it is forgotten with it, and of it only."""
    runs = tmp_path / "runs"
    shutil.copytree(tracked, runs)
    store = Store(runs / "ablate.db")
    try:
        first, second = sorted(cells(runs))
        logged = lambda cell: {w for (w,) in store.db.execute("SELECT what FROM tracked WHERE cell=?", (cell,))}  # noqa: E731
        before = logged(second)
        sampler = "ddim(steps=10)"
        assert {"params", "losses", f"grid {sampler}"} <= before and len(before) == 2 + 1 + 4  # 4 evaluations
        forget(store, [first], [(second, sampler, "gmm_fit(num_samples=200)")])
        assert logged(first) == set()
        assert before - logged(second) == {f"grid {sampler}", f'eval ["{sampler}", "gmm_fit(num_samples=200)", -1, "ema"]'}
    finally:
        store.close()
