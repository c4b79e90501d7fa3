# SPDX-License-Identifier: Apache-2.0
"""PoolQuantizedCodes: a max pooling next to an activation quantizer pools the codes.

Brevitas' CNVs (QONNX and QCDQ) put a MaxPool between an activation quantizer and the next
conv, so that conv reads ``max_pool2d(dequantize(q))`` and is not seen as quantized. This pass
moves the pooling before the dequantize::

    y = max_pool2d(dequantize(q, s, z))   →   y = dequantize(max_pool2d(q), s, z)

A network written conv → ReLU → MaxPool → quantizer (the FINN CNV order, as tvm_qnn's own
CNVs export it) pools floats and quantizes the pooled map: the conv's output is not codes, so
its epilogue writes floats four times the codes' size and a float pool follows. The quantizer
(and the clip of its range) move before the pooling instead::

    c = clip(quantize(max_pool2d(x), s, z))   →   c = max_pool2d(clip(quantize(x, s, z)))

The conv then writes codes (channels-last, to the next layer's pack) and the pooling reads
bytes. Measured (default templates, one Zen 4 core, best of 9 alternated rounds, ms):
CNV_1W1A 0.083 → 0.056, CNV_2W2A 0.206 → 0.177; as ``x86:haswell`` code 0.129 → 0.118 and
0.290 → 0.291 (its int8-dot convs gained what the pools lost).

Both are exact when every scale is positive: ``dequantize`` is then increasing in ``q`` and
``quantize`` non-decreasing in ``x`` (a correctly rounded division by a positive scale, then
a round half to even, a clamp), and a maximum commutes with a non-decreasing function, as it
does with a clip. Padding stays right: the float pool pads with ``-inf`` and the integer one
with the smallest code, and every window holds at least one real element (ONNX requires
pads < kernel). Scales must be constants, per tensor or per channel along the pooled tensor's
channel axis; anything else is left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .graph_facts import op_name, rewrite_calls


def _commutes_with_pool(scale: relax.Expr, zp: relax.Expr, axis: int,
                        channel_axis: int) -> bool:
    """Constant positive scales and constant zero points, each per tensor or per channel
    along the pooled channel axis (a parameter along a pooled axis would not fit the other
    side of the pool)."""
    if not all(isinstance(p, tvm.ir.expr.GenericConst) for p in (scale, zp)):
        return False
    arr, zps = scale.value.numpy(), zp.value.numpy()
    return bool(np.all(arr > 0)) and (max(arr.size, zps.size) == 1 or axis == channel_axis)


def pool_codes(builder: relax.BlockBuilder, call: relax.Call, value_of) -> relax.Expr | None:
    """``dequantize(max_pool2d(q), s, z)`` for ``call``, a ``max_pool2d(dequantize(q, s, z))``
    with positive scales; else None. ``value_of`` follows variables to their bound values."""
    deq = value_of(call.args[0])
    layout = str(call.attrs.layout)
    if op_name(deq) != "relax.dequantize" or layout not in ("NCHW", "NHWC"):
        return None
    q, scale, zp = deq.args
    ndim = len(q.ty.shape)
    if not _commutes_with_pool(scale, zp, int(deq.attrs.axis) % ndim, layout.index("C")):
        return None
    pooled = builder.normalize(relax.Call(call.op, [q], call.attrs))
    return relax.op.dequantize(pooled, scale, zp, axis=int(deq.attrs.axis),
                               out_dtype=str(deq.attrs.out_dtype))


def _pooled(value_of, expr) -> relax.Call | None:
    """The ``max_pool2d`` call ``expr`` is bound to (NCHW or NHWC), else None."""
    pool = value_of(expr)
    if op_name(pool) != "relax.nn.max_pool2d" or str(pool.attrs.layout) not in ("NCHW", "NHWC"):
        return None
    return pool


def quantize_before_pool(builder: relax.BlockBuilder, call: relax.Call,
                         value_of) -> relax.Expr | None:
    """``max_pool2d(quantize(x, s, z))`` for ``call``, a ``quantize(max_pool2d(x), s, z)``
    with positive scales; else None."""
    pool = _pooled(value_of, call.args[0])
    if pool is None:
        return None
    x = pool.args[0]
    _, scale, zp = call.args
    ndim = len(x.ty.shape)
    if not _commutes_with_pool(scale, zp, int(call.attrs.axis) % ndim,
                                   str(pool.attrs.layout).index("C")):
        return None
    codes = builder.normalize(relax.Call(call.op, [x, scale, zp], call.attrs))
    return relax.Call(pool.op, [codes], pool.attrs)


def clip_before_pool(builder: relax.BlockBuilder, call: relax.Call,
                     value_of) -> relax.Expr | None:
    """``max_pool2d(clip(q))`` for ``call``, a ``clip(max_pool2d(q))`` of codes (``q`` a
    quantize, as :func:`quantize_before_pool` leaves it); else None."""
    pool = _pooled(value_of, call.args[0])
    if pool is None or op_name(value_of(pool.args[0])) != "relax.quantize":
        return None
    clipped = builder.normalize(relax.Call(call.op, [pool.args[0], *call.args[1:]],
                                           call.attrs))
    return relax.Call(pool.op, [clipped], pool.attrs)


POOL_RULES = {"relax.nn.max_pool2d": pool_codes, "relax.quantize": quantize_before_pool,
              "relax.clip": clip_before_pool}


@tvm.transform.module_pass(opt_level=0, name="PoolQuantizedCodes")
class PoolQuantizedCodes:
    """Rewrite ``max_pool2d(dequantize(q, s, z))`` into ``dequantize(max_pool2d(q), s, z)``
    and ``clip(quantize(max_pool2d(x), s, z))`` into ``max_pool2d(clip(quantize(x, s, z)))``
    when every scale is positive (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return rewrite_calls(mod, POOL_RULES)
