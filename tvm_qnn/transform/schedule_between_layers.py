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

from ..topi.attrs import KERNEL_ATTR, PACK_CL_ATTR
from .schedule_bitserial import schedule_prim_funcs

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
        def between(func, attrs):
            if KERNEL_ATTR in attrs or PACK_CL_ATTR in attrs:
                return None  # layer kernels (ScheduleBitserial's) and the written packs
            return self.schedule(func)

        return schedule_prim_funcs(mod, between)


__all__ = ["BetweenFn", "ScheduleBetweenLayers"]
