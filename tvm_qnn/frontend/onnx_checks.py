# SPDX-License-Identifier: Apache-2.0
"""Checks of an ONNX model the importer makes, each refusing with an error that names the node
or input: operand types ONNX refuses, zero or non-finite scales, input shapes, and tensors of
the imported graph with a dimension < 1.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import tvm

from ..errors import InvalidArgumentError, UnsupportedModelError

# Operands an operator's ONNX type constraint makes share one type (T): the codes and their
# zero-point, a Clip's input and bounds. TVM would compute something for a mismatch.
_SAME_TYPE = {
    "DequantizeLinear": ((0, 2),),
    "Clip": ((0, 1), (0, 2)),
    "QLinearConv": ((0, 2), (3, 5)),
    "QLinearMatMul": ((0, 2), (3, 5)),
    "ConvInteger": ((0, 2), (1, 3)),
    "MatMulInteger": ((0, 2), (1, 3)),
}


# Where the scales are among an operator's inputs.
_SCALES = {"QuantizeLinear": (1,), "DequantizeLinear": (1,), "QLinearConv": (1, 4, 6),
           "QLinearMatMul": (1, 4, 6)}


def check_scales(op_name: str, inputs, node: str) -> None:
    """A constant scale of 0 (or not finite) is refused naming the node: quantizing divides
    by it, and TVM would stop on a divide-by-zero check deep in the build."""
    for k in _SCALES.get(op_name, ()):
        expr = inputs[k] if len(inputs) > k else None
        if not isinstance(expr, tvm.ir.expr.GenericConst):
            continue
        value = expr.value.numpy()
        if value.dtype.kind == "f" and not (np.isfinite(value).all() and (value != 0).all()):
            bad = value[~np.isfinite(value) | (value == 0)].flat[0]
            raise UnsupportedModelError(
                f"node '{node}' ({op_name}): input {k} (a scale) holds {bad}; tvm_qnn "
                "compiles finite nonzero scales")


def check_operand_types(op_name: str, inputs, node: str) -> None:
    """Refuse the operand type mismatches ONNX (and onnxruntime) refuse, naming the node."""
    def dtype(k):
        expr = inputs[k] if len(inputs) > k else None
        return str(getattr(getattr(expr, "ty", None), "dtype", "")) or None

    for a, b in _SAME_TYPE.get(op_name, ()):
        if dtype(a) and dtype(b) and dtype(a) != dtype(b):
            raise UnsupportedModelError(
                f"node '{node}' ({op_name}): input {b} is {dtype(b)} but input {a} is "
                f"{dtype(a)}; ONNX requires one type for both (invalid model, onnxruntime "
                "refuses it too)")


def _check_shape(inp, shape) -> None:
    """``shape``, given for input ``inp``, has its rank and positive dimensions (the importer
    would fail later on a wrong rank with a message about some operator)."""
    dims = inp.type.tensor_type.shape.dim
    model_dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
    try:
        given = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        given = None
    if given is None or len(given) != len(dims) or min(given, default=1) < 1:
        raise InvalidArgumentError(
            f"shapes['{inp.name}'] = {shape!r}: input '{inp.name}' has {len(dims)} dimensions "
            f"{model_dims}; give {len(dims)} integers >= 1")


def check_inputs(model: onnx.ModelProto, shapes: dict | None):
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    unknown = sorted(set(shapes or ()) - {i.name for i in inputs})
    if unknown:
        raise InvalidArgumentError(f"shapes names {unknown}, not inputs of the model; its "
                                   f"inputs are {[i.name for i in inputs]}")
    for inp in inputs:
        if shapes and inp.name in shapes:
            _check_shape(inp, shapes[inp.name])
            continue
        dims = inp.type.tensor_type.shape.dim
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in dims):
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                     for d in dims]
            raise UnsupportedModelError(
                f"input '{inp.name}' has shape {shape}, with a zero-size dimension: tvm_qnn "
                "compiles tensors with at least one element")
        dynamic = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if dynamic:
            raise UnsupportedModelError(
                f"input '{inp.name}' has dynamic dimension(s) {dynamic}: tvm_qnn compiles static "
                f"shapes; pass shapes={{'{inp.name}': (...)}}")


# Operators with a sliding window: their geometry attributes and the least value each takes.
_WINDOW_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool",
               "LpPool", "MaxUnpool"}
_LEAST = {"strides": 1, "dilations": 1, "kernel_shape": 1, "group": 1, "pads": 0}


def check_attributes(op_name: str, attrs: dict, node: str) -> None:
    """A window operator's strides, dilations, kernel shape and group are >= 1, its pads >= 0,
    as ONNX shape inference (and onnxruntime) require. TVM takes other values: a negative
    dilation compiled into a conv that reads outside its input (a SIGSEGV, or garbage)."""
    if op_name not in _WINDOW_OPS:
        return
    for name, least in _LEAST.items():
        value = attrs.get(name)
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if any(not isinstance(v, (int, np.integer)) or v < least for v in values):
            raise UnsupportedModelError(
                f"node '{node}' ({op_name}): attribute {name}={value!r} must hold integers "
                f">= {least} (ONNX shape inference and onnxruntime refuse it too)")


_WHY = ("with a dimension < 1 (e.g. a window larger than its padded input, or operands in the "
        "wrong places): tvm_qnn compiles tensors with at least one element")


def _static_dims(expr) -> list[int]:
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    return [int(d) for d in getattr(shape, "values", None) or () if isinstance(d, tvm.tirx.IntImm)]


def check_output_shape(expr, op_name: str, node: str) -> None:
    """The tensor a node's conversion computed has static dimensions >= 1.

    ONNX's checker does not infer shapes: a Conv whose window is larger than its padded input
    (a dilation of 226 on a 6x6 image, a zero-point wired in as the image) imports as a tensor
    with a negative or zero dimension, which TVM only trips over while scheduling, with an
    internal error (or a ValueError) that names no node.
    """
    dims = _static_dims(expr)
    if any(d < 1 for d in dims):
        raise UnsupportedModelError(f"node '{node}' ({op_name}) would compute a tensor of shape "
                                    f"{dims}, {_WHY}")


def check_tensor_shapes(mod: tvm.IRModule) -> None:
    """Every tensor of ``main`` has static dimensions >= 1 (what :func:`check_output_shape`
    does not see: a binding inside a node's conversion)."""
    for block in getattr(mod["main"].body, "blocks", ()):
        for binding in block.bindings:
            dims = _static_dims(binding.var)
            if any(d < 1 for d in dims):
                raise UnsupportedModelError(f"tensor '{binding.var.name}' of the imported model "
                                            f"would have shape {dims}, {_WHY}")


# TVM prints an operator as its whole schema: ir.Op(span=None, ..., name="relax.dequantize", ...).
_OP_REPR = re.compile(r'ir\.Op\(span=.*?name="([^"]+)".*?support_level=\d+\)')


def tvm_message(err: Exception) -> str:
    """The first line of a TVM error, each operator named instead of dumped."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return _OP_REPR.sub(r"\1", lines[0] if lines else type(err).__name__)


__all__ = ["check_attributes", "check_inputs", "check_operand_types", "check_output_shape",
           "check_scales", "check_tensor_shapes", "tvm_message"]
