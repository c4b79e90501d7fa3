# SPDX-License-Identifier: Apache-2.0
"""LegalizeQuantize: ``relax.quantize`` with ONNX rounding (half to even), then LegalizeOps.

TVM's default legalization of ``relax.quantize`` rounds half away from zero; ONNX
``QuantizeLinear`` rounds half to even. Ties are common with power-of-two scales, so every
quantize that stays in the graph (the model input, layers left as they are) is lowered here:
``q = saturate(nearbyint(x / scale) + zero_point)``.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.relax.transform.legalize_ops.common import _try_convert_to_scalar_const
from tvm.relax.transform.legalize_ops.qdq import _quantize as _tvm_quantize


def _param_at(param, indices, axis):
    if isinstance(param, te.Tensor):
        if all(int(s) == 1 for s in param.shape):
            return param[(0,) * len(param.shape)]
        return param[indices[axis]]
    return param


def quantize_half_even(x: te.Tensor, scale, zero_point, axis: int, out_dtype: str) -> te.Tensor:
    """TE of ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``."""
    axis = axis % len(x.shape)
    lo, hi = tirx.min_value(out_dtype), tirx.max_value(out_dtype)

    def compute(*idx):
        s = _param_at(scale, idx, axis)
        z = _param_at(zero_point, idx, axis)
        q = tirx.nearbyint(x[idx].astype("float32") / s.astype("float32")) + z.astype("float32")
        return te.max(te.min(q, hi.astype("float32")), lo.astype("float32")).astype(out_dtype)

    return te.compute(x.shape, compute, name="quantize")


def _legalize_quantize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    out_dtype = str(call.attrs.out_dtype)
    if "int" not in out_dtype:  # float8 and friends: TVM's own lowering
        return _tvm_quantize(bb, call)
    return bb.call_te(quantize_half_even, call.args[0],
                      _try_convert_to_scalar_const(call.args[1]),
                      _try_convert_to_scalar_const(call.args[2]),
                      int(call.attrs.axis), out_dtype, primfunc_name_hint="quantize")


def LegalizeQuantize() -> tvm.transform.Pass:  # noqa: N802 - TVM pass naming
    """LegalizeOps with ONNX-exact ``relax.quantize`` (all other ops: TVM's legalization)."""
    return relax.transform.LegalizeOps(customize_legalize_map={"relax.quantize":
                                                               _legalize_quantize})
