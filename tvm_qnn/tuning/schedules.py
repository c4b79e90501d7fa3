# SPDX-License-Identifier: Apache-2.0
"""Which schedule each layer kernel gets when ``compile`` builds a model.

:class:`KernelSchedules` is the ``schedule(kind, func)`` callable ``compile`` hands
:class:`~tvm_qnn.transform.ScheduleBitserial`: a tuning record of the kernel's workload
(``tuning_db``), else a pre-tuned record with its signature (``schedules/<device>``, TopHub
style), else the target's default template. Each choice is logged.
"""

from __future__ import annotations

import logging

import tvm

from ..topi.attrs import LAYER_ATTR
from .database import has_records, open_database
from .pretuned import find_pretuned, replay
from .tasks import workload

logger = logging.getLogger("tvm_qnn")


class KernelSchedules:
    """``schedule(kind, func)``: tuned, pre-tuned or default schedule of a layer kernel.

    Parameters
    ----------
    qnn_target : QnnTarget
        The target: its template is the fallback, its ``tvm_target`` keys the records.
    database : tvm.s_tir.meta_schedule.Database, optional
        Tuning records (:func:`tvm_qnn.tune`).
    pretuned : str, optional
        A pre-tuned database folder (:func:`tvm_qnn.tuning.pretuned.find_pretuned`).
    """

    def __init__(self, qnn_target, database=None, pretuned: str | None = None):
        self.qnn_target = qnn_target
        self.database = database
        self.pretuned = pretuned

    @classmethod
    def find(cls, qnn_target, tuning_db=None) -> KernelSchedules:
        """The records ``compile`` uses: ``tuning_db`` when given, else the pre-tuned
        schedules shipped for this device or its class (none: the default templates)."""
        if tuning_db is not None:
            return cls(qnn_target, database=open_database(tuning_db))
        found = find_pretuned(qnn_target)
        if found is None:
            keys = ", ".join(k for k, _ in qnn_target.schedule_keys()) or "this target"
            logger.info("no pre-tuned schedules for %s: default templates", keys)
            return cls(qnn_target)
        path, key, level = found
        logger.info("pre-tuned schedules: %s (%s %s)", path, level, key)
        return cls(qnn_target, pretuned=path)

    def __call__(self, kind: str, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
        layer = func.attrs.get(LAYER_ATTR, "layer") if func.attrs is not None else "layer"
        if self.database is not None:
            sch = self.database.query_schedule(workload(func), self.qnn_target.tvm_target, "main")
            if sch is not None:
                logger.info("%s: tuned schedule from the database", layer)
                return sch.mod["main"]
        if self.pretuned is not None:
            tuned = replay(self.pretuned, func)
            if tuned is not None:
                logger.info("%s: pre-tuned schedule from %s", layer, self.pretuned)
                return tuned
        if self.database is not None or self.pretuned is not None:
            logger.info("%s: no tuning record, default template", layer)
        return self.qnn_target.schedule(kind, func)


__all__ = ["KernelSchedules", "has_records"]
