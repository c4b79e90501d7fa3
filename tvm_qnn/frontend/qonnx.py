# SPDX-License-Identifier: Apache-2.0
"""QONNX operators (``Quant``, ``BipolarQuant``, ``Trunc``) as Brevitas exports them.

Each becomes the Relax spelling the rewrite already reads, so a QONNX layer compiles like its
QCDQ twin:

* ``Quant(x, s, z, b; signed, narrow, rounding_mode=ROUND)`` =
  ``dequantize(clip(quantize(x, s, z), qmin, qmax), s, z)`` with
  ``[qmin, qmax] = [-2^(b-1) + narrow, 2^(b-1) - 1]`` (signed) or ``[0, 2^b - 1 - narrow]``;
* ``BipolarQuant(x, s)`` = ``dequantize(where(x >= 0, 1, -1), s, 0)``: codes {-1, +1}, which
  the rewrite runs as 2-bit codes for now (exact, zero padding included; a 1-plane bipolar
  activation path is future work);
* ``Trunc`` (v1 and v2, ``rounding_mode=FLOOR``): the integer code divided by a power of two
  and floored, exactly as qonnx's reference executes it.

A ``Quant`` or ``BipolarQuant`` of a constant (Brevitas' weights and biases) is computed at
import: codes up to 16 bits become ``dequantize(constant codes)``, which the layer matcher reads
as the layer's weights; wider ones (the 32-bit bias quantizer) the float constant itself. A
signed 1-bit ``Quant`` is ``BipolarQuant``, as qonnx executes it.

Scales may be per channel in broadcast form (``[C, 1, 1, 1]``); they become 1-D with an axis.
Bit widths, zero-points and scales must be constants, the zero-point an integer.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import UnsupportedModelError

QONNX_DOMAINS = ("onnx.brevitas", "qonnx.custom_op.general", "finn.custom_op.general")


def _const(expr, what: str, node: str) -> np.ndarray:
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        raise UnsupportedModelError(f"node '{node}': {what} must be a constant initializer")
    return expr.value.numpy()


def _axis_param(arr: np.ndarray, ndim: int, node: str, what: str) -> tuple[np.ndarray, int]:
    """Broadcast-shaped per-channel parameter → (1-D values, axis); scalars → (value, 0)."""
    if arr.size == 1:
        return arr.reshape(()), 0
    shape = [1] * (ndim - arr.ndim) + list(arr.shape)
    axes = [i for i, s in enumerate(shape) if s != 1]
    if len(axes) != 1:
        raise UnsupportedModelError(f"node '{node}': {what} of shape {arr.shape} varies along "
                                    "more than one axis (per-tensor or per-channel only)")
    return arr.reshape(-1), axes[0]


def _container(lo: int, hi: int) -> str:
    for dtype in ("int8", "uint8", "int16", "uint16", "int32"):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    raise UnsupportedModelError(f"codes [{lo}, {hi}] do not fit 32 bits")


def _rounding(attr: dict, node: str, default: str) -> str:
    mode = attr.get("rounding_mode", default.encode())
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    return mode.upper()


def convert_quant(bb, inputs, attr, node: str):
    """``Quant`` → quantize → clip → dequantize."""
    x, scale, zp, bits = inputs[:4]
    if _rounding(attr, node, "ROUND") != "ROUND":
        raise UnsupportedModelError(f"node '{node}': Quant rounding_mode "
                                    f"{_rounding(attr, node, 'ROUND')} (ROUND supported)")
    b = float(_const(bits, "bit_width", node).reshape(()))
    if b != int(b) or not 1 <= b <= 32:
        raise UnsupportedModelError(f"node '{node}': bit_width {b} (an integer 1..32)")
    b = int(b)
    signed, narrow = int(attr.get("signed", 1)), int(attr.get("narrow", 0))
    lo, hi = (-(1 << (b - 1)) + narrow, (1 << (b - 1)) - 1) if signed else \
        (0, (1 << b) - 1 - narrow)
    ndim = len(x.ty.shape)
    s, axis_s = _axis_param(_const(scale, "scale", node).astype(np.float32), ndim, node, "scale")
    z_arr = _const(zp, "zero_point", node)
    if np.any(z_arr != np.round(z_arr)):
        raise UnsupportedModelError(f"node '{node}': non-integer zero_point")
    z, axis_z = _axis_param(z_arr, ndim, node, "zero_point")
    if s.ndim and z.ndim and axis_s != axis_z:
        raise UnsupportedModelError(f"node '{node}': scale and zero_point on different axes")
    axis = axis_s if s.ndim else axis_z
    if b == 1 and signed:  # qonnx executes a signed 1-bit Quant as BipolarQuant: ±1
        if np.any(z != 0):
            raise UnsupportedModelError(f"node '{node}': a signed 1-bit Quant with a nonzero "
                                        "zero_point")
        return convert_bipolar_quant(bb, [x, scale], attr, node)
    dtype = _container(min(lo, int(z.min())), max(hi, int(z.max())))
    if isinstance(x, tvm.ir.expr.GenericConst):
        return _fold_quant(x.value.numpy(), s, z, axis, lo, hi, dtype)
    if dtype not in ("int8", "uint8", "int16", "uint16"):
        raise UnsupportedModelError(f"node '{node}': a {b}-bit Quant of a run-time tensor "
                                    "(at most 16 bits; wider ones only on constants)")
    zc = relax.const(z.astype(dtype), dtype)
    sc = relax.const(s, "float32")
    q = bb.normalize(relax.op.quantize(x, sc, zc, axis=axis, out_dtype=dtype))
    q = bb.normalize(relax.op.clip(q, lo, hi))
    return relax.op.dequantize(q, sc, zc, axis=axis, out_dtype="float32")


def _broadcast(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def _fold_quant(w: np.ndarray, s: np.ndarray, z: np.ndarray, axis: int, lo: int, hi: int,
                dtype: str):
    """A ``Quant`` of a constant (weights, biases), computed at import as qonnx does:
    ``(round(clip(w / s + z, lo, hi)) - z) * s``. Codes that fit 16 bits stay visible as
    ``dequantize(codes)`` for the layer matcher; wider ones (Brevitas' 32-bit bias quantizer)
    become the float constant, which Relax's 8/16-bit quantize ops could not hold."""
    sb = _broadcast(s, w.ndim, axis)
    zb = _broadcast(z.astype(np.float32), w.ndim, axis)
    codes = np.round(np.clip(w.astype(np.float32) / sb + zb, lo, hi))
    if dtype in ("int8", "uint8", "int16", "uint16"):
        return relax.op.dequantize(relax.const(codes.astype(dtype)), relax.const(s, "float32"),
                                   relax.const(z.astype(dtype), dtype), axis=axis,
                                   out_dtype="float32")
    return relax.const(((codes - zb) * sb).astype(np.float32))


def convert_bipolar_quant(bb, inputs, attr, node: str):
    """``BipolarQuant`` → dequantize(where(x >= 0, 1, -1), scale); constant codes (weights)
    are computed at import."""
    x, scale = inputs[:2]
    ndim = len(x.ty.shape)
    s, axis = _axis_param(_const(scale, "scale", node).astype(np.float32), ndim, node, "scale")
    if isinstance(x, tvm.ir.expr.GenericConst):
        codes = np.where(x.value.numpy() >= 0, 1, -1).astype(np.int8)
        return relax.op.dequantize(relax.const(codes), relax.const(s, "float32"),
                                   relax.const(0, "int8"), axis=axis, out_dtype="float32")
    sign = relax.op.where(relax.op.greater_equal(x, relax.const(0.0, "float32")),
                          relax.const(1, "int8"), relax.const(-1, "int8"))
    codes = bb.normalize(relax.op.clip(bb.normalize(sign), -1, 1))
    return relax.op.dequantize(codes, relax.const(s, "float32"), relax.const(0, "int8"),
                               axis=axis, out_dtype="float32")


def convert_trunc(bb, inputs, attr, node: str):
    """``Trunc`` (QONNX v1: 5 inputs; v2: 6 inputs with an output scale), as qonnx executes it.

    v1: ``(R((round(x / s) + z) / 2^(b_in - b_out)) - z) * s``; v2:
    ``(R(clamp((round(x / s) + z) / t, qmin, qmax)) - z / t) * s_out`` with
    ``t = 2^round(log2(s_out / s))``; ``R`` is floor (the inner round sees integers only).
    """
    mode = _rounding(attr, node, "FLOOR")
    if mode != "FLOOR":
        # Relax's round() rounds ties away from zero, qonnx's np.round to even.
        raise UnsupportedModelError(f"node '{node}': Trunc rounding_mode {mode} "
                                    "(FLOOR supported)")
    x, scale, zp = inputs[:3]
    s = _const(scale, "scale", node).astype(np.float32)
    z = _const(zp, "zero_point", node).astype(np.float32)
    v2 = len(inputs) >= 6 and inputs[5] is not None
    if v2 and (codes := _trunc_codes(bb, inputs, attr, node)) is not None:
        return codes
    q = relax.op.round(relax.op.add(relax.op.divide(x, relax.const(s)), relax.const(z)))
    if v2:
        s_out = _const(inputs[4], "output_scale", node).astype(np.float32)
        bits = int(_const(inputs[5], "output_bit_width", node).reshape(()))
        t = np.float32(2.0) ** np.round(np.log2(s_out / s)).astype(np.float32)
        signed, narrow = int(attr.get("signed", 1)), int(attr.get("narrow", 0))
        lo, hi = (-(1 << (bits - 1)) + narrow, (1 << (bits - 1)) - 1) if signed else \
            (0, (1 << bits) - 1 - narrow)
        q = relax.op.clip(relax.op.divide(q, relax.const(t)), lo, hi)
        z_out, s_out_c = relax.const((z / t).astype(np.float32)), relax.const(s_out)
    else:
        shift = int(_const(inputs[3], "in_bit_width", node).reshape(())) - \
            int(_const(inputs[4], "out_bit_width", node).reshape(()))
        if shift < 0:
            raise UnsupportedModelError(f"node '{node}': out_bit_width exceeds in_bit_width")
        q = relax.op.divide(q, relax.const(np.float32(2.0 ** shift)))
        z_out, s_out_c = relax.const(z), relax.const(s)
    q = relax.op.floor(q)
    return relax.op.multiply(relax.op.subtract(q, z_out), s_out_c)


def _trunc_codes(bb, inputs, attr, node: str):
    """Trunc v2 in integers, when its parameters allow (per-tensor, a power-of-two step down,
    an integer output zero-point, input codes that fit 16 bits)::

        codes = clip((quantize(x, s, z) >> log2 t), qmin, qmax)   → dequantize(codes, s_out, z / t)

    the same values as the float spelling, but as codes the layer matcher reads: the Linear
    after Brevitas' AvgPool → Trunc stays bit-serial. Returns None otherwise."""
    x, scale, zp, in_bits, s_out, out_bits = inputs[:6]
    s, z, s_out = (_const(e, what, node).astype(np.float32) for e, what in
                   ((scale, "scale"), (zp, "zero_point"), (s_out, "output_scale")))
    if s.size != 1 or z.size != 1 or s_out.size != 1:
        return None
    s, z, s_out = s.reshape(()), float(z.reshape(())), s_out.reshape(())
    shift = int(np.round(np.log2(s_out / s)))
    b_in = int(_const(in_bits, "input_bit_width", node).reshape(()))
    bits = int(_const(out_bits, "output_bit_width", node).reshape(()))
    signed, narrow = int(attr.get("signed", 1)), int(attr.get("narrow", 0))
    lo, hi = (-(1 << (bits - 1)) + narrow, (1 << (bits - 1)) - 1) if signed else \
        (0, (1 << bits) - 1 - narrow)
    if shift < 0 or z != int(z) or int(z) % (1 << shift) or b_in > 15:
        return None
    wide = "int16" if b_in > 7 else "int8"
    info = np.iinfo(wide)
    if (int(info.min) >> shift) > lo or (int(info.max) >> shift) < hi:
        return None  # a saturated code would not clip to the same output code
    n = bb.normalize(relax.op.quantize(x, relax.const(s), relax.const(int(z), wide), axis=0,
                                       out_dtype=wide))
    n = bb.normalize(relax.op.right_shift(relax.op.astype(n, "int32"),
                                          relax.const(shift, "int32")))
    dtype = _container(lo, hi)
    codes = bb.normalize(relax.op.astype(relax.op.clip(n, lo, hi), dtype))
    return relax.op.dequantize(codes, relax.const(s_out), relax.const(int(z) >> shift, dtype),
                               axis=0, out_dtype="float32")


QONNX_OPS = {"Quant": convert_quant, "BipolarQuant": convert_bipolar_quant,
             "Trunc": convert_trunc}
