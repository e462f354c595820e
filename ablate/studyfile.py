"""Reading a study file: its bytes become TOML tables, or one error that says what the file is instead.

Torch-free, so that `ablate report` reads study names without importing the training stack.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ablate.errors import StudyError


def read_toml(path: Path) -> dict[str, Any]:
    """The study file's tables; a directory, an unreadable, binary or non-UTF-8 file is one error.
    A leading byte-order mark (some Windows editors write one) is accepted."""
    file = str(path)
    if path.is_dir():
        raise StudyError("is a directory, not a study file (give the .toml file inside it)", file=file)
    if not path.is_file():
        raise StudyError("study file not found", file=file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StudyError(f"cannot read the study file: {exc.strerror or exc}", file=file) from None
    if b"\0" in data:
        raise StudyError("a binary file, not a TOML study file", file=file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise StudyError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save the study as UTF-8",
                         file=file) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"not valid TOML: {exc}", file=file) from None
