"""Experiment trackers: `tensorboard` and `mlflow` mirror what the results store holds.

Each is an optional extra (`pip install 'ablate[tensorboard]'`, `'ablate[mlflow]'`); its package is
imported when a run opens the tracker, so a missing one costs only that tracker (one line on stderr).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ablate import AblateError, TrackedCell, Tracker, hookimpl


def _need(package: str, extra: str) -> AblateError:
    return AblateError(f"needs the {package} package: pip install 'ablate[{extra}]'")


class TensorBoard(Tracker):
    """TensorBoard event files, one run folder per cell: `tensorboard --logdir runs/tensorboard`."""

    name = "tensorboard"

    class Params(Tracker.Params):
        log_dir: str | None = Field(None, description="folder of the event files (default: <runs dir>/tensorboard); "
                                    "each cell writes to <log_dir>/<study>/<cell key>")

    def open(self, study: str, runs_dir: Path) -> str:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _need("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter
        root = Path(self.params.log_dir).expanduser() if self.params.log_dir else runs_dir / "tensorboard"
        self.root = (root / study).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        return str(self.root)

    def log_cell(self, cell: TrackedCell) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self.writer(str(self.root / cell.key))
        try:
            if cell.first:  # the config as text and as hparams (the HParams tab tells the cells apart by arm)
                writer.add_text("config", "```json\n" + json.dumps(cell.config, indent=2, sort_keys=True) + "\n```")
                writer.add_text("tags", "\n".join(f"- {k}: `{v}`" for k, v in cell.tags().items()))
                values = {"arm": cell.arm, "seed": cell.seed, **cell.params()}
                for summary in hparams(values, {}):
                    writer.file_writer.add_summary(summary)
            for step, loss in cell.losses:
                writer.add_scalar("train/loss", loss, step)
            for point in cell.metrics:
                writer.add_scalar(point.name, point.value, point.step)
            for sampler, image in cell.grids.items():
                writer.add_image(f"samples/{sampler}", image, cell.final_step, dataformats="HWC")
        finally:
            writer.close()


def _key(name: str) -> str:
    """An MLflow key (letters, digits, _ - . / space): 'ddim(steps=10, eta=1.0)' -> 'ddim steps 10 eta 1.0'."""
    return re.sub(r" *([/]) *", r"\1", re.sub(r"[^\w.\-/]+", " ", name)).strip()


class MLflow(Tracker):
    """MLflow: one run per cell in an experiment named after the study; $MLFLOW_TRACKING_URI when set."""

    name = "mlflow"

    class Params(Tracker.Params):
        tracking_uri: str | None = Field(None, description="where to log (default: $MLFLOW_TRACKING_URI when set, "
                                         "else sqlite:///<runs dir>/mlflow.db with artifacts in <runs dir>/mlartifacts)")

    def open(self, study: str, runs_dir: Path) -> str:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _need("mlflow", "mlflow") from None
        for logger in ("mlflow", "alembic"):  # its database setup logs at INFO on every new store
            logging.getLogger(logger).setLevel(logging.WARNING)
        uri = self.params.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:  # MLflow would put the artifacts of a sqlite store in ./mlartifacts: keep them with the runs
            uri = f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"
            artifacts = (runs_dir / "mlartifacts" / study).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(study)
        self.experiment = experiment.experiment_id if experiment else self.client.create_experiment(
            study, artifact_location=artifacts)
        return f"{uri} experiment {study}"

    def log_cell(self, cell: TrackedCell) -> None:
        import numpy as np
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._run(cell)
        stamp = int(time.time() * 1000)
        metrics = [Metric("train/loss", loss, stamp, step) for step, loss in cell.losses]
        metrics += [Metric(_key(p.name), p.value, stamp, p.step) for p in cell.metrics]
        params = [Param(_key(k), str(v)) for k, v in cell.params().items()] if cell.first else []
        tags = [RunTag(_key(k), v) for k, v in cell.tags().items()]
        for b in range(max(1, math.ceil(len(metrics) / 900), math.ceil(len(params) / 50), math.ceil(len(tags) / 50))):
            self.client.log_batch(run_id, metrics=metrics[b * 900: (b + 1) * 900], params=params[b * 50: (b + 1) * 50],
                                  tags=tags[b * 50: (b + 1) * 50])  # MLflow takes at most 1000 entries per batch
        for sampler, image in cell.grids.items():
            self.client.log_image(run_id, np.ascontiguousarray(image), artifact_file=f"samples/{_key(sampler)}.png")
        if cell.status in ("done", "failed"):
            self.client.set_terminated(run_id, "FINISHED" if cell.status == "done" else "FAILED")

    def _run(self, cell: TrackedCell) -> str:
        """The cell's MLflow run, found by its `ablate.cell` tag (a rerun adds to it), else a new one."""
        found = self.client.search_runs([self.experiment], f"tags.`ablate.cell` = '{cell.key}'", max_results=1)
        if found:
            return found[0].info.run_id
        return self.client.create_run(self.experiment, run_name=f"{cell.arm} seed {cell.seed}",
                                      tags={"ablate.cell": cell.key}).info.run_id


@hookimpl
def ablate_trackers() -> list[type[Any]]:
    return [TensorBoard, MLflow]
