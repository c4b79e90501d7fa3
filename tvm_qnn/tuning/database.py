# SPDX-License-Identifier: Apache-2.0
"""Tuning databases: MetaSchedule's JSON database in a work directory."""

from __future__ import annotations

import json
import logging
import os

from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError

logger = logging.getLogger("tvm_qnn")
FILES = ("database_workload.json", "database_tuning_record.json")


def _repair(path: str) -> None:
    """Drop the lines of a JSON-lines file that do not parse (a write cut short by a crash).

    MetaSchedule appends one record per line and refuses the whole file when one line is
    broken; losing a record is better than losing the database. The broken file is kept as
    ``<name>.corrupt`` and the repaired one replaces it atomically.
    """
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    good = []
    for line in lines:
        try:
            json.loads(line)
            good.append(line)
        except ValueError:
            pass
    if len(good) == len(lines):
        return
    logger.warning("%s: dropped %d unreadable line(s) (an interrupted write?); the original "
                   "is kept as %s.corrupt", path, len(lines) - len(good), path)
    os.replace(path, path + ".corrupt")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in good))
    os.replace(tmp, path)


def open_database(db, create: bool = False) -> ms.database.Database:
    """A MetaSchedule database from a Database, or the work directory of :func:`tvm_qnn.tune`.

    The directory holds MetaSchedule's ``database_workload.json`` and
    ``database_tuning_record.json``; with ``create`` it is made when missing.
    """
    if isinstance(db, ms.database.Database):
        return db
    path = os.fspath(db)
    if not os.path.isdir(path):
        if not create:
            raise TvmQnnError(f"tuning database {path!r}: no such directory "
                              "(tvm_qnn.tune(..., work_dir=...) writes one)")
        os.makedirs(path, exist_ok=True)
    elif not create and not os.path.isfile(os.path.join(path, "database_tuning_record.json")):
        raise TvmQnnError(f"tuning database {path!r} has no database_tuning_record.json")
    for name in FILES:
        _repair(os.path.join(path, name))
    return ms.database.JSONDatabase(work_dir=path)


def keep_best(db_dir: str | os.PathLike) -> tuple[int, int]:
    """Keep only the fastest record of each layer kernel in the database ``db_dir``.

    For a database to ship in ``schedules/``: ``compile`` uses only the best record, but
    loading costs about 1.4 ms per record (measured: 529 records, 0.72 s on every compile).
    Records are ranked as MetaSchedule ranks them (mean of ``run_secs``); the file is
    replaced atomically. Tuning the folder again starts those layers over (one record each).
    Returns (records before, records after).
    """
    path = os.path.join(os.fspath(db_dir), FILES[1])
    if not os.path.isfile(path):
        raise TvmQnnError(f"tuning database {os.fspath(db_dir)!r} has no {FILES[1]}")
    _repair(path)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    best: dict[int, tuple[float, int]] = {}
    for k, line in enumerate(lines):
        workload, (_, run_secs, *_) = json.loads(line)
        mean = sum(run_secs) / len(run_secs) if run_secs else float("inf")
        if workload not in best or mean < best[workload][0]:
            best[workload] = (mean, k)
    kept = sorted(k for _, k in best.values())
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(lines[k] + "\n" for k in kept))
    os.replace(tmp, path)
    return len(lines), len(kept)


__all__ = ["keep_best", "open_database"]
