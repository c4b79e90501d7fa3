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


__all__ = ["open_database"]
