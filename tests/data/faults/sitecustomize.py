"""Fault injection for the subprocess tests (put this folder on PYTHONPATH): $ABLATE_FAULT is
"ACTION:TABLE:N", acting on the N-th `executemany` into TABLE of any SQLite connection.

ACTION "kill": the rows are written, then the process SIGKILLs itself inside the transaction;
ACTION "full": the write fails the way SQLite reports ENOSPC ("database or disk is full").
"""

from __future__ import annotations

import os
import signal
import sqlite3

FAULT = os.environ.get("ABLATE_FAULT")

if FAULT:
    ACTION, TABLE, N = FAULT.split(":")

    class Faulty(sqlite3.Connection):
        calls = 0

        def executemany(self, sql, rows):  # noqa: ANN001, ANN201
            if f"INTO {TABLE} " not in sql:
                return super().executemany(sql, rows)
            Faulty.calls += 1
            if Faulty.calls == int(N) and ACTION == "full":
                raise sqlite3.OperationalError("database or disk is full")
            cursor = super().executemany(sql, rows)
            if Faulty.calls == int(N) and ACTION == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            return cursor

    _connect = sqlite3.connect

    def connect(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        kwargs.setdefault("factory", Faulty)
        return _connect(*args, **kwargs)

    sqlite3.connect = connect
