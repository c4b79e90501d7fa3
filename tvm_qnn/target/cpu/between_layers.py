# SPDX-License-Identifier: Apache-2.0
"""A default schedule for the ops between layers: what TVM legalized and left unscheduled.

TVM's CPU pipeline compiles every op as its loop nest on one core, untouched. A model keeps a
few such ops around its layers: the float first conv that reads the image (Brevitas' ImageNet
networks), BatchNorm + quantize after it, pooling, the float classifier. The first conv of
MobileNet-v1 4b took 0.85 ms of 7.2 this way (Zen 4, one thread); scheduled here, and
widened from 111 to 112 columns by :class:`~tvm_qnn.transform.PadConvColumns`, 0.40-0.43 ms
(0.95-1.23 ms with the plain loops its ragged width kept before, two alternated runs).

This is dlight's GPU fallback brought to the CPU, with TVM's own analysis
(:func:`~tvm.s_tir.dlight.normalize_prim_func`, :func:`~tvm.s_tir.dlight.try_inline`):
elementwise producers are inlined into their consumers, each remaining block runs its outer
spatial loops over the cores, and a direct float conv2d (NCHW) gets a register tile (output
channels × a vector of output columns) in local memory. The loops of a reduction are never
reordered, so every output is summed in the same order as before: same floats, bit for bit.
"""

from __future__ import annotations

import logging
import math

from tvm import s_tir, tirx
from tvm.s_tir import dlight

from .schedule import TILE_SCOPE, _largest_divisor_at_most

logger = logging.getLogger("tvm_qnn")

# Below this many output elements a block stays on one core (thread start-up dominates).
_PARALLEL_MIN = 1 << 14
# The float conv's register tile: output channels × output columns (one vector of 16 floats).
# A MobileNet-style first conv (3 -> 32 channels, 3x3 stride 2 padding 1, 224x224 -> 112x112;
# Zen 4, one core): 0.85 ms unscheduled; 8 x 16 0.45 ms, 4 x 16 0.47, 8 x 8 0.48, 4 x 8 0.61,
# 2 x 16 1.07.
_CONV_CHANNELS, _CONV_COLUMNS = 8, 16
#: The output widths the float conv's tile takes: one with a divisor in this range (a ragged
#: vector measured 2-3x slower than the plain loops: 111 columns, Zen 4);
#: :class:`~tvm_qnn.transform.PadConvColumns` widens the others.
CONV_VECTOR = (8, _CONV_COLUMNS)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _float_conv2d(sch: s_tir.Schedule, block, parallel: bool) -> None:
    """``conv2d_nchw`` (loops [n,] oc, y, x | c, ky, kx; TVM's normal form drops a unit
    batch): the reduction inside a tile of ``oc`` channels × ``x`` columns held in registers,
    the columns one vector."""
    loops = sch.get_loops(block)
    *batch, ff, yy, xx = loops[:-3]
    rc, ry, rx = loops[-3:]
    outputs = math.prod(_extent(sch, lp) for lp in (*batch, ff, yy, xx))
    ffo, ffi = sch.split(ff, [None, _largest_divisor_at_most(_extent(sch, ff), _CONV_CHANNELS)])
    xxo, xxi = sch.split(xx, [None, _largest_divisor_at_most(_extent(sch, xx), _CONV_COLUMNS)])
    sch.reorder(*batch, ffo, yy, xxo, rc, ry, rx, ffi, xxi)
    acc = sch.cache_write(block, 0, TILE_SCOPE)  # registers, not the heap (see TILE_SCOPE)
    sch.reverse_compute_at(acc, xxo, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(acc)[-1])
    sch.unroll(ffi)
    sch.vectorize(xxi)
    outer = sch.fuse(*batch, ffo, yy)
    if parallel and outputs >= _PARALLEL_MIN:
        sch.parallel(outer)
    sch.decompose_reduction(block, rc)


def _is_float_conv2d(sch: s_tir.Schedule, info) -> bool:
    """A direct float conv2d whose output width splits into vectors of
    :data:`CONV_VECTOR` columns."""
    if not (info.name.startswith("conv2d_nchw") and info.dom_kind() in ("SSSRRR", "SSSSRRR")
            and str(sch.get(info.block_rv).writes[0].source.dtype) == "float32"):
        return False
    extents = [_extent(sch, loop) for loop in sch.get_loops(info.block_rv)]
    return None not in extents and \
        _largest_divisor_at_most(extents[-4], _CONV_COLUMNS) >= CONV_VECTOR[0]


def _spread(sch: s_tir.Schedule, info, parallel: bool) -> None:
    """The block's spatial loops outside, all but the innermost fused and run over the cores
    (the innermost is left to LLVM's vectorizer)."""
    block = info.block_rv
    loops = sch.get_loops(block)
    kinds = info.dom_kind()
    if len(loops) != len(kinds) or "O" in kinds or not parallel:
        return
    spatial = [lp for lp, k in zip(loops, kinds, strict=True) if k == "S"]
    reduce = [lp for lp, k in zip(loops, kinds, strict=True) if k == "R"]
    if not spatial:
        return
    extents = [_extent(sch, lp) for lp in spatial]
    if None in extents or math.prod(extents) < _PARALLEL_MIN:
        return
    sch.reorder(*spatial, *reduce)
    if len(spatial) == 1:
        outer, _ = sch.split(spatial[0], [None, _largest_divisor_at_most(extents[0], 256)])
    else:
        outer = sch.fuse(*spatial[:-1]) if len(spatial) > 2 else spatial[0]
    sch.parallel(outer)


def schedule_between_layers(func: tirx.PrimFunc, parallel: bool = True) -> tirx.PrimFunc | None:
    """``func`` (an op between layers, as TVM legalized it) scheduled as the module docstring
    says, or None when TVM's analysis cannot put it in normal form (it stays as it is).
    ``parallel``: spread loops over the cores."""
    try:
        sch = s_tir.Schedule(func)
        blocks = dlight.normalize_prim_func(sch)
        if blocks is None:
            return None
        # A padding stays a stage of its own: inlined into a conv's taps, its bounds test ran
        # once per multiply (the conv above: 1.36 ms inlined, 0.47 ms not).
        pads = [info for info in blocks if info.name.startswith("pad_temp")]
        rest = dlight.try_inline(sch, [info for info in blocks if info not in pads])
        for info in pads + rest:
            try:
                if _is_float_conv2d(sch, info):
                    _float_conv2d(sch, info.block_rv, parallel)
                else:
                    _spread(sch, info, parallel)
            except s_tir.ScheduleError:
                continue  # the block keeps the steps done before the one TVM refused
        return sch.mod["main"]
    except Exception as err:  # noqa: BLE001 - any op TVM can build: unscheduled is no worse
        logger.debug("left unscheduled: %s", err)
        return None


__all__ = ["schedule_between_layers"]
