"""The results store's read side: runs, cells, losses and metric rows as pandas frames, for the run's
summary, reports and exports. Only what a study's own run evaluated is returned, never the rows of
another study that shares a cell (ablate.store holds the write side; `Store` has both).
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from ablate.rowlabels import CELL, NO_SAMPLER, REFERENCE_ROWS

if TYPE_CHECKING:
    import pandas as pd


class Reads:
    """The read queries of `ablate.store.Store` (which opens `db`)."""

    db: sqlite3.Connection

    def frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        import pandas as pd  # here, not at the top: writing results (and `ablate plugins`) needs no pandas

        return pd.read_sql_query(sql, self.db, params=params)

    def studies(self) -> list[str]:
        return self.frame("SELECT DISTINCT study FROM runs ORDER BY study").study.tolist()

    def profiles(self, study: str) -> list[str]:
        """The profiles a study was run with, in the order first run."""
        return list(dict.fromkeys(self.frame("SELECT profile FROM runs WHERE study=? ORDER BY id", (study,)).profile))

    def run(self, run_id: int) -> pd.Series:
        """One row of the runs table (study, profile, study_file, started, finished, hardware, plugins, settings)."""
        return self.frame("SELECT * FROM runs WHERE id=?", (run_id,)).iloc[0]

    def run_cells(self, run_id: int) -> pd.DataFrame:
        """The cells of a run in the order run: cell, arm, seed, config, status, reason, train_seconds, num_params,
        step, clipped_steps, trivial_loss."""
        return self.frame("SELECT rc.cell, rc.arm, rc.seed, c.config, c.status, c.reason, c.train_seconds, c.num_params, "
                          "c.step, c.clipped_steps, c.trivial_loss "
                          "FROM run_cells rc JOIN cells c ON c.key = rc.cell WHERE rc.run=? ORDER BY rc.rowid", (run_id,))

    def worker_hardware(self, study: str, profile: str) -> dict[str, Any]:
        """The hardware of the run that did the work (the longest), not of a rerun that only skipped finished cells."""
        row = self.db.execute("SELECT hardware FROM runs WHERE study=? AND profile=? ORDER BY "
                              "COALESCE(finished, started) - started DESC LIMIT 1", (study, profile)).fetchone()
        return json.loads(row[0] or "{}") if row else {}

    def wall_seconds(self, study: str, profile: str) -> float | None:
        """Wall-clock seconds of the completed runs of a study and profile, summed (None: none completed)."""
        row = self.db.execute("SELECT SUM(finished - started) FROM runs WHERE study=? AND profile=? "
                              "AND finished IS NOT NULL", (study, profile)).fetchone()
        return None if row[0] is None else float(row[0])

    def losses(self, cells: list[str]) -> pd.DataFrame:
        """Training losses (cell, step, loss) of the given cells, by step."""
        marks = ",".join("?" * len(cells))
        return self.frame(f"SELECT cell, step, loss FROM losses WHERE cell IN ({marks}) ORDER BY step", tuple(cells))

    def latest_run(self, study: str, profile: str | None = None) -> int | None:
        """The newest run of a study (and profile): its cells are the study's current configuration."""
        sql, params = "SELECT id FROM runs WHERE study=?", (study,)
        if profile is not None:
            sql, params = sql + " AND profile=?", (study, profile)
        row = self.db.execute(sql + " ORDER BY (finished IS NOT NULL) DESC, id DESC LIMIT 1", params).fetchone()
        return None if row is None else int(row[0])

    def results(self, study: str, profile: str | None = None, run_id: int | None = None,
                final_only: bool = True) -> pd.DataFrame:
        """Metric rows of the cells of a study's run (default: its latest), with each cell's arm and seed.

        final_only: only the final EMA weights' rows (not the learning-curve or raw-weight rows)."""
        run_id = run_id if run_id is not None else self.latest_run(study, profile)
        frame = self.frame(
            "SELECT r.study, r.profile, rc.arm, rc.seed, m.cell, m.sampler, m.metric, m.key, m.value, m.num_samples, "
            "m.nfe, m.seconds, m.step, m.weights FROM run_cells rc JOIN runs r ON r.id = rc.run "
            "JOIN metrics m ON m.cell = rc.cell WHERE rc.run=?" + (" AND m.step = -1 AND m.weights = 'ema'" if final_only else "")
            + " ORDER BY rc.arm, rc.seed, m.sampler, m.metric, m.key, m.step", (run_id if run_id is not None else -1,))
        return self._of_study(frame, run_id)

    def run_failures(self, run_id: int) -> pd.DataFrame:
        """The failed units of a run's cells, of its own samplers and metrics: arm, seed, cell, sampler, metric,
        step, weights, plugin, origin, error, in the order the cells ran."""
        frame = self.frame("SELECT rc.arm, rc.seed, f.cell, f.sampler, f.metric, f.step, f.weights, f.plugin, f.origin, "
                           "f.error FROM run_cells rc JOIN failures f ON f.cell = rc.cell WHERE rc.run=? "
                           "ORDER BY rc.rowid, f.finished", (run_id,))
        return self._of_study(frame, run_id, samplers=(NO_SAMPLER, *REFERENCE_ROWS, CELL), metrics=(CELL,))

    def _of_study(self, frame: pd.DataFrame, run_id: int | None, samplers: tuple[str, ...] = (NO_SAMPLER, *REFERENCE_ROWS),
                  metrics: tuple[str, ...] = ()) -> pd.DataFrame:
        """Only the rows of the run's own samplers and metrics (and of the labels given), not those of studies sharing a cell."""
        row = self.db.execute("SELECT settings FROM runs WHERE id=?", (run_id,)).fetchone()
        settings = json.loads(row[0] or "{}") if row else {}
        if "samplers" in settings:
            frame = frame[frame.sampler.isin([*settings["samplers"], *samplers]) & frame.metric.isin([*settings["metrics"], *metrics])]
        return frame.reset_index(drop=True)
