# SPDX-License-Identifier: Apache-2.0
"""ScheduleBitserial: schedule every layer kernel PrimFunc of a module.

Runs after legalization and fusion (the layer kernels are opaque to FuseOps, so they reach
this pass as the rewrite built them). Which schedule a kernel gets is the caller's choice:
``compile`` passes one that looks in the tuning database, then the pre-tuned folders, then
falls back to the target's default template (:class:`tvm_qnn.tuning.KernelSchedules`). A
PrimFunc marked ``tvm_qnn.scheduled`` (already scheduled by this pass) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm

from ..topi.attrs import KERNEL_ATTR, SCHEDULED_ATTR

#: ``schedule(kind, func) -> scheduled func``, ``kind`` being ``conv2d`` or ``dense``
ScheduleFn = Callable[[str, tvm.tirx.PrimFunc], tvm.tirx.PrimFunc]


@tvm.transform.module_pass(opt_level=0, name="ScheduleBitserial")
class ScheduleBitserial:
    """Schedule the layer kernels (PrimFuncs with ``tvm_qnn.kernel``) with ``schedule``.

    Parameters
    ----------
    schedule : callable
        ``schedule(kind, func)`` returns ``func`` scheduled, e.g. ``QnnTarget.schedule``.
        The result keeps ``func``'s attributes and is marked ``tvm_qnn.scheduled``.
    """

    def __init__(self, schedule: ScheduleFn):
        self.schedule = schedule

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        def kernel(func, attrs):
            kind = attrs.get(KERNEL_ATTR)
            return None if kind is None else self.schedule(str(kind), func)

        return schedule_prim_funcs(mod, kernel)


def schedule_prim_funcs(mod: tvm.IRModule, schedule) -> tvm.IRModule:
    """A copy of ``mod`` with each PrimFunc not yet marked ``tvm_qnn.scheduled`` replaced by
    ``schedule(func, attrs)`` (``attrs``: its attributes as a dict; None leaves it), which
    keeps those attributes and is marked scheduled. What the scheduling passes share."""
    mod = mod.clone()  # the caller's module stays as it was
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        attrs = dict(func.attrs.items()) if func.attrs is not None else {}
        if attrs.get(SCHEDULED_ATTR):
            continue
        scheduled = schedule(func, attrs)
        if scheduled is not None:
            updates[gvar] = scheduled.without_attr("global_symbol").with_attrs(
                {**attrs, SCHEDULED_ATTR: True})
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod


__all__ = ["ScheduleBitserial", "ScheduleFn", "schedule_prim_funcs"]
