# SPDX-License-Identifier: Apache-2.0
"""Which schedule each layer kernel gets when ``compile`` builds a model.

:class:`KernelSchedules` is the ``schedule(kind, func)`` callable ``compile`` hands
:class:`~tvm_qnn.transform.ScheduleBitserial`: a tuning record of the kernel's workload
(``tuning_db``), else a pre-tuned record with its signature (``schedules/<device>``, TopHub
style), else the target's default template; a record serves only where it beats the default
template's by :data:`~.choice.MIN_GAIN` (:mod:`.choice`). Each choice is logged.
"""

from __future__ import annotations

import logging

import tvm
from tvm import s_tir

from ..topi.attrs import LAYER_ATTR
from .choice import MIN_GAIN, chosen_record, default_schedule, is_default
from .database import has_records, measured_records, open_database
from .pretuned import find_pretuned, pretuned_records
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
        if self.database is None and self.pretuned is None:
            return self.qnn_target.schedule(kind, func)
        mod = workload(func)
        found = []  # (records, what they are), fetched once
        if self.database is not None:
            found.append((measured_records(self.database, mod), "tuned schedule from the "
                          "database"))
        if self.pretuned is not None:
            found.append((pretuned_records(self.pretuned, func),
                          f"pre-tuned schedule from {self.pretuned}"))
        if not any(records for records, _ in found):
            logger.info("%s: no tuning record, default template", layer)
            return self.qnn_target.schedule(kind, func)
        default = default_schedule(self.qnn_target, kind, mod)
        trace = None if default is None else str(default.trace)
        for records, what in found:
            rec = chosen_record(records, trace)
            if rec is None:
                continue
            if is_default(rec, trace):
                logger.info("%s: default template (no %s beats it by %d %%)", layer,
                            what.split(" from ")[0], round(MIN_GAIN * 100))
                return default.mod["main"]
            return self._replay(rec, mod, kind, func, layer, what)
        logger.info("%s: its tuning records parallelize fewer loops than code for these "
                    "threads does (tuned for fewer threads): default template", layer)
        return default.mod["main"]

    def _replay(self, rec, mod, kind, func, layer: str, what: str) -> tvm.tirx.PrimFunc:
        """``rec``'s schedule of ``mod`` (``what``: where it came from, for the log); the
        default template when it does not replay."""
        sch = s_tir.Schedule(mod)
        try:
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception as err:  # noqa: BLE001 - a trace that does not fit: the default
            logger.info("%s: %s does not replay (%s); default template", layer, what, err)
            return self.qnn_target.schedule(kind, func)
        logger.info("%s: %s", layer, what)
        return sch.mod["main"]


__all__ = ["KernelSchedules", "has_records"]
