"""A local tracker plugin for the tests: opens fine, then raises on every cell it is given."""

from __future__ import annotations

from ablate import TrackedCell, Tracker, hookimpl


class Broken(Tracker):
    """Raises a two-line error from log_cell (the core must name it once and go on without it)."""

    name = "broken"

    def log_cell(self, cell: TrackedCell) -> None:
        raise ConnectionError(f"tracking server unreachable while logging {cell.key}\nretry later")


@hookimpl
def ablate_trackers() -> list[type]:
    return [Broken]
