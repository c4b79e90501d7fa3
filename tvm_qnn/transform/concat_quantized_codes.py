# SPDX-License-Identifier: Apache-2.0
"""ConcatQuantizedCodes: a concatenation of dequantized codes concatenates the codes instead.

Brevitas models that ``torch.cat`` quantized activations (DenseNet / Inception-style blocks)
export, in QONNX and QCDQ alike, a ``Concat`` of dequantized tensors feeding the next conv, which
then reads ``concat(dequantize(q1), dequantize(q2))`` and is not seen as quantized. This pass
moves the concatenation before the dequantize::

    y = concat(dequantize(q1, s, z), dequantize(q2, s, z))
      →  y = dequantize(concat(q1, q2), s, z)

Exact: ``dequantize`` is elementwise, so every element keeps its value wherever it lands. The
parts must be dequantized with constant scales and zero points, either

* the same per tensor (the result is per tensor too), or
* per channel along the concatenated axis for at least one part: the parameters are
  concatenated (a per-tensor part repeats its own along its channels).

Parts with different per-tensor parameters are left alone: their concatenation would need a
scale per channel, which a layer reducing over the channels cannot fold; the layer matcher then
names the ``Concat`` (:func:`concat_refusal`). Codes of different integer types are cast to one
that holds both (int8 and uint8 → int16) first.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .graph_facts import op_name, rewrite_calls


def _parts(call: relax.Call, value_of) -> list:
    """The bound values of the tensors ``call`` (a ``relax.concat``) concatenates."""
    tup = value_of(call.args[0])
    return [value_of(f) for f in tup.fields] if isinstance(tup, relax.Tuple) else []


def _param(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


def _per_tensor(deq: relax.Call) -> bool:
    return _param(deq.args[1]).size == _param(deq.args[2]).size == 1


def _along(param: np.ndarray, deq: relax.Call, axis: int, channels: int) -> np.ndarray | None:
    """``param`` of the part ``deq`` repeated or read along the concat axis, else None."""
    if param.size == 1:
        return np.full(channels, param.reshape(()), param.dtype)
    if param.size == channels and int(deq.attrs.axis) % len(deq.ty.shape) == axis:
        return param.reshape(-1)
    return None


def concat_refusal(call: relax.Call, value_of) -> str | None:
    """Why ``call``, a ``relax.concat``, cannot concatenate the codes of its parts (a phrase
    completing "input is a Concat …"), or None when it can. ``value_of`` follows variables to
    their bound values."""
    parts = _parts(call, value_of)
    axis = int(call.attrs.axis) % len(call.ty.shape)
    if not parts:
        return "of a tuple that is not written out"
    for k, part in enumerate(parts):
        if op_name(part) != "relax.dequantize":
            return f"whose input {k} is not a dequantized quantized tensor"
        if _param(part.args[1]) is None or _param(part.args[2]) is None:
            return f"whose input {k} has a scale or zero-point that is not a constant"
        channels = int(part.ty.shape[axis])
        if any(_along(_param(a), part, axis, channels) is None for a in part.args[1:3]):
            return f"whose input {k} is quantized per channel along another axis than {axis}"
    if len({str(p.attrs.out_dtype) for p in parts}) > 1:
        return "of tensors dequantized to different float types"
    if all(_per_tensor(p) for p in parts):
        scales = [float(_param(p.args[1]).reshape(())) for p in parts]
        zero_points = [int(_param(p.args[2]).reshape(())) for p in parts]
        if len(set(scales)) > 1 or len(set(zero_points)) > 1:
            joined = ", ".join(f"{s:g}/{z}" for s, z in zip(scales, zero_points, strict=True))
            return (f"of tensors with different scales/zero-points ({joined}): not one "
                    "quantized tensor")
    return None


def concat_codes(builder: relax.BlockBuilder, call: relax.Call,
                 value_of) -> relax.Expr | None:
    """``dequantize(concat(q1, q2, …))`` for ``call``, a ``relax.concat``, when
    :func:`concat_refusal` finds nothing against it; else None."""
    if concat_refusal(call, value_of) is not None:
        return None
    parts = _parts(call, value_of)
    axis = int(call.attrs.axis) % len(call.ty.shape)
    dtype = np.result_type(*(str(p.args[0].ty.dtype) for p in parts)).name
    codes = [p.args[0] if str(p.args[0].ty.dtype) == dtype
             else builder.normalize(relax.op.astype(p.args[0], dtype)) for p in parts]
    joined = builder.normalize(relax.Call(call.op, [relax.Tuple(codes)], call.attrs))
    first = parts[0]
    out_dtype = str(first.attrs.out_dtype)
    if all(_per_tensor(p) for p in parts):
        # One set of parameters, the first part's (a zero-point's type need not be the codes').
        return relax.op.dequantize(joined, first.args[1], first.args[2],
                                   axis=int(first.attrs.axis), out_dtype=out_dtype)
    scale, zp = (np.concatenate([_along(_param(p.args[i]), p, axis, int(p.ty.shape[axis]))
                                 for p in parts]) for i in (1, 2))
    return relax.op.dequantize(joined, relax.const(scale), relax.const(zp), axis=axis,
                               out_dtype=out_dtype)


CONCAT_RULES = {"relax.concat": concat_codes}


@tvm.transform.module_pass(opt_level=0, name="ConcatQuantizedCodes")
class ConcatQuantizedCodes:
    """Rewrite ``concat(dequantize(q1, s, z), dequantize(q2, s, z))`` into
    ``dequantize(concat(q1, q2), s, z)`` (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return rewrite_calls(mod, CONCAT_RULES)
