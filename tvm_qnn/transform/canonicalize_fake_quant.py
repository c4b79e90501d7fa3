# SPDX-License-Identifier: Apache-2.0
"""CanonicalizeFakeQuant: PyTorch's fake-quantization arithmetic → quantize / dequantize.

A ``torch.export`` program of a frozen ``tvm_qnn.nn`` model computes codes in float::

    codes = clip(round(divide(x, s)), lo, hi)        # round: half to even
    acc   = conv2d(codes, W)                          # W: a float constant holding integers

This pass spells the same values in the form :class:`RewriteBitserial` reads::

    codes = dequantize(clip(quantize(x, s, 0), lo, hi), 1, 0)
    acc   = conv2d(codes, dequantize(W_int, 1, 0))

Both are exact: ``quantize`` is ONNX's round-half-even division (``LegalizeQuantize``), and the
dequantize with scale 1 turns the integer codes back into the same float values. Nothing else
changes; a ``round`` that is not part of such a chain is left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .graph_facts import bound_value, mutate_functions, op_name


def _code_dtype(lo: float, hi: float) -> str | None:
    if lo != int(lo) or hi != int(hi):
        return None
    for dtype in ("uint8", "int8", "int16", "int32"):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return None


def _integer_constant(expr) -> np.ndarray | None:
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        return None
    arr = expr.value.numpy()
    if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        return None
    lo, hi = float(arr.min()), float(arr.max())
    dtype = _code_dtype(min(lo, 0.0), max(hi, 0.0))
    return None if dtype is None else arr.astype(dtype)


@mutator
class _Canonicalizer(PyExprMutator):
    def _value(self, expr):
        return bound_value(self, expr)

    def visit_call_(self, call):  # noqa: D102
        call = super().visit_call_(call)
        name = op_name(call)
        if name == "relax.clip":
            canonical = self._fake_quant(call)
            return call if canonical is None else canonical
        if name in ("relax.nn.conv2d", "relax.matmul"):
            codes = _integer_constant(self._value(call.args[1]))
            if codes is not None and "float" in str(call.ty.dtype):
                weight = relax.op.dequantize(relax.const(codes), relax.const(1.0, "float32"),
                                             relax.const(0, str(codes.dtype)), axis=0)
                return relax.Call(call.op, [call.args[0], self.builder_.normalize(weight)],
                                  call.attrs, call.sinfo_args if hasattr(call, "sinfo_args")
                                  else None)
        return call

    def _fake_quant(self, clip):
        rounded = self._value(clip.args[0])
        if op_name(rounded) != "relax.round":
            return None
        divided = self._value(rounded.args[0])
        if op_name(divided) != "relax.divide":
            return None
        scale = divided.args[1]
        if not isinstance(scale, tvm.ir.expr.GenericConst) or scale.value.numpy().size != 1:
            return None
        lo, hi = float(clip.args[1].value), float(clip.args[2].value)
        dtype = _code_dtype(lo, hi)
        if dtype is None or "float" not in str(clip.ty.dtype):
            return None
        s = relax.const(np.float32(scale.value.numpy().reshape(())), "float32")
        q = relax.op.quantize(divided.args[0], s, relax.const(0, dtype), axis=-1,
                              out_dtype=dtype)
        q = relax.op.clip(self.builder_.normalize(q), int(lo), int(hi))
        return relax.op.dequantize(self.builder_.normalize(q), relax.const(1.0, "float32"),
                                   relax.const(0, dtype), axis=-1)


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeFakeQuant")
class CanonicalizeFakeQuant:
    """Rewrite float fake-quantization (``clip(round(x / s))``, integer-valued float weights)
    into ``quantize`` / ``dequantize`` (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        mod = mutate_functions(mod, _Canonicalizer(mod))
        return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))
