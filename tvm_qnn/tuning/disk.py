# SPDX-License-Identifier: Apache-2.0
"""What tuning writes must reach the disk whole: free space before, every record after.

MetaSchedule's JSON database appends a line per record and does not check the write: on a full
disk the line is cut short (or missing) and tuning would carry on, losing every result. These
checks turn that into a clear error; a re-run resumes from what was written.
"""

from __future__ import annotations

import json
import os
import shutil

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from .database import RECORDS_FILE

# Tuning writes each candidate's build (a few hundred KiB) and a record per trial.
_MIN_FREE_BYTES = 16 << 20


def check_free_space(work_dir: str) -> None:
    """Raise a clear error when ``work_dir``'s disk has too little room to tune."""
    free = shutil.disk_usage(work_dir).free
    if free < _MIN_FREE_BYTES:
        raise TvmQnnError(f"{work_dir}: only {free >> 10} KiB free on its disk; tuning writes "
                          "builds and records there. Free some space and run tune again: it "
                          "resumes from the database.")


def _records_on_disk(work_dir: str) -> tuple[int, bool]:
    """(lines of the record file, whether its last line is whole JSON)."""
    path = os.path.join(work_dir, RECORDS_FILE)
    if not os.path.isfile(path):
        return 0, True
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    try:
        whole = not lines or bool(json.loads(lines[-1]))
    except ValueError:
        whole = False
    return len(lines), whole


def check_written(db: ms.database.Database, work_dir: str) -> None:
    """Every record MetaSchedule holds must be on disk, whole."""
    held = len(db.get_all_tuning_records())
    lines, whole = _records_on_disk(work_dir)
    if lines < held or not whole:
        raise TvmQnnError(
            f"{work_dir}: a tuning record could not be written ({held} measured, {lines} on "
            "disk{}): is the disk full? The records written so far are kept; free some space "
            "and run tune again: it resumes from the database.".format(
                "" if whole else ", the last one cut short"))


@derived_object
class WriteCheck(ms.measure_callback.PyMeasureCallback):
    """After each batch (and MetaSchedule's own commit): :func:`check_written`."""

    def __init__(self, db: ms.database.Database, work_dir: str):
        self.db = db
        self.work_dir = work_dir

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results):
        check_written(self.db, self.work_dir)


__all__ = ["WriteCheck", "check_free_space", "check_written"]
