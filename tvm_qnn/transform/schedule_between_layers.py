# SPDX-License-Identifier: Apache-2.0
"""ScheduleBetweenLayers: a default schedule for every PrimFunc that is not a layer kernel.

Runs after :class:`~.schedule_bitserial.ScheduleBitserial`, on what TVM legalized and fused
around the layers (a float first conv, BatchNorm + quantize, pooling, a float classifier),
which TVM's CPU pipeline would compile as plain loops on one core. Which schedule is the
target's (:meth:`~tvm_qnn.target.QnnTarget.schedule_between`); layer kernels, the
channels-last packs (written scheduled) and functions already marked ``tvm_qnn.scheduled``
are left alone, and so is any function the target returns None for.

Before (the legalized loops)::

    for nn, ff, yy, xx, rc, ry, rx in T.grid(1, 32, 112, 112, 3, 3, 3):
        with T.sblock("conv2d_nchw"): ...

After (CPU targets: :mod:`tvm_qnn.target.cpu.between_layers`)::

    for nn_ff_0_yy_fused in T.parallel(896):
        for xx_0 in range(7):
            ... 4 channels x 16 columns in registers, reduced over rc, ry, rx ...
"""

from __future__ import annotations

from collections.abc import Callable

import tvm

from ..topi.attrs import KERNEL_ATTR, PACK_CL_ATTR, SCHEDULED_ATTR

#: ``schedule(func) -> scheduled func or None``
BetweenFn = Callable[[tvm.tirx.PrimFunc], "tvm.tirx.PrimFunc | None"]


@tvm.transform.module_pass(opt_level=0, name="ScheduleBetweenLayers")
class ScheduleBetweenLayers:
    """Schedule the PrimFuncs that are not layer kernels with ``schedule``.

    Parameters
    ----------
    schedule : callable
        ``schedule(func)``: ``func`` scheduled, or None to leave it as it is (e.g.
        ``QnnTarget.schedule_between``). The result keeps ``func``'s attributes and is marked
        ``tvm_qnn.scheduled``.
    """

    def __init__(self, schedule: BetweenFn):
        self.schedule = schedule

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        mod = mod.clone()  # the caller's module stays as it was
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            attrs = dict(func.attrs.items()) if func.attrs is not None else {}
            if any(key in attrs for key in (KERNEL_ATTR, PACK_CL_ATTR, SCHEDULED_ATTR)):
                continue
            scheduled = self.schedule(func)
            if scheduled is None:
                continue
            updates[gvar] = scheduled.without_attr("global_symbol").with_attrs(
                {**attrs, SCHEDULED_ATTR: True})
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


__all__ = ["BetweenFn", "ScheduleBetweenLayers"]
