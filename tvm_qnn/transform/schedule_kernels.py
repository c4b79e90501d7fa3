# SPDX-License-Identifier: Apache-2.0
"""ScheduleBitserial: apply the target's schedule to every bit-serial layer PrimFunc.

Runs after legalization and fusion (the bit-serial PrimFuncs are opaque to FuseOps, so they
reach this pass as the rewrite built them). A PrimFunc marked ``tvm_qnn.scheduled`` (already
scheduled by this pass) is left alone.
"""

from __future__ import annotations

import tvm

from .rewrite_bitserial import KERNEL_ATTR

SCHEDULED_ATTR = "tvm_qnn.scheduled"


@tvm.transform.module_pass(opt_level=0, name="ScheduleBitserial")
class ScheduleBitserial:
    """Schedule the bit-serial PrimFuncs of a module with ``backend.schedule``.

    Parameters
    ----------
    backend : tvm_qnn.target.QnnTarget
        The target whose schedules are applied.
    """

    def __init__(self, backend):
        self.backend = backend

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is None:
                continue
            kind = func.attrs.get(KERNEL_ATTR)
            if kind is None or func.attrs.get(SCHEDULED_ATTR):
                continue
            scheduled = self.backend.schedule(str(kind), func)
            updates[gvar] = scheduled.with_attr(SCHEDULED_ATTR, True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


__all__ = ["ScheduleBitserial"]
