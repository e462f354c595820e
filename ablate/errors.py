"""Errors a user can fix: the CLI prints them in one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name, or '' when none is close: a typo's fix in one look."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class AblateError(Exception):
    """A problem with the user's input (study, plugin, file, network), not a bug in ablate."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(AblateError):
    """Unknown, duplicate, broken or malformed plugin."""


class StudyError(AblateError):
    """A study file that does not validate."""


class StudyNote(UserWarning):
    """Something the user may not expect from a valid study (e.g. a plugin switch dropping params): a `note:` line."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the cell is marked failed, the study goes on."""
