# SPDX-License-Identifier: Apache-2.0
"""Tuning databases: MetaSchedule's JSON database in a work directory."""

from __future__ import annotations

import os

from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError


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
    return ms.database.JSONDatabase(work_dir=path)


__all__ = ["open_database"]
