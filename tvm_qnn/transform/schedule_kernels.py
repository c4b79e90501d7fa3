# SPDX-License-Identifier: Apache-2.0
"""ScheduleBitserial: apply the target's schedule to every bit-serial layer PrimFunc.

Runs after legalization and fusion (the bit-serial PrimFuncs are opaque to FuseOps, so they
reach this pass as the rewrite built them). A PrimFunc marked ``tvm_qnn.scheduled`` (already
scheduled by this pass) is left alone. With a tuning database, a layer whose workload has a
tuning record gets the tuned schedule instead of the target's default template; with a
pre-tuned folder (``schedules/<device>``), a layer with the signature of one of its records
gets that record's schedule replayed (both logged).
"""

from __future__ import annotations

import logging

import tvm

from .rewrite_bitserial import KERNEL_ATTR

logger = logging.getLogger("tvm_qnn")

SCHEDULED_ATTR = "tvm_qnn.scheduled"


@tvm.transform.module_pass(opt_level=0, name="ScheduleBitserial")
class ScheduleBitserial:
    """Schedule the bit-serial PrimFuncs of a module with ``backend.schedule``.

    Parameters
    ----------
    backend : tvm_qnn.target.QnnTarget
        The target whose schedules are applied.
    database : tvm.s_tir.meta_schedule.Database, optional
        Tuning records (``tvm_qnn.tune``) to take schedules from when they have the layer.
    pretuned : str, optional
        A pre-tuned database folder (:func:`tvm_qnn.tuning.pretuned.find_pretuned`).
    """

    def __init__(self, backend, database=None, pretuned=None):
        self.backend = backend
        self.database = database
        self.pretuned = pretuned

    def _tuned(self, func: tvm.tirx.PrimFunc):
        """The tuned schedule of ``func`` from the database, or None."""
        if self.database is None:
            return None
        from ..tuning.tasks import workload

        sch = self.database.query_schedule(workload(func), self.backend.tvm_target, "main")
        if sch is None:
            return None
        # The scheduled function owns renewed buffers: keep it, with the layer's attributes.
        tuned = sch.mod["main"].without_attr("global_symbol")
        return tuned.with_attrs({k: v for k, v in func.attrs.items()})

    def _pretuned(self, func: tvm.tirx.PrimFunc):
        from ..tuning.pretuned import replay

        tuned = replay(self.pretuned, func)
        if tuned is None:
            return None
        return tuned.without_attr("global_symbol").with_attrs(
            {k: v for k, v in func.attrs.items()})

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is None:
                continue
            kind = func.attrs.get(KERNEL_ATTR)
            if kind is None or func.attrs.get(SCHEDULED_ATTR):
                continue
            layer = func.attrs.get("tvm_qnn.layer", gvar.name_hint)
            scheduled = self._tuned(func)
            if scheduled is not None:
                logger.info("%s: tuned schedule from the database", layer)
            elif self.pretuned is not None:
                scheduled = self._pretuned(func)
                if scheduled is not None:
                    logger.info("%s: pre-tuned schedule from %s", layer, self.pretuned)
            if scheduled is None:
                scheduled = self.backend.schedule(str(kind), func)
                if self.database is not None or self.pretuned is not None:
                    logger.info("%s: no tuning record, default template", layer)
            updates[gvar] = scheduled.with_attr(SCHEDULED_ATTR, True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


__all__ = ["ScheduleBitserial"]
