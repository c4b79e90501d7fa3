# SPDX-License-Identifier: Apache-2.0
"""PadConvColumns: a float conv2d whose output width does not split into vectors computes a
few more columns, which are cut off again.

A CPU schedule keeps a float conv's output columns in vector registers, and needs a width that
splits into whole vectors; a ragged width (Brevitas' MobileNet-v1 first conv, unpadded 3x3
stride 2 on 224 columns: 111) keeps the plain loops, about twice as slow. This pass pads the
input on the right so the conv writes the next width that splits, and slices the real columns
back out::

    y = conv2d(x, w, padding=[t, l, b, r])            (W columns)
      →  y = strided_slice(conv2d(x, w, padding=[t, l, b, r + s·d]), end=W)   (W + d columns)

Exact: every real column reads the same inputs in the same order (the extra columns read
only the added zeros and the right edge); the slice is an index into the conv's output,
which TVM fuses into the op that reads it.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .graph_facts import mutate_functions, op_name

__all__ = ["PadConvColumns", "padded_width"]


def padded_width(width: int, vector: tuple[int, int], most_extra: float) -> int:
    """``width``, or the smallest wider width with a divisor in ``vector`` (lo, hi) when the
    width has none, if at most ``most_extra`` (a fraction) wider."""
    lo, hi = vector

    def splits(w: int) -> bool:
        return any(w % v == 0 for v in range(lo, hi + 1))

    if splits(width):
        return width
    wider = next(w for w in range(width + 1, 2 * width + hi) if splits(w))
    return wider if wider - width <= most_extra * width else width


@mutator
class _Padder(PyExprMutator):
    def __init__(self, mod, vector, most_extra):
        super().__init__(mod)
        self.vector, self.most_extra = vector, most_extra

    def visit_call_(self, call):  # noqa: D102
        call = super().visit_call_(call)
        attrs = getattr(call, "attrs", None)
        if op_name(call) != "relax.nn.conv2d" or str(attrs.data_layout) != "NCHW" \
                or str(attrs.out_layout) != "NCHW" or str(call.ty.dtype) != "float32":
            return call
        shape = [int(d) for d in call.ty.shape]
        width = padded_width(shape[3], self.vector, self.most_extra)
        if width == shape[3]:
            return call
        top, left, bottom, right = (int(v) for v in attrs.padding)
        extra = (width - shape[3]) * int(attrs.strides[1])
        wide = self.builder_.normalize(relax.op.nn.conv2d(
            call.args[0], call.args[1], strides=[int(v) for v in attrs.strides],
            padding=[top, left, bottom, right + extra],
            dilation=[int(v) for v in attrs.dilation], groups=int(attrs.groups),
            kernel_layout=str(attrs.kernel_layout), out_dtype="float32"))
        return relax.op.strided_slice(wide, axes=[3], begin=[0], end=[shape[3]])


@tvm.transform.module_pass(opt_level=0, name="PadConvColumns")
class PadConvColumns:
    """Widen float NCHW conv2d outputs to a width with a divisor in ``vector`` (lo, hi),
    at most ``most_extra`` (a fraction) more columns, and slice the real ones back (see the
    module docstring)."""

    def __init__(self, vector: tuple[int, int] = (8, 16), most_extra: float = 1 / 16):
        self.vector, self.most_extra = vector, most_extra

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return mutate_functions(mod, _Padder(mod, self.vector, self.most_extra))
