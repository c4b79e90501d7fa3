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
from tvm.relax.expr_functor import PyExprMutator, mutator

from .graph_facts import bound_value, mutate_functions, op_name


def _positive_channel_scale(scale: relax.Expr, axis: int, channel_axis: int) -> bool:
    if not isinstance(scale, tvm.ir.expr.GenericConst):
        return False
    arr = scale.value.numpy()
    return bool(np.all(arr > 0)) and (arr.size == 1 or axis == channel_axis)


@mutator
class _CodePooler(PyExprMutator):
    def _value(self, expr):
        return bound_value(self, expr)

    def visit_call_(self, call):  # noqa: D102
        call = super().visit_call_(call)
        if op_name(call) != "relax.nn.max_pool2d":
            return call
        deq = self._value(call.args[0])
        layout = str(call.attrs.layout)
        if op_name(deq) != "relax.dequantize" or layout not in ("NCHW", "NHWC"):
            return call
        q, scale, zp = deq.args
        ndim = len(q.ty.shape)
        if not _positive_channel_scale(scale, int(deq.attrs.axis) % ndim, layout.index("C")):
            return call
        pooled = self.builder_.normalize(relax.Call(call.op, [q], call.attrs))
        return relax.op.dequantize(pooled, scale, zp, axis=int(deq.attrs.axis),
                                   out_dtype=str(deq.attrs.out_dtype))


@tvm.transform.module_pass(opt_level=0, name="PoolQuantizedCodes")
class PoolQuantizedCodes:
    """Rewrite ``max_pool2d(dequantize(q, s, z))`` into ``dequantize(max_pool2d(q), s, z)``
    when every scale is positive (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        mod = mutate_functions(mod, _CodePooler(mod))
        return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))
