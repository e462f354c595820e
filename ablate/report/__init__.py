"""`ablate report`: README.md + PNG plots per study and profile, generated from the results store alone.

Every number and the conclusion sentence come from the store; nothing is written by hand. The job is
split in layers: `data` reads the store into a `ReportData`, `text` writes the markdown, `plots` the
figures, and `index` keeps the sidecars from which the reports index and the cross-profile links are built.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ablate.errors import AblateError
from ablate.plugins import Registry, load_registry
from ablate.report import data as report_data
from ablate.report import index, plots, text
from ablate.store import Store
from ablate.studyfile import read_toml


def study_names(paths: list[str], store: Store) -> dict[str, str]:
    """Study name -> what to pass to `ablate run` for it (its file; the name for a study found in the store)."""
    if not paths:
        return {name: name for name in store.studies()}
    names = {}
    for p in paths:
        try:
            names[read_toml(Path(p))["study"]["name"]] = p
        except (KeyError, TypeError) as exc:
            raise AblateError(f"cannot read study.name ({exc})", file=p, key="study.name") from None
    return names


def write_reports(paths: list[str], runs_dir: str | Path = "runs", out_dir: str | Path = "reports") -> list[Path]:
    """Regenerate the reports of the given studies (default: every study in the store) and the index.

    Reports on disk that this store cannot regenerate (another machine's profile) are kept and linked."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    db = runs_dir / "ablate.db"
    if not db.exists():
        raise AblateError(f"no results store at {db}; run `ablate run STUDY` first (or pass --runs-dir)")
    store = Store(db)
    written: list[Path] = []
    registry = _installed_plugins()
    try:
        for name, path in study_names(paths, store).items():
            profiles = store.profiles(name)
            if not profiles:
                raise AblateError(f"no runs of study {name!r} in {db}; run `ablate run {path}` first "
                                  "(or pass the --runs-dir it ran with)")
            placed = index.folders(name, profiles, index.read(out_dir))
            changed: dict[str, None] = {}  # the plugins changed since, over the study's profiles
            for profile in sorted(profiles, key=index.profile_order):
                folder = placed[profile]
                data = report_data.load(store, name, profile, runs_dir, registry)
                path, conclusion = write_report(data, out_dir / folder, index.links(folder, placed))
                index.write(out_dir, index.Entry(name, profile, data.hardware_label, conclusion, f"{folder}/README.md"))
                written.append(path)
                changed |= dict.fromkeys(data.changed)
            if changed:  # one line per study; its reports say which results and what the code is now
                print(f"warning: study {name}: some reported results were computed by plugin code that has changed "
                      f"since ({', '.join(changed)}); `ablate run STUDY --recompute-stale` recomputes them", file=sys.stderr)
    finally:
        store.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    written.append(index.write_index(out_dir))
    return written


def _installed_plugins() -> Registry:
    """The plugins as installed now, to compare the reported results' plugin code with. Their load
    problems are `ablate run`'s and `ablate plugins`' to report, not the report's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_registry()


def write_report(data: report_data.ReportData, folder: Path, others: list[tuple[str, str]]) -> tuple[Path, str]:
    """One report's README.md and plots (replacing its old plots); returns its path and conclusion."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    markdown, conclusion = text.render(data, others, plots.draw(data, folder))
    (folder / "README.md").write_text(markdown)
    return folder / "README.md", conclusion
