# SPDX-License-Identifier: Apache-2.0
"""PoolQuantizedCodes: a max pooling of dequantized codes pools the codes instead.

Brevitas' CNVs (QONNX and QCDQ) put a MaxPool between an activation quantizer and the next
conv, so that conv reads ``max_pool2d(dequantize(q))`` and is not seen as quantized. This pass
moves the pooling before the dequantize::

    y = max_pool2d(dequantize(q, s, z))   →   y = dequantize(max_pool2d(q), s, z)

Exact when every scale is positive: ``dequantize`` is then increasing in ``q``, and a maximum
commutes with an increasing function. Padding stays right: the float pool pads with ``-inf``
and the integer one with the smallest code, and every window holds at least one real element
(ONNX requires pads < kernel). Scales must be constants, per tensor or per channel along the
pooled tensor's channel axis; anything else is left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .graph_facts import op_name, rewrite_calls


def _positive_channel_scale(scale: relax.Expr, axis: int, channel_axis: int) -> bool:
    if not isinstance(scale, tvm.ir.expr.GenericConst):
        return False
    arr = scale.value.numpy()
    return bool(np.all(arr > 0)) and (arr.size == 1 or axis == channel_axis)


def pool_codes(builder: relax.BlockBuilder, call: relax.Call, value_of) -> relax.Expr | None:
    """``dequantize(max_pool2d(q), s, z)`` for ``call``, a ``max_pool2d(dequantize(q, s, z))``
    with positive scales; else None. ``value_of`` follows variables to their bound values."""
    deq = value_of(call.args[0])
    layout = str(call.attrs.layout)
    if op_name(deq) != "relax.dequantize" or layout not in ("NCHW", "NHWC"):
        return None
    q, scale, zp = deq.args
    ndim = len(q.ty.shape)
    if not _positive_channel_scale(scale, int(deq.attrs.axis) % ndim, layout.index("C")):
        return None
    pooled = builder.normalize(relax.Call(call.op, [q], call.attrs))
    return relax.op.dequantize(pooled, scale, zp, axis=int(deq.attrs.axis),
                               out_dtype=str(deq.attrs.out_dtype))


POOL_RULES = {"relax.nn.max_pool2d": pool_codes}


@tvm.transform.module_pass(opt_level=0, name="PoolQuantizedCodes")
class PoolQuantizedCodes:
    """Rewrite ``max_pool2d(dequantize(q, s, z))`` into ``dequantize(max_pool2d(q), s, z)``
    when every scale is positive (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return rewrite_calls(mod, POOL_RULES)
