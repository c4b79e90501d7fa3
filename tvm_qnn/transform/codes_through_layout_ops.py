# SPDX-License-Identifier: Apache-2.0
"""CodesThroughLayoutOps: what exporters put between a quantizer and a layer acts on the codes.

An ONNX exporter may reshape, transpose, pad or rescale a dequantized tensor before the conv /
matmul that reads it, which then does not read ``dequantize(q)`` and is not seen as quantized.
This pass moves such ops before the dequantize, or into the layer, where that is exact::

    reshape(dequantize(q, s, z))            →  dequantize(reshape(q), s, z)
    permute_dims(dequantize(q, s, z))       →  dequantize(permute_dims(q), s, z)
    dequantize(q, s, z) * c   (or / c)      →  dequantize(q, s * c (or s / c), z)
    conv2d(pad(x, 0 on the rows and columns), w, padding=p)  →  conv2d(x, w, padding=p + pad)

The first two hold for a per-tensor ``s`` and ``z`` (every element keeps its value wherever it
lands). The rescale needs a positive scalar constant ``c``; it is exact when ``s * c`` is (powers
of two, as Brevitas' fixed-point quantizers use), and otherwise within one float rounding of
the activations, as any non-power-of-two scale is. A conv pads with zeros itself, so a
zero-padding of its input's rows and columns joins its own padding, for any input.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .graph_facts import op_name, rewrite_calls

__all__ = ["CodesThroughLayoutOps", "LAYOUT_RULES"]


def _scalar(expr) -> float | None:
    """The value of a one-element constant, else None."""
    if not isinstance(expr, tvm.ir.expr.GenericConst) or expr.value.numpy().size != 1:
        return None
    return expr.value.numpy().reshape(()).item()


def _per_tensor_dequantize(expr) -> bool:
    return op_name(expr) == "relax.dequantize" and all(
        _scalar(a) is not None for a in expr.args[1:3])


def _dequantize(codes, deq: relax.Call, scale=None) -> relax.Expr:
    # Per-tensor parameters fit any rank: axis 0 stays valid whatever the new shape.
    return relax.op.dequantize(codes, deq.args[1] if scale is None else scale, deq.args[2],
                               axis=0, out_dtype=str(deq.attrs.out_dtype))


def layout_on_codes(builder: relax.BlockBuilder, call: relax.Call,
                    value_of) -> relax.Expr | None:
    """``dequantize(op(q), s, z)`` for ``call``, a reshape or permute_dims of a per-tensor
    ``dequantize(q, s, z)``; else None."""
    deq = value_of(call.args[0])
    if not _per_tensor_dequantize(deq):
        return None
    moved = builder.normalize(relax.Call(call.op, [deq.args[0], *call.args[1:]], call.attrs))
    return _dequantize(moved, deq)


def rescale_codes(builder: relax.BlockBuilder, call: relax.Call,
                  value_of) -> relax.Expr | None:
    """``dequantize(q, s * c, z)`` for ``call``, ``dequantize(q, s, z) * c`` (either order)
    or ``dequantize(q, s, z) / c`` with ``c`` a positive scalar constant; else None."""
    divide = op_name(call) == "relax.divide"
    operands = [call.args] if divide else [call.args, call.args[::-1]]
    for data, factor in operands:
        deq, c = value_of(data), _scalar(factor)
        if c is None or not np.isfinite(c) or c <= 0 or not _per_tensor_dequantize(deq):
            continue
        s = np.float32(_scalar(deq.args[1]))
        scale = s / np.float32(c) if divide else s * np.float32(c)
        if not np.isfinite(scale) or scale <= 0:
            return None
        return _dequantize(deq.args[0], deq, relax.const(np.float32(scale)))
    return None


def fold_zero_padding(builder: relax.BlockBuilder, call: relax.Call,
                      value_of) -> relax.Expr | None:
    """``conv2d(x, w, padding=p + pad)`` for ``call``, an NCHW ``conv2d`` of ``pad(x)`` that
    pads only rows and columns, with zeros; else None."""
    pad = value_of(call.args[0])
    attrs = call.attrs
    if op_name(pad) != "relax.nn.pad" or str(attrs.data_layout) != "NCHW" \
            or str(pad.attrs.pad_mode) != "constant" or float(pad.attrs.pad_value) != 0.0:
        return None
    width = [int(v) for v in pad.attrs.pad_width]
    if len(width) != 8 or any(width[:4]) or min(width) < 0:
        return None
    top, left, bottom, right = (int(v) for v in attrs.padding)
    out_dtype = str(attrs.out_dtype)
    padding = [top + width[4], left + width[6], bottom + width[5], right + width[7]]
    return relax.op.nn.conv2d(
        pad.args[0], call.args[1], strides=[int(v) for v in attrs.strides], padding=padding,
        dilation=[int(v) for v in attrs.dilation], groups=int(attrs.groups),
        data_layout="NCHW", kernel_layout=str(attrs.kernel_layout),
        out_layout=str(attrs.out_layout),
        out_dtype=None if out_dtype in ("", "void", "None") else out_dtype)


LAYOUT_RULES = {"relax.reshape": layout_on_codes, "relax.permute_dims": layout_on_codes,
                "relax.multiply": rescale_codes, "relax.divide": rescale_codes,
                "relax.nn.conv2d": fold_zero_padding}


@tvm.transform.module_pass(opt_level=0, name="CodesThroughLayoutOps")
class CodesThroughLayoutOps:
    """Move reshapes, transposes and scalar rescales of dequantized codes onto the codes, and
    zero paddings into the conv that reads them (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return rewrite_calls(mod, LAYOUT_RULES)
