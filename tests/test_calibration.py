"""Numbers with units and a scale: standardised features, the calibration ladder, a floor that copying
cannot reach, and MiFID's memorisation term (issue 21). On scikit-learn's digits with small counts;
the feature classifier trains once per module (seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from ablate_plugins.features import embed

import ablate
from ablate import ladder
from ablate.cli import main
from ablate.datatypes import REFERENCE, EvalContext
from ablate.evaluate import as_saved
from ablate.store import LADDER, REAL_DATA, Store
from studies import TINY, plugin, run, write_study


def exact_cdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances with no matrix-product rounding: a copy is at exactly 0."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    registry = ablate.load_registry()
    data = registry.create("dataset", "digits").load()
    train, test = as_saved(data.train, data.spec), as_saved(data.test, data.spec)
    ctx = EvalContext(data=data, denoiser=None, diffusion=None, device=torch.device("cpu"),
                      cache_dir=tmp_path_factory.mktemp("cache"), generator=torch.Generator().manual_seed(0),
                      extra={REFERENCE: test})
    rungs = ladder.build(data, 1000, 0, lambda x: as_saved(x, data.spec))
    return registry, data, train, test, ctx, rungs


def score(digits, name: str, samples: torch.Tensor, real: torch.Tensor | None = None, **params) -> dict[str, float]:
    registry, _, train, test, ctx, _ = digits
    metric = registry.create("metric", name, params)
    return metric.evaluate(samples, real if real is not None else (train if metric.compares_with == "train" else test), ctx)


@pytest.mark.parametrize("features", ["classifier", "raw"])
def test_standardised_features_have_zero_mean_and_unit_sd_on_the_reference(digits, features):
    registry, data, _, test, ctx, _ = digits
    metric = registry.create("metric", "kid", {"features": features})
    extractor = metric._extractor(ctx)
    z = embed(extractor.feature, extractor.prepare, test)
    raw = embed(extractor.feature.inner, extractor.prepare, test)
    constant = raw.std(0) < 1e-6
    assert z.mean(0).abs().max() < 1e-5
    assert torch.allclose(z.std(0)[~constant], torch.ones(int((~constant).sum()), dtype=z.dtype), atol=1e-5)
    assert (z[:, constant] == 0).all()  # sd ~0 on the reference: kept at sd 1, so it stays 0 there
    if features == "raw":
        assert constant.any()  # digits' always-blank corner pixels
    else:
        assert raw.norm(dim=1).mean() > 10  # the unit that was missing: raw classifier features are large


def test_standardise_false_keeps_raw_features(digits):
    registry, _, _, _, ctx, _ = digits
    extractor = registry.create("metric", "fid", {"standardise": False})._extractor(ctx)
    assert type(extractor.feature).__name__ == "Classifier"


def test_the_ladder_is_in_order(digits):
    *_, rungs = digits
    kid = {label: score(digits, "kid", x)["kid"] for label, x in rungs.items()}
    assert list(kid) == list(LADDER)  # labelled digits get every rung
    assert kid["ladder: noise 0.1"] < kid["ladder: noise 0.3"]  # noise scores worse as its sd grows
    assert kid["ladder: 100 copies"] < kid["ladder: 10 copies"]  # fewer distinct images score worse
    assert kid["ladder: 10 copies"] > 0.5 and kid["ladder: blur 1px"] > 0.5
    fid = {label: score(digits, "fid", x)["fid"] for label, x in rungs.items()}
    assert fid["ladder: noise 0.1"] < fid["ladder: noise 0.3"] < fid["ladder: class means"] < fid["ladder: 10 copies"]


def test_rungs_are_as_saved_and_drawn_by_the_seed(digits):
    _, data, train, _, _, rungs = digits
    for label, x in rungs.items():
        assert x.shape == (1000, 1, 8, 8) and torch.equal(x, as_saved(x, data.spec)), label
    copies = rungs["ladder: 100 copies"].flatten(1)
    assert torch.unique(copies, dim=0).shape[0] == 100
    assert (exact_cdist(copies, train.flatten(1)).min(1).values == 0).all()  # every one a training image
    means = torch.unique(rungs["ladder: class means"].flatten(1), dim=0)
    assert means.shape[0] == 10
    again = ladder.build(data, 1000, 0, lambda x: as_saved(x, data.spec))
    other = ladder.build(data, 1000, 1, lambda x: as_saved(x, data.spec))
    assert all(torch.equal(again[k], rungs[k]) for k in rungs)
    assert not torch.equal(other["ladder: noise 0.1"], rungs["ladder: noise 0.1"])
    points = ablate.load_registry().create("dataset", "gmm2d", {"n_train": 100, "n_test": 100}).load()
    assert ladder.labels(points) == [] and ladder.build(points, 10, 0, lambda x: x) == {}


def test_100_copies_score_near_the_floor_on_kid_while_close_copies_flags_them(digits):
    """A distribution metric cannot tell copies from a model: 100 training images, each repeated 10 times,
    score within 0.1 of the held-out floor on KID (measured: 0.057 against 0.005), where a blur scores
    above 1. nearest_neighbour's close_copies is 1 for them and about 0.01 for held-out images."""
    *_, train, test, _, rungs = digits
    copies = rungs["ladder: 100 copies"]
    floors = []
    for seed in range(4):
        samples, reference = ladder.floor(test, train, False, seed)
        floors.append(score(digits, "kid", samples, reference)["kid"])
    floor = sum(floors) / len(floors)
    kid = score(digits, "kid", copies)["kid"]
    assert abs(kid - floor) < 0.1 and kid < 0.1 < score(digits, "kid", rungs["ladder: blur 1px"])["kid"]
    assert score(digits, "nearest_neighbour", copies)["close_copies"] == 1.0
    assert score(digits, "nearest_neighbour", test)["close_copies"] < 0.05


def test_the_floor_uses_no_training_image(digits):
    *_, train, test, _, _ = digits
    first, second = ladder.halves(test.shape[0], 3)
    assert sorted(torch.cat([first, second]).tolist()) == list(range(test.shape[0]))  # disjoint, all of it
    assert (first.numel(), second.numel()) == (180, 179)
    samples, reference = ladder.floor(test, train, False, 3)
    assert torch.equal(samples, test[first]) and torch.equal(reference, test[second])
    flat = train.flatten(1)
    assert (exact_cdist(samples.flatten(1), flat).min(1).values > 0).all()  # no sample is a training image
    assert (exact_cdist(reference.flatten(1), flat).min(1).values > 0).all()
    assert not torch.equal(ladder.halves(test.shape[0], 4)[0], first)  # each seed its own halving
    samples, reference = ladder.floor(test, train, True, 3)  # against the training split: all held-out images
    assert samples is test and reference is train


def test_mifid_punishes_copies_and_equals_fid_against_the_training_split_otherwise(digits):
    *_, train, test, _, rungs = digits
    copies = rungs["ladder: 100 copies"]
    fid_copies = score(digits, "fid", copies, train)["fid"]
    assert score(digits, "mifid", copies)["mifid"] > 1e6 * fid_copies  # copies: memorisation distance 0
    assert score(digits, "mifid", copies)["mifid"] > 1e6 * score(digits, "fid", copies)["fid"]
    # held-out images are further from the training set than cosine_distance_eps: MiFID is their FID
    assert score(digits, "mifid", test)["mifid"] == pytest.approx(score(digits, "fid", test, train)["fid"], rel=1e-6)
    # with Kaggle's threshold, held-out images (d = 0.037) would be divided too
    assert score(digits, "mifid", test, cosine_distance_eps=0.1)["mifid"] > 10 * score(digits, "fid", test, train)["fid"]


def test_feature_metric_keys_state_their_units():
    registry = ablate.load_registry()
    for name in ("fid", "kid", "prdc", "mifid", "nearest_neighbour"):
        for key, spec in registry.get("metric", name).keys.items():
            assert spec.unit, (name, key)
    assert "standardised features" in registry.get("metric", "kid").keys["kid"].unit


PROBE = plugin('''
import torch
from ablate import KeySpec, Metric


def share_in(x, pool):
    """Share of the rows of x that are exactly a row of pool."""
    dist = torch.cdist(x.flatten(1).double(), pool.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist")
    return float((dist.min(1).values == 0).double().mean())


class Probe(Metric):
    """Where its samples and its reference come from: training or held-out images, and shared rows."""

    name = "probe"
    keys = {"in_train": KeySpec(), "in_test": KeySpec(), "in_real": KeySpec(), "real_in_test": KeySpec()}

    def evaluate(self, samples, real, ctx):
        data = ctx.data
        saved = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        train, test = saved(data.train), saved(data.test)
        return {"in_train": share_in(samples, train), "in_test": share_in(samples, test),
                "in_real": share_in(samples, real), "real_in_test": share_in(real, test)}
''', ablate_metrics=["Probe"])

LADDER_STUDY = {"study": {"name": "ladder_e2e", "seeds": [0, 1]}, "data": {"name": "digits"},
                "model": {"hidden": 32, "depth": 2}, "schedule": {"T": 20, "beta_end": 0.015},
                "train": {"steps": 4, "warmup": 1, "checkpoint_every": 4, "log_every": 2},
                "eval": {"batch_size": 100, "grid_samples": 0},
                "metric": [{"name": "probe", "num_samples": 100}, {"name": "kid", "num_samples": 100, "subsets": 5}]}


def test_a_study_stores_the_floor_and_the_ladder_and_reports_them_apart(tmp_path, capsys):
    study = write_study(tmp_path, "s.toml", plugin_files={"probe.py": PROBE}, **LADDER_STUDY)
    runs, out = tmp_path / "runs", tmp_path / "reports"
    assert run(study, runs) == 0
    store = Store(runs / "ablate.db")
    try:
        frame = store.results("ladder_e2e")
    finally:
        store.close()
    probe = frame[frame.metric.str.startswith("probe")].pivot_table(index=["seed", "sampler"], columns="key", values="value")
    floor = probe.xs(REAL_DATA, level="sampler")
    assert (floor.in_train == 0).all() and (floor.in_real == 0).all()  # held-out images, not the reference's
    assert (floor.in_test == 1).all() and (floor.real_in_test == 1).all()
    assert set(frame[frame.sampler == REAL_DATA].num_samples) == {100}
    copies = probe.xs("ladder: 100 copies", level="sampler")
    assert (copies.in_train == 1).all() and (copies.real_in_test == 1).all()
    assert set(frame.sampler) == {"ancestral", REAL_DATA, *LADDER}
    assert set(frame[frame.sampler.isin(LADDER)].nfe) == {0}
    kid = frame[(frame.key == "kid")].groupby("sampler").value.mean()
    assert kid["ladder: 100 copies"] < kid["ladder: 10 copies"] and math.isfinite(kid[REAL_DATA])
    # a rerun finds every evaluation, the ladder's included, and redoes nothing
    capsys.readouterr()
    assert run(study, runs) == 0
    assert capsys.readouterr().out.count("already done") == 2
    assert main(["report", str(study), "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "ladder_e2e" / "README.md").read_text()
    assert "- Samplers: `ancestral`." in text  # rungs are never arms' samplers
    results = text.split("## Results")[1].split("## Calibration ladder")[0]
    assert "ladder:" not in results
    ladder_section = text.split("## Calibration ladder")[1]
    assert "| (every arm) | ladder: 100 copies | 100 |" in ladder_section
    assert "| (every arm) | real data (held-out) | 100 |" in ladder_section
    assert "### Units" in text and "- `kid`: squared MMD of standardised features" in text
    assert "FID is biased upward at small counts" in ladder_section


def test_points_get_no_ladder_and_a_rerun_is_already_done(tmp_path, capsys):
    """Points get no ladder rows, and a finished cell is still 'already done' (its data is loaded to tell)."""
    study = write_study(tmp_path, **{**LADDER_STUDY, "study": {"name": "ladder_e2e"}, "data": TINY["data"],
                                     "metric": [{"name": "spread", "num_samples": 50}]})
    runs = tmp_path / "runs"
    assert run(study, runs) == 0
    capsys.readouterr()
    assert run(study, runs) == 0
    assert "already done" in capsys.readouterr().out
    store = Store(runs / "ablate.db")
    try:
        assert set(store.results("ladder_e2e").sampler) == {"ancestral", REAL_DATA}
    finally:
        store.close()

