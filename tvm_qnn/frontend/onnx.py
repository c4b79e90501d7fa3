# SPDX-License-Identifier: Apache-2.0
"""Import quantized ONNX models (QDQ, QCDQ, int4 QDQ, QOperator) into Relax.

TVM's ``relax.frontend.onnx`` does most of the graph; this module adds what quantized models
need and it lacks:

* sub-byte types: INT4/UINT4 tensors become int8/uint8 codes followed by a clip to the 4-bit
  range (Relax has no 4-bit tensors), exactly what ONNX's saturation does;
* ``Clip`` with constant bounds becomes ``R.clip`` (TVM lowers it to two opaque PrimFuncs, which
  hides the bit width of a QCDQ activation from the rewrite);
* the QOperator ops ``QLinearConv``, ``QLinearMatMul``, ``ConvInteger``, ``MatMulInteger`` are
  spelled in integer Relax: an int32 conv2d/matmul of zero-point-shifted codes, plus for the
  QLinear ops ``quantize(float(acc + B) * (s_x s_w / s_y), 1, z_y)`` — the ONNX reference's
  own order of operations;
* every emitted binding is named after its ONNX node, so later errors and logs can name it;
* the QONNX ops ``Quant``, ``BipolarQuant``, ``Trunc`` (Brevitas), see :mod:`.qonnx`;
* checks with errors that name the node: unsupported ops, dynamic shapes, bad bit widths.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as _tvm_onnx

from ..errors import TvmQnnError, UnsupportedModelError
from ..transform.codes_through_layout_ops import LAYOUT_RULES
from ..transform.concat_quantized_codes import CONCAT_RULES
from ..transform.graph_facts import rewrite_calls
from ..transform.pool_quantized_codes import POOL_RULES
from .onnx_checks import (
    check_attributes,
    check_inputs,
    check_operand_types,
    check_output_shape,
    check_scales,
    check_tensor_shapes,
    tvm_message,
)
from .qonnx import QONNX_DOMAINS, QONNX_OPS

logger = logging.getLogger("tvm_qnn.frontend")

_SUBBYTE = {onnx.TensorProto.INT4: ("int8", -8, 7), onnx.TensorProto.UINT4: ("uint8", 0, 15)}


def _scalar(expr, what: str, node: str):
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        raise UnsupportedModelError(f"node '{node}': {what} must be a constant initializer")
    return expr.value.numpy()


def _int32(bb, x, zero_point):
    """``astype(x, int32) - zero_point`` (zero-point broadcast per tensor or per channel)."""
    y = relax.op.astype(x, "int32")
    if zero_point is not None:
        y = relax.op.subtract(y, relax.op.astype(zero_point, "int32"))
    return bb.normalize(y)


def _per_axis(expr, ndim: int, axis: int):
    """Reshape a 1-D per-channel constant so it broadcasts along ``axis`` of an ndim tensor."""
    arr = expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None
    if arr is None or arr.ndim == 0 or arr.size == 1:
        return expr
    shape = [1] * ndim
    shape[axis] = -1
    return relax.const(arr.reshape(shape), str(arr.dtype))


def _requantize_qlinear(bb, acc, x_scale, w_scale, y_scale, y_zp, node, channel_axis, ndim):
    """``quantize(float(acc) * (s_x s_w / s_y), 1, z_y)`` with the reference's float32 order."""
    sx = _scalar(x_scale, "x_scale", node).astype(np.float32)
    sw = _scalar(w_scale, "w_scale", node).astype(np.float32)
    sy = _scalar(y_scale, "y_scale", node).astype(np.float32)
    mult = (sx * sw / sy).astype(np.float32)
    if mult.size > 1:
        shape = [1] * ndim
        shape[channel_axis] = -1
        mult = mult.reshape(shape)
    v = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(mult, "float32"))
    out_dtype = str(y_zp.ty.dtype) if y_zp is not None else "uint8"
    zp = y_zp if y_zp is not None else relax.const(0, out_dtype)
    return bb.normalize(relax.op.quantize(bb.normalize(v), relax.const(1.0, "float32"), zp,
                                          axis=channel_axis, out_dtype=out_dtype))


def _conv_int(bb, x, w, attr, opset):
    """An int32 conv2d through TVM's own Conv converter (it handles pads/auto_pad/groups)."""
    conv = _tvm_onnx.Conv.get_converter(opset)
    attr = dict(attr)
    out = conv(bb, [x, w, None], attr, None)
    # Conv builds a float-typed conv2d; rebuild it with an int32 accumulator.
    out = bb.normalize(out)
    return bb.normalize(relax.op.nn.conv2d(
        out.args[0], out.args[1], strides=out.attrs.strides, padding=out.attrs.padding,
        dilation=out.attrs.dilation, groups=out.attrs.groups, out_dtype="int32"))


def _convert_qlinear_conv(bb, inputs, attr, opset, node):
    x, sx, zx, w, sw, zw, sy, zy = inputs[:8]
    bias = inputs[8] if len(inputs) > 8 else None
    acc = _conv_int(bb, _int32(bb, x, zx), _int32(bb, w, _per_axis(zw, 4, 0)), attr, opset)
    if bias is not None:
        acc = bb.normalize(relax.op.add(acc, relax.op.reshape(bias, [1, -1, 1, 1])))
    return _requantize_qlinear(bb, acc, sx, sw, sy, zy, node, 1, 4)


def _convert_conv_integer(bb, inputs, attr, opset, node):
    x, w = inputs[0], inputs[1]
    zx = inputs[2] if len(inputs) > 2 else None
    zw = inputs[3] if len(inputs) > 3 else None
    zw = _per_axis(zw, 4, 0) if zw is not None else None
    return _conv_int(bb, _int32(bb, x, zx), _int32(bb, w, zw), attr, opset)


def _convert_qlinear_matmul(bb, inputs, attr, opset, node):
    a, sa, za, b, sb, zb, sy, zy = inputs[:8]
    ndim = len(b.ty.shape)
    acc = bb.normalize(relax.op.matmul(_int32(bb, a, za), _int32(bb, b, _per_axis(zb, ndim, -1)),
                                       out_dtype="int32"))
    return _requantize_qlinear(bb, acc, sa, sb, sy, zy, node, ndim - 1, ndim)


def _convert_matmul_integer(bb, inputs, attr, opset, node):
    a, b = inputs[0], inputs[1]
    za = inputs[2] if len(inputs) > 2 else None
    zb = inputs[3] if len(inputs) > 3 else None
    ndim = len(b.ty.shape)
    zb = _per_axis(zb, ndim, -1) if zb is not None else None
    return bb.normalize(relax.op.matmul(_int32(bb, a, za), _int32(bb, b, zb), out_dtype="int32"))


def _convert_clip(bb, inputs, attr, opset, node):
    x = inputs[0]
    if opset < 11:
        lo, hi = attr.get("min", -np.inf), attr.get("max", np.inf)
    else:
        bounds = []
        for k, default in ((1, -np.inf), (2, np.inf)):
            b = inputs[k] if len(inputs) > k else None
            if b is None:
                bounds.append(default)
            elif isinstance(b, tvm.ir.expr.GenericConst):
                bounds.append(b.value.numpy().item())
            else:
                return None  # dynamic bounds: TVM's converter handles them
        lo, hi = bounds
    dtype = str(x.ty.dtype)
    if "int" in dtype:
        info = np.iinfo(dtype)
        lo = int(max(lo, info.min)) if np.isfinite(lo) else int(info.min)
        hi = int(min(hi, info.max)) if np.isfinite(hi) else int(info.max)
    else:
        lo = float(max(lo, np.finfo(np.float32).min))
        hi = float(min(hi, np.finfo(np.float32).max))
    # ONNX: min > max sets every element to max (min(max(x, lo), hi)); R.clip would give lo.
    return relax.op.clip(x, min(lo, hi), hi)


def _convert_quantize(bb, inputs, attr, opset, node, zp_type):
    """QuantizeLinear; a 4-bit output is an 8-bit quantize clipped to the 4-bit range."""
    if attr.get("block_size", 0):
        raise UnsupportedModelError(f"node '{node}': blocked QuantizeLinear is not supported")
    out_type = attr.get("output_dtype", 0)
    if out_type not in _SUBBYTE and zp_type is None:
        return None
    kind = out_type if out_type in _SUBBYTE else zp_type
    container, lo, hi = _SUBBYTE[kind]
    x, scale = inputs[0], inputs[1]
    zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else relax.const(0, container)
    axis = attr.get("axis", 1)
    if x.ty.ndim <= 1 and axis == 1:
        axis = 0
    q = bb.normalize(relax.op.quantize(x, scale, zp, axis=axis, out_dtype=container))
    return relax.op.clip(q, lo, hi)


def _convert_pad(inputs, attr, params):
    """A constant-mode Pad as ``relax.op.nn.pad`` (TVM's converter emits an opaque TOPI
    PrimFunc, which no pass can fold into the conv after it); other modes: None."""
    if attr.get("mode", b"constant").decode() != "constant":
        return None
    before, after, value = _tvm_onnx.Pad._parse_pads_and_axes(inputs, params)
    return relax.op.nn.pad(inputs[0], [w for pair in zip(before, after, strict=True)
                                       for w in pair], "constant", float(value))


_QOPERATORS = {
    "QLinearConv": _convert_qlinear_conv,
    "ConvInteger": _convert_conv_integer,
    "QLinearMatMul": _convert_qlinear_matmul,
    "MatMulInteger": _convert_matmul_integer,
}


class _QuantGraphImporter(_tvm_onnx.ONNXGraphImporter):
    """TVM's importer with the quantization additions listed in the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # (constant, ONNX type) of the 4-bit initializers, now held in 8-bit containers.
        self._subbyte_consts: list[tuple[relax.Expr, int]] = []

    def _parse_graph_initializers(self, graph):
        super()._parse_graph_initializers(graph)
        for init in graph.initializer:
            if init.data_type in _SUBBYTE:
                self._subbyte_consts.append((self._nodes[init.name], init.data_type))

    def _subbyte_type(self, expr) -> int | None:
        return next((t for c, t in self._subbyte_consts if c.same_as(expr)), None)

    def _parse_array(self, tensor_proto):
        if tensor_proto.data_type in _SUBBYTE:
            container = _SUBBYTE[tensor_proto.data_type][0]
            arr = onnx.numpy_helper.to_array(tensor_proto).astype(container)
            return tvm.runtime.tensor(arr.reshape(tuple(tensor_proto.dims)))
        return super()._parse_array(tensor_proto)

    def _check_for_unsupported_ops(self, graph):
        known = set(_tvm_onnx._get_convert_map()) | set(_QOPERATORS) | {"If", "Constant"}

        def supported(n):
            if n.domain in QONNX_DOMAINS:
                return n.op_type in QONNX_OPS
            return n.domain in ("", "ai.onnx") and n.op_type in known

        bad = [f"{n.op_type} (node '{n.name or n.output[0]}')" for n in graph.node
               if not supported(n)]
        if bad:
            raise UnsupportedModelError(
                "unsupported ONNX operator(s): " + ", ".join(bad)
                + ". Supported: the ai.onnx operators of TVM's ONNX frontend plus "
                + ", ".join(sorted(_QOPERATORS)) + ", 4-bit QuantizeLinear/DequantizeLinear "
                + "and the QONNX " + ", ".join(sorted(QONNX_OPS)) + ".")

    def _convert_operator(self, op_name, inputs, attrs, opset):
        node = attrs.get("tvm_custom", {}).get("name", op_name) or op_name
        check_attributes(op_name, attrs, node)
        check_operand_types(op_name, inputs, node)
        check_scales(op_name, inputs, node)
        try:
            sym = self._convert_checked(op_name, inputs, attrs, opset, node)
        except TvmQnnError:
            raise
        except (RuntimeError, ValueError, TypeError) as err:
            # TVM's own checks (a per-channel scale of the wrong length, operands whose shapes
            # do not fit) say what is wrong but not where, inside a dump of the op's schema.
            raise UnsupportedModelError(
                f"node '{node}' ({op_name}): {tvm_message(err)}") from err
        check_output_shape(sym, op_name, node)
        return sym

    def _convert_checked(self, op_name, inputs, attrs, opset, node):
        sym = None
        if op_name in _QOPERATORS:
            sym = _QOPERATORS[op_name](self.bb, inputs, attrs, opset, node)
        elif op_name in QONNX_OPS:
            sym = QONNX_OPS[op_name](self.bb, inputs, attrs, node)
        elif op_name == "Clip":
            sym = _convert_clip(self.bb, inputs, attrs, opset, node)
        elif op_name == "Pad" and opset >= 11:
            sym = _convert_pad(inputs, attrs, [self._nodes, self._params])
        elif op_name == "QuantizeLinear":
            zp = inputs[2] if len(inputs) > 2 else None
            zp_type = self._subbyte_type(zp) if zp is not None else None
            sym = _convert_quantize(self.bb, inputs, attrs, opset, node, zp_type)
        if sym is None:
            sym = super()._convert_operator(op_name, inputs, attrs, opset)
        else:
            sym = self.bb.normalize(sym)
        if isinstance(sym, relax.Call) and not isinstance(sym.ty, relax.TupleType):
            sym = self.bb.emit(sym, name_hint=_binding_name(node))
        return sym


def _binding_name(node: str) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", node)
    return name if name and (name[0].isalpha() or name[0] == "_") else "n_" + name


def load_onnx(model: onnx.ModelProto | str | os.PathLike,
              shapes: dict[str, tuple[int, ...]] | None = None) -> tvm.IRModule:
    """Import a quantized ONNX model as a Relax ``IRModule`` (function ``main``).

    Parameters
    ----------
    model : onnx.ModelProto or path
        QDQ, QCDQ (Brevitas), int4 QDQ (opset 21) or QOperator (onnxruntime) model.
    shapes : dict, optional
        Static shapes for inputs whose ONNX shape has symbolic dimensions.

    Raises
    ------
    UnsupportedModelError
        A malformed model, an unsupported operator, or a dynamic shape; the message names the
        node or input.
    InvalidArgumentError
        ``shapes`` names no input of the model, or a shape that does not fit its input.
    """
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(os.fspath(model))
        except Exception as err:  # noqa: BLE001 - protobuf raises several types
            raise UnsupportedModelError(f"cannot read ONNX model {model!s}: {err}") from err
    try:
        # Not full_check (1-5 ms on tvm_qnn/models): its type inference also refuses int16
        # QuantizeLinear codes before opset 21, which tvm_qnn takes (9-bit activations).
        # check_operand_types refuses the type mismatches onnxruntime refuses.
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise UnsupportedModelError(f"malformed ONNX model: {err}") from err
    check_inputs(model, shapes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    # Parameters keep the ONNX input names: sanitized, ``a.b`` became ``a_b`` and an input
    # really named ``a_b`` became ``a_b_1``, so a call by name bound them swapped.
    importer = _QuantGraphImporter(shapes or {}, dtype_dict=None, keep_params_in_input=False,
                                   sanitize=False)
    importer._dtype = {}  # take every input dtype from the model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = importer.from_onnx(model.graph, opset)
        except UnsupportedModelError:
            raise
        except Exception as err:  # noqa: BLE001 - TVM converter errors are untyped
            raise UnsupportedModelError(f"could not import the ONNX model: {err}") from err
    mod = relax.transform.Normalize()(mod)
    check_tensor_shapes(mod)
    # PoolQuantizedCodes, ConcatQuantizedCodes and CodesThroughLayoutOps in one traversal:
    # Inception's blocks pool concatenated codes and concatenate the pooled ones, to any
    # depth, and an exporter may reshape or rescale any of them.
    return rewrite_calls(mod, POOL_RULES | CONCAT_RULES | LAYOUT_RULES)
