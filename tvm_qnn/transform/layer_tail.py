# SPDX-License-Identifier: Apache-2.0
"""What the layer matcher reads around a conv2d/matmul, as values: per-channel constants, and
the ops after the accumulator that fold into the layer's output quantization (an inference
BatchNorm, a QONNX BipolarQuant, a QuantizeLinear)."""

from __future__ import annotations

import numpy as np
from tvm import relax

from .graph_facts import FunctionFacts, op_name


class NoMatch(Exception):
    """Raised inside matching with the reason a layer stays as is."""


def scalar_int(arr: np.ndarray | None, what: str) -> int:
    """The integer of a per-tensor constant, else :class:`NoMatch` naming ``what``."""
    if arr is None or arr.size != 1:
        raise NoMatch(f"{what} must be a per-tensor constant")
    return int(arr.reshape(()))


def per_channel(arr: np.ndarray, channels: int, what: str, dtype) -> np.ndarray:
    """``arr`` (a scalar or one value per channel) as ``channels`` values of ``dtype``."""
    arr = np.asarray(arr)
    if arr.size == 1:
        return np.full(channels, arr.reshape(()), dtype)
    if arr.size != channels:
        raise NoMatch(f"{what} has {arr.size} values for {channels} output channels")
    return arr.reshape(channels).astype(dtype)


def fold_batch_norm(facts: FunctionFacts, var: relax.Var, fields: dict) -> relax.Var | None:
    """Fold the inference BatchNorm bound to ``var`` into the layer's scale and bias:
    ``v * a + (beta - mean * a)`` with ``a = gamma / sqrt(var + eps)``, whatever the sign of
    ``a`` (a negative one mirrors the thresholds). Returns the binding of its output (the
    TupleGetItem), or None, leaving ``fields`` unchanged, when it is not one over channels."""
    call = facts.bindings[var]
    if int(call.attrs.axis) != 1:
        return None
    params = [facts.constant(a) for a in call.args[1:5]]
    item = facts.single_user(var)
    value = facts.bindings.get(item) if item is not None else None
    if any(p is None for p in params) or not isinstance(value, relax.TupleGetItem) \
            or value.index != 0:
        return None
    oc = fields["weight"].shape[0]
    gamma, beta, mean, variance = (per_channel(p.reshape(-1), oc, "BatchNorm parameter",
                                               np.float32) for p in params)
    a = (gamma / np.sqrt(variance + np.float32(call.attrs.epsilon))).astype(np.float32)
    fields["weight_scale"] = (fields["weight_scale"] * a).astype(np.float32)
    fields["bias"] = (fields["bias"] * a + (beta - mean * a)).astype(np.float32)
    return item


def sign_codes(facts: FunctionFacts, var: relax.Var, oc: int):
    """``where(v >= 0, hi, lo)`` after the comparison bound to ``var`` (QONNX BipolarQuant of
    the layer output) → (the bipolar output quantization, the ``where`` binding), or None."""
    where = facts.single_user(var)
    call = facts.bindings.get(where) if where is not None else None
    if op_name(call) != "relax.where" or not call.args[0].same_as(var):
        return None
    hi, lo = (facts.constant(a) for a in call.args[1:3])
    dtype = str(call.ty.dtype)
    if hi is None or lo is None or hi.size != 1 or lo.size != 1 or "int" not in dtype \
            or not int(lo) < int(hi):
        return None
    return dict(out_dtype=dtype, out_scale=np.ones(oc, np.float32),
                out_zero_point=np.zeros(oc, np.int32), qmin=int(lo), qmax=int(hi),
                bipolar=True), where


def output_quant(facts: FunctionFacts, call: relax.Call, oc: int) -> dict:
    """The output quantization of a ``quantize`` after the layer, as Requantize fields."""
    scale = facts.constant(call.args[1])
    zp = facts.constant(call.args[2])
    if scale is None or zp is None:
        raise NoMatch("output scale/zero-point are not constants")
    dtype = str(call.attrs.out_dtype)
    if "int" not in dtype:
        raise NoMatch(f"output quantized to {dtype}")
    info = np.iinfo(dtype)
    return dict(out_dtype=dtype,
                out_scale=per_channel(scale, oc, "output scale", np.float32),
                out_zero_point=per_channel(zp, oc, "output zero-point", np.int32),
                qmin=int(info.min), qmax=int(info.max))
