"""`ablate export`: a study's results as one tidy table, a row per stored value, for pandas, R or a notebook.

Each row says what the value is (study, profile, arm and one column per arm axis, seed, sampler,
metric, key), which weights it scores (`weights`, `train_step`, `final`), at what cost (nfe,
num_samples, seconds), and what computed it (the cell key and the identities of the plugins it rests
on, a JSON string). `pandas.read_csv(FILE)` or `pandas.read_parquet(FILE)` is all a reader needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ablate.errors import AblateError
from ablate.interfaces import KINDS
from ablate.store import FINAL, Store

FORMATS = ("csv", "parquet")
DEFAULT = "default"  # the profile of a run without --profile (stored as "")
HEAD = ["study", "profile", "arm"]
TAIL = ["seed", "sampler", "metric", "key", "value", "weights", "train_step", "final", "nfe", "num_samples",
        "seconds", "cell", "plugins"]


def arm_axes(arm: str, config: dict[str, Any]) -> dict[str, str]:
    """An arm label's values by axis: 'x0 + lr=0.0002 + cosine(T=500)' -> {'target': 'x0', 'lr': '0.0002',
    'schedule': 'cosine(T=500)'}. The grid labels a dotted key's option 'name=value' and a plugin
    option by the plugin's label (ablate.grid), whose section the cell's config tells."""
    axes: dict[str, str] = {}
    if arm == "default":
        return axes
    sections = [k.section for k in KINDS.values() if k.cell]
    for i, part in enumerate(arm.split(" + ")):
        name, sep, value = part.partition("=")
        if sep and "(" not in name:
            axes[name] = value
            continue
        plugin = part.split("(", 1)[0]
        section = next((s for s in sections if config.get(s, {}).get("name") == plugin), f"axis{i}")
        axes[section] = part
    return axes


def study_name(study: str) -> str:
    """A study given as its TOML file or by name."""
    if study.endswith(".toml") or Path(study).is_file():
        from ablate.report import study_names

        return next(iter(study_names([study], None)))  # type: ignore[arg-type]  # a path list needs no store
    return study


def tidy(store: Store, study: str, profile: str | None = None) -> pd.DataFrame:
    """Every stored value of the latest run of each profile of a study (or of one profile)."""
    profiles = store.profiles(study)
    if not profiles:
        known = ", ".join(store.studies()) or "none"
        raise AblateError(f"no runs of study {study!r} in {store.path} (studies there: {known}); run `ablate run STUDY` first "
                          "(or pass the --runs-dir it ran with)")
    if profile is not None:
        if profile == DEFAULT and DEFAULT not in profiles and "" in profiles:
            profile = ""
        if profile not in profiles:
            raise AblateError(f"study {study!r} has no runs with profile {profile!r} in {store.path} "
                              f"(profiles: {', '.join(p or DEFAULT for p in profiles)})")
        profiles = [profile]
    frames = [store.results(study, p, final_only=False) for p in profiles]
    rows = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    if rows.empty:
        raise AblateError(f"study {study!r} has no results in {store.path} yet; run `ablate run` first")
    marks = ",".join("?" * rows.cell.nunique())
    cells = store.frame(f"SELECT key AS cell, config, step AS trained, plugins AS cell_plugins FROM cells "
                        f"WHERE key IN ({marks})", tuple(rows.cell.unique()))
    evals = store.frame(f"SELECT cell, sampler, metric, step, weights, plugins AS eval_plugins FROM evals "
                        f"WHERE cell IN ({marks})", tuple(rows.cell.unique()))
    rows = rows.merge(cells, on="cell", how="left").merge(evals, on=["cell", "sampler", "metric", "step", "weights"],
                                                          how="left")
    rows["profile"] = rows.profile.replace("", DEFAULT)
    rows["final"] = rows.step == FINAL
    rows["train_step"] = rows.step.where(~rows.final, rows.trained).astype("Int64")
    rows["plugins"] = [json.dumps({**json.loads(c or "{}"), **json.loads(e or "{}")}, sort_keys=True)
                       for c, e in zip(rows.cell_plugins, rows.eval_plugins, strict=True)]
    axes = pd.DataFrame([arm_axes(a, json.loads(c)) for a, c in zip(rows.arm, rows.config, strict=True)], index=rows.index)
    axes.columns = [f"arm.{c}" if c in HEAD + TAIL else c for c in axes.columns]
    for column in axes.columns:  # a numeric axis (lr=0.0002, D=8) reads back as numbers
        numbers = pd.to_numeric(axes[column], errors="coerce")
        if numbers.notna().sum() == axes[column].notna().sum():
            axes[column] = numbers
    return pd.concat([rows[HEAD], axes, rows[TAIL]], axis=1)


def export_results(study: str, fmt: str, out: str | Path | None = None, profile: str | None = None,
                   runs_dir: str | Path = "runs") -> tuple[Path, int]:
    """Write the tidy table; returns its path and number of rows. Default file: <study>[-<profile>].<fmt>."""
    if fmt not in FORMATS:
        raise AblateError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise AblateError("--format parquet needs pyarrow: pip install 'ablate[parquet]' (or use --format csv)") from None
    name = study_name(study)
    db = Path(runs_dir) / "ablate.db"
    if not db.is_file():
        raise AblateError(f"no results store at {db}; run `ablate run STUDY` first (or pass --runs-dir)")
    store = Store(db)
    try:
        frame = tidy(store, name, profile)
    finally:
        store.close()
    path = Path(out) if out else Path(f"{name}{f'-{profile}' if profile else ''}.{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path, len(frame)
