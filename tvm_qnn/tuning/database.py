# SPDX-License-Identifier: Apache-2.0
"""Tuning databases: MetaSchedule's JSON database in a work directory."""

from __future__ import annotations

import json
import os

import numpy as np
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from ..runtime.atomic import scratch_dir, sync_file
from ..target import register_tensor_intrinsics
from .repair import RECORDS_FILE, WORKLOADS_FILE, locked, repair

# MetaSchedule stores a candidate that failed to build or run with this run time.
_FAILED_SECONDS = 1e9


def open_database(db, create: bool = False, workloads=()) -> ms.database.Database:
    """A MetaSchedule database from a Database, or the work directory of :func:`tvm_qnn.tune`.

    The directory holds MetaSchedule's ``database_workload.json`` and
    ``database_tuning_record.json``; with ``create`` it is made when missing. Lines
    MetaSchedule cannot read are set aside first (:func:`tvm_qnn.tuning.repair.repair`).

    ``workloads`` (IRModules) are committed while the folder is locked: the database numbers
    a new workload by the table it read, so another process appending between the read and
    the append would have both processes file records under the same number. A process
    that will add records commits their workloads here.
    """
    if isinstance(db, ms.database.Database):
        return db
    path = os.fspath(db)
    if os.path.exists(path) and not os.path.isdir(path):
        raise TvmQnnError(f"tuning database {path!r} is a file; it is a directory (made by "
                          "tvm_qnn.tune(..., work_dir=...) when missing)")
    if not os.path.isdir(path):
        if not create:
            raise TvmQnnError(f"tuning database {path!r}: no such directory "
                              "(tvm_qnn.tune(..., work_dir=...) writes one)")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise TvmQnnError(f"tuning database {path!r}: cannot make the directory "
                              f"({err.strerror or err})") from None
    elif not create and not os.path.isfile(os.path.join(path, RECORDS_FILE)):
        raise TvmQnnError(f"tuning database {path!r} has no database_tuning_record.json")
    repair(path)
    if not workloads:
        return _json_database(path)
    try:
        with locked(path):
            db = _json_database(path)
            for mod in workloads:
                db.commit_workload(mod)
    except OSError as err:
        raise TvmQnnError(f"tuning database {path!r}: cannot write to it "
                          f"({err.strerror or err})") from None
    return db


def _json_database(path: str) -> ms.database.JSONDatabase:
    """MetaSchedule's database of ``path``, its errors (what the schema check leaves: an
    unknown instruction in a trace, an unknown target kind) as a TvmQnnError."""
    register_tensor_intrinsics()  # the traces of int8-dot kernels name the x86 dot steps
    try:
        return ms.database.JSONDatabase(work_dir=path)
    except Exception:  # noqa: BLE001 - TVM raises several types
        # A trace that no longer replays (a schedule of older kernels) aborts the whole load:
        # set such records aside, with a warning, and load the rest.
        repair(path, replay=True)
    try:
        return ms.database.JSONDatabase(work_dir=path)
    except Exception as err:  # noqa: BLE001 - TVM raises several types
        raise TvmQnnError(f"tuning database {path!r}: MetaSchedule cannot read it: "
                          f"{str(err).strip().splitlines()[-1]}") from None


def has_records(db) -> bool:
    """True for a Database, or a folder holding a record file (tuning records to use)."""
    return isinstance(db, ms.database.Database) or os.path.isfile(
        os.path.join(os.fspath(db), RECORDS_FILE))


def is_measured(rec: ms.database.TuningRecord) -> bool:
    """True for a record of a candidate that ran (failed candidates are stored as 1e10 s)."""
    secs = rec.run_secs or []
    return bool(secs) and max(float(s) for s in secs) < _FAILED_SECONDS


def mean_seconds(rec: ms.database.TuningRecord) -> float:
    """The mean of a record's run times: what the database ranks records by."""
    return float(np.mean([float(x) for x in rec.run_secs]))


def measured_records(db: ms.database.Database, mod, limit: int = 1 << 20) -> list:
    """The measured records of the workload ``mod``, fastest first."""
    if not db.has_workload(mod):
        return []
    return [r for r in db.get_top_k(db.commit_workload(mod), limit) if is_measured(r)]


def replace_records(db_dir: str | os.PathLike, fill) -> None:
    """Rewrite the records of the database in ``db_dir``: ``fill(new_db)`` commits the ones
    to keep into a fresh JSON database. Its workloads are first committed in the old order,
    so their indices, and the workload file, stay as they are; the record file is replaced
    atomically, once the new one is on disk whole (MetaSchedule does not check its appends:
    on a full disk they are cut short, and the old records would be replaced by part of
    them). When it is not, a TvmQnnError, and the database stays as it was."""
    path = os.fspath(db_dir)
    with locked(path):  # no other process appends a workload meanwhile
        _replace_records(path, fill)


def _json_lines(path: str) -> list | None:
    """The JSON value of each line of ``path``; None when a line is not JSON or the last one
    does not end (a write cut short)."""
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        return None
    try:
        return [json.loads(line) for line in data.splitlines()]
    except ValueError:
        return None


def _replace_records(path: str, fill) -> None:
    workloads, records = os.path.join(path, WORKLOADS_FILE), os.path.join(path, RECORDS_FILE)
    with open(workloads, encoding="utf-8") as f:
        old = f.read()
    # Beside the files it replaces; a kill -9 leaves it for the next writer to remove.
    with scratch_dir(records) as tmp:
        new = ms.database.JSONDatabase(work_dir=tmp)
        for line in old.splitlines():
            new.commit_workload(ms.database.Workload.from_json(json.loads(line)).mod)
        fill(new)
        new_workloads, new_records = (os.path.join(tmp, WORKLOADS_FILE),
                                      os.path.join(tmp, RECORDS_FILE))
        held = len(new.get_all_tuning_records())
        written, table = _json_lines(new_records), _json_lines(new_workloads)
        if written is None or table is None or len(written) != held \
                or len(table) < len(old.splitlines()) or any(r[0] >= len(table) for r in written):
            raise TvmQnnError(
                f"tuning database {path!r}: its {held} new records could not be written whole "
                "(is the disk full?); the database is left as it was.")
        for name in (new_workloads, new_records):
            sync_file(name)
        with open(new_workloads, encoding="utf-8") as f:
            if f.read() != old:  # fill added a workload: it must be on disk first
                os.replace(new_workloads, workloads)
        os.replace(new_records, records)


__all__ = ["RECORDS_FILE", "WORKLOADS_FILE", "has_records", "is_measured", "mean_seconds",
           "measured_records", "open_database", "replace_records"]
