"""Executors: how independent cells are run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ablate import Executor, hookimpl


class Local(Executor):
    """One cell after another in this process (the default)."""

    name = "local"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield fn(item)


@hookimpl
def ablate_executors() -> list[type]:
    return [Local]
