# SPDX-License-Identifier: Apache-2.0
"""Small quantized ONNX models built in code, in every form the frontend reads.

Forms (``QUANT_FORMS``):

* ``qdq``: ``QuantizeLinear → DequantizeLinear`` on activations (8-bit codes), weights as int8
  initializers with ``DequantizeLinear`` (their codes may use fewer bits), int32 bias;
* ``qcdq``: as Brevitas exports: ``QuantizeLinear → Clip → DequantizeLinear``, the Clip bounds
  giving the bit width of activations and weights;
* ``qdq_int4``: opset 21 with INT4/UINT4 tensors (bit widths up to 4);
* ``qoperator``: what onnxruntime's ``quantize_static`` emits: ``QLinearConv`` /
  ``QLinearMatMul`` between a ``QuantizeLinear`` input and a ``DequantizeLinear`` output;
* ``integer``: ``ConvInteger`` / ``MatMulInteger`` on uint8 codes, int32 output.

Scales are powers of two by default, so the ONNX reference, onnxruntime (graph optimizations
off) and tvm_qnn agree bit for bit; ``pow2_scales=False`` draws arbitrary scales. Everything is
seeded. Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QUANT_FORMS = ("qdq", "qcdq", "qdq_int4", "qoperator", "integer")

__all__ = ["QUANT_FORMS", "make_cnn_model", "make_conv_model", "make_dense_model",
           "random_input", "run_onnxruntime", "run_reference"]


def _code_range(bits: int, signed: bool) -> tuple[int, int]:
    lo = -(1 << (bits - 1)) if signed else 0
    return lo, lo + (1 << bits) - 1


def _pow2(x: float) -> float:
    return float(2.0 ** np.ceil(np.log2(max(x, 1e-12))))


class _Graph:
    """A tiny ONNX graph builder: named nodes, named initializers."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []

    def const(self, name: str, value, dtype=None) -> str:
        arr = np.asarray(value, dtype) if dtype is not None else np.asarray(value)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const_int4(self, name: str, value, signed: bool) -> str:
        arr = np.asarray(value, np.int64)
        kind = TensorProto.INT4 if signed else TensorProto.UINT4
        self.inits.append(helper.make_tensor(name, kind, list(arr.shape),
                                             arr.reshape(-1).tolist()))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def model(self, output: str, out_type, out_shape) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "tvm_qnn_test", self.inputs,
                                  [helper.make_tensor_value_info(output, out_type, out_shape)],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 10 if self.opset >= 21 else 9
        onnx.checker.check_model(model, full_check=True)
        return model


class _Quantizer:
    """Emits the activation / weight quantization of one form."""

    def __init__(self, g: _Graph, form: str):
        self.g, self.form = g, form

    def dtype(self, signed: bool):
        if self.form == "qdq_int4":
            return TensorProto.INT4 if signed else TensorProto.UINT4
        return TensorProto.INT8 if signed else TensorProto.UINT8

    def zero_point(self, name, value, signed, shape=()):
        arr = np.full(shape, value)
        if self.form == "qdq_int4":
            return self.g.const_int4(name, arr, signed)
        return self.g.const(name, arr, np.int8 if signed else np.uint8)

    def activation(self, x: str, name: str, scale: float, zp: int, bits: int,
                   signed: bool) -> str:
        """float → codes → float (returns the dequantized tensor's name)."""
        g = self.g
        s = g.const(f"{name}_scale", np.float32(scale))
        z = self.zero_point(f"{name}_zp", zp, signed)
        q = g.node("QuantizeLinear", [x, s, z], f"{name}_q")
        q = self._clip(q, name, bits, signed)
        return g.node("DequantizeLinear", [q, s, z], f"{name}_dq")

    def _clip(self, q, name, bits, signed):
        full = 4 if self.form == "qdq_int4" else 8
        if self.form == "qdq" or bits == full:
            return q
        lo, hi = _code_range(bits, signed)
        if self.form == "qdq_int4":
            lo_c = self.g.const_int4(f"{name}_lo", lo, signed)
            hi_c = self.g.const_int4(f"{name}_hi", hi, signed)
        else:
            dt = np.int8 if signed else np.uint8
            lo_c, hi_c = self.g.const(f"{name}_lo", lo, dt), self.g.const(f"{name}_hi", hi, dt)
        return self.g.node("Clip", [q, lo_c, hi_c], f"{name}_clip")

    def weight(self, codes: np.ndarray, scale: np.ndarray, zp: np.ndarray, name: str,
               bits: int, signed: bool, axis: int) -> str:
        g = self.g
        s = g.const(f"{name}_scale", scale.astype(np.float32))
        zp = np.broadcast_to(np.asarray(zp), scale.shape)  # per-axis: one zero-point a channel
        if self.form == "qdq_int4":
            w = g.const_int4(f"{name}_codes", codes, signed)
            z = g.const_int4(f"{name}_zp", zp, signed)
        else:
            dt = np.int8 if signed else np.uint8
            w, z = g.const(f"{name}_codes", codes, dt), g.const(f"{name}_zp", zp, dt)
        if self.form == "qcdq":
            w = self._clip(w, name + "_w", bits, signed)
        return g.node("DequantizeLinear", [w, s, z], f"{name}_wdq", axis=axis)


def _check_bits(name: str, bits: int, hi: int = 8):
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= hi:
        raise ValueError(f"{name}={bits!r}: must be an integer in 1..{hi}")


def _weights(rng, shape, bits, signed, per_channel):
    if bits == 1 and signed:
        codes = rng.choice([-1, 1], size=shape)
        zp = 0
    else:
        lo, hi = _code_range(bits, signed)
        codes = rng.integers(lo, hi + 1, size=shape)
        zp = 0 if signed else (lo + hi + 1) // 2
    oc = shape[0]
    scale = 2.0 ** -rng.integers(3, 7, size=oc) if per_channel else \
        np.full(oc, 2.0 ** -rng.integers(3, 7))
    return codes, scale.astype(np.float32), zp


def _arbitrary(rng, pow2: bool, value: float) -> float:
    return value if pow2 else float(value * rng.uniform(0.55, 0.95))


def _calibrate(g: _Graph, out: str, in_shape, out_shape, seed: int) -> float:
    """Largest |value| of ``out`` on a random input (onnxruntime, graph as built so far)."""
    probe = g.model(out, TensorProto.FLOAT, out_shape)
    feeds = random_input(probe, seed=seed + 1000)
    return float(np.abs(run_onnxruntime(probe, feeds)[0]).max())


def _layer_model(kind, form, *, batch, in_ch, out_ch, size, kernel, stride, pads, dilation,
                 groups, act_bits, weight_bits, act_signed, weight_signed, per_channel, bias,
                 relu, out_quant, seed, pow2_scales, use_gemm, opset):
    if form not in QUANT_FORMS:
        raise ValueError(f"form={form!r}: one of {QUANT_FORMS}")
    _check_bits("act_bits", act_bits)
    _check_bits("weight_bits", weight_bits)
    if form == "qdq" and act_bits != 8:
        raise ValueError("act_bits must be 8 in form 'qdq' (8-bit tensors, no Clip); use 'qcdq' "
                         "or 'qdq_int4' for fewer bits")
    if form == "qdq_int4" and (act_bits > 4 or weight_bits > 4):
        raise ValueError("form 'qdq_int4' holds at most 4 bits (act_bits, weight_bits <= 4)")
    if kind == "conv2d" and in_ch % groups or kind == "conv2d" and out_ch % groups:
        raise ValueError(f"groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
    rng = np.random.default_rng(seed)
    opset = opset or (21 if form == "qdq_int4" else 19)
    g = _Graph(opset)
    if kind == "conv2d":
        in_shape = [batch, in_ch, *size]
        wshape = (out_ch, in_ch // groups, *kernel)
    else:
        in_shape = [batch, in_ch]
        wshape = (out_ch, in_ch)
    codes, w_scale, w_zp = _weights(rng, wshape, weight_bits, weight_signed, per_channel)
    if not pow2_scales:
        w_scale = (w_scale * rng.uniform(0.55, 0.95, size=w_scale.shape)).astype(np.float32)
    a_lo, a_hi = _code_range(act_bits, act_signed)
    zx = 0 if act_signed else (a_hi + 1) // 2
    sx = _arbitrary(rng, pow2_scales, _pow2(3.0 / max(a_hi - zx, 1)))
    conv_attrs = dict(strides=list(stride), pads=list(pads), dilations=list(dilation),
                      group=groups) if kind == "conv2d" else {}
    integer_in = form == "integer"
    g.inputs.append(helper.make_tensor_value_info(
        "x", TensorProto.UINT8 if integer_in else TensorProto.FLOAT, in_shape))
    w_axis = 0
    w_codes = codes if kind == "conv2d" or use_gemm else codes.T  # MatMul wants [K, N]
    if kind == "dense" and not use_gemm:
        w_axis = 1
    qz = _Quantizer(g, form)

    if form == "integer":
        dt = np.int8 if weight_signed else np.uint8
        w = g.const("w_codes", w_codes, dt)
        zp_x = g.const("x_zp", np.uint8(zx))
        zp_w = g.const("w_zp", np.asarray(w_zp, dt))
        op = "ConvInteger" if kind == "conv2d" else "MatMulInteger"
        out = g.node(op, ["x", w, zp_x, zp_w], "layer", **conv_attrs)
        out_shape = _out_shape(kind, in_shape, wshape, stride, pads, dilation)
        return g.model(out, TensorProto.INT32, out_shape)

    if form == "qoperator":
        return _qoperator(g, kind, rng, in_shape, wshape, w_codes, w_scale, w_zp, w_axis, sx, zx,
                          act_signed, weight_signed, bias, relu, conv_attrs, stride, pads,
                          dilation, pow2_scales, seed)

    xd = qz.activation("x", "x", sx, zx, act_bits, act_signed)
    wd = qz.weight(w_codes, w_scale, np.asarray(w_zp), "w", weight_bits, weight_signed, w_axis)
    inputs = [xd, wd]
    if bias and kind == "conv2d":
        b = rng.integers(-64, 64, size=out_ch).astype(np.int32)
        bs = g.const("b_scale", (np.float32(sx) * w_scale).astype(np.float32))
        inputs.append(g.node("DequantizeLinear", [g.const("b_codes", b), bs,
                                                  g.const("b_zp", np.zeros(out_ch, np.int32))],
                             "b_dq", axis=0))
    if kind == "conv2d":
        y = g.node("Conv", inputs, "layer", **conv_attrs)
    elif use_gemm:
        extra = []
        if bias:
            extra = [g.const("b_float", (rng.integers(-64, 64, size=out_ch) * np.float32(sx)
                                         * w_scale).astype(np.float32))]
        y = g.node("Gemm", inputs + extra, "layer", transB=1)
    else:
        y = g.node("MatMul", inputs, "layer")
        if bias:
            y = g.node("Add", [y, g.const("b_float", (rng.integers(-64, 64, size=out_ch)
                                                      * np.float32(sx) * w_scale
                                                      ).astype(np.float32))], "layer_bias")
    if relu:
        y = g.node("Relu", [y], "relu")
    out_shape = _out_shape(kind, in_shape, wshape, stride, pads, dilation)
    if out_quant:
        out_bits = act_bits
        out_signed = not relu
        o_lo, o_hi = _code_range(out_bits, out_signed)
        spread = _calibrate(g, y, in_shape, out_shape, seed)
        sy = _arbitrary(rng, pow2_scales, _pow2(spread / max(o_hi, 1) * 0.75))
        y = qz.activation(y, "y", sy, 0, out_bits, out_signed)
    return g.model(y, TensorProto.FLOAT, out_shape)


def _qoperator(g, kind, rng, in_shape, wshape, w_codes, w_scale, w_zp, w_axis, sx, zx,
               act_signed, weight_signed, bias, relu, conv_attrs, stride, pads, dilation,
               pow2_scales, seed):
    """QuantizeLinear → QLinearConv / QLinearMatMul → DequantizeLinear (8-bit codes)."""
    out_ch = wshape[0]
    xs = g.const("x_scale", np.float32(sx))
    xz = g.const("x_zp", np.asarray(zx, np.int8 if act_signed else np.uint8))
    xq = g.node("QuantizeLinear", ["x", xs, xz], "x_q")
    wdt = np.int8 if weight_signed else np.uint8
    w = g.const("w_codes", w_codes, wdt)
    if kind == "conv2d":
        ws = g.const("w_scale", w_scale)
        wz = g.const("w_zp", np.full(out_ch, w_zp, wdt))
    else:  # QLinearMatMul: per-column (output) scales of a [K, N] weight
        ws = g.const("w_scale", w_scale)
        wz = g.const("w_zp", np.full(out_ch, w_zp, wdt))
    out_shape = _out_shape(kind, in_shape, wshape, stride, pads, dilation)
    # Calibrate the output scale on the float version of the same layer.
    probe = _Graph(g.opset)
    probe.inputs = list(g.inputs)
    pw = probe.node("DequantizeLinear", [probe.const("w_codes", w_codes, wdt),
                                         probe.const("w_scale", w_scale),
                                         probe.const("w_zp", np.full(out_ch, w_zp, wdt))],
                    "w_dq", axis=w_axis)
    op = "Conv" if kind == "conv2d" else "MatMul"
    pout = probe.node(op, ["x", pw], "probe", **conv_attrs)
    spread = float(np.abs(run_onnxruntime(probe.model(pout, TensorProto.FLOAT, out_shape),
                                          random_input(probe.model(pout, TensorProto.FLOAT,
                                                                   out_shape),
                                                       seed=seed + 1000))[0]).max())
    sy = _arbitrary(rng, pow2_scales, _pow2(spread / 127 * 0.75))
    ys = g.const("y_scale", np.float32(sy))
    yz = g.const("y_zp", np.uint8(128))
    if kind == "conv2d":
        inputs = [xq, xs, xz, w, ws, wz, ys, yz]
        if bias:
            inputs.append(g.const("b_codes", rng.integers(-64, 64, size=out_ch).astype(np.int32)))
        y = g.node("QLinearConv", inputs, "layer", **conv_attrs)
    else:
        y = g.node("QLinearMatMul", [xq, xs, xz, w, ws, wz, ys, yz], "layer")
    y = g.node("DequantizeLinear", [y, ys, yz], "y_dq")
    if relu:
        y = g.node("Relu", [y], "relu")
    return g.model(y, TensorProto.FLOAT, out_shape)


def _out_shape(kind, in_shape, wshape, stride, pads, dilation):
    if kind == "dense":
        return [in_shape[0], wshape[0]]
    n, _, h, w = in_shape
    kh, kw = wshape[2:]
    oh = (h + pads[0] + pads[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pads[1] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return [n, wshape[0], oh, ow]


def make_conv_model(form="qdq", *, in_ch=8, out_ch=8, size=(9, 9), kernel=(3, 3), stride=(1, 1),
                    pads=(1, 1, 1, 1), dilation=(1, 1), groups=1, act_bits=8, weight_bits=2,
                    act_signed=False, weight_signed=True, per_channel=True, bias=True,
                    relu=False, out_quant=True, batch=1, seed=0, pow2_scales=True,
                    opset=None) -> onnx.ModelProto:
    """One quantized Conv in the given form (see the module docstring).

    The input is float32 NCHW (uint8 codes for ``integer``); the output is float32 (the
    dequantized output codes when ``out_quant``), or int32 for ``integer``. ``qoperator`` uses
    8-bit activations; ``qdq`` needs ``act_bits=8``; ``qdq_int4`` at most 4 bits.
    """
    return _layer_model("conv2d", form, batch=batch, in_ch=in_ch, out_ch=out_ch, size=size,
                        kernel=kernel, stride=stride, pads=pads, dilation=dilation, groups=groups,
                        act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed,
                        weight_signed=weight_signed, per_channel=per_channel, bias=bias,
                        relu=relu, out_quant=out_quant, seed=seed, pow2_scales=pow2_scales,
                        use_gemm=False, opset=opset)


def make_dense_model(form="qdq", *, batch=1, in_features=64, out_features=16, act_bits=8,
                     weight_bits=2, act_signed=False, weight_signed=True, per_channel=True,
                     bias=True, relu=False, out_quant=True, seed=0, pow2_scales=True,
                     use_gemm=False, opset=None) -> onnx.ModelProto:
    """One quantized MatMul (or ``Gemm`` with ``transB=1``) in the given form.

    ``qoperator`` is a ``QLinearMatMul`` (no bias); ``integer`` a ``MatMulInteger``.
    """
    return _layer_model("dense", form, batch=batch, in_ch=in_features, out_ch=out_features,
                        size=None, kernel=None, stride=(1, 1), pads=(0, 0, 0, 0),
                        dilation=(1, 1), groups=1, act_bits=act_bits, weight_bits=weight_bits,
                        act_signed=act_signed, weight_signed=weight_signed,
                        per_channel=per_channel, bias=bias, relu=relu, out_quant=out_quant,
                        seed=seed, pow2_scales=pow2_scales, use_gemm=use_gemm, opset=opset)


def make_cnn_model(form="qcdq", *, bits=2, first_last_bits=8, channels=(16, 32), num_classes=10,
                   image=(1, 28, 28), seed=0) -> onnx.ModelProto:
    """A small CNN: conv3x3 → conv3x3 → maxpool → conv3x3 → global pool → dense (logits).

    First conv and the classifier use ``first_last_bits`` weights; the middle layers ``bits``
    weights and activations (``qcdq``; in ``qdq`` activations stay 8-bit). Random weights, scales
    calibrated on a random input so codes spread over their range.
    """
    if form not in ("qcdq", "qdq"):
        raise ValueError(f"form={form!r}: make_cnn_model builds 'qcdq' or 'qdq'")
    _check_bits("bits", bits)
    _check_bits("first_last_bits", first_last_bits)
    rng = np.random.default_rng(seed)
    g = _Graph(19)
    qz = _Quantizer(g, form)
    c0, c1 = channels
    g.inputs.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, *image]))
    act_bits = 8 if form == "qdq" else bits
    shape = [1, *image]
    x = qz.activation("image", "in", 2.0 ** -5, 128, 8, False)

    def conv(x, name, cin, cout, wbits, out_bits, pool=False):
        nonlocal shape
        codes, w_scale, w_zp = _weights(rng, (cout, cin, 3, 3), wbits, True, True)
        wd = qz.weight(codes, w_scale, np.asarray(w_zp), name, wbits, True, 0)
        y = g.node("Conv", [x, wd], name, pads=[1, 1, 1, 1])
        shape = [1, cout, shape[2], shape[3]]
        y = g.node("Relu", [y], name + "_relu")
        spread = _calibrate(g, y, None, shape, seed)
        y = qz.activation(y, name + "_out", _pow2(spread / ((1 << out_bits) - 1)), 0,
                          out_bits, False)
        if pool:
            y = g.node("MaxPool", [y], name + "_pool", kernel_shape=[2, 2], strides=[2, 2])
            shape = [1, cout, shape[2] // 2, shape[3] // 2]
            spread = _calibrate(g, y, None, shape, seed)
            y = qz.activation(y, name + "_pool_out", _pow2(spread / ((1 << out_bits) - 1)), 0,
                              out_bits, False)
        return y

    x = conv(x, "conv0", image[0], c0, first_last_bits, act_bits)
    x = conv(x, "conv1", c0, c1, bits, act_bits, pool=True)
    x = conv(x, "conv2", c1, c1, bits, 8)
    x = g.node("GlobalAveragePool", [x], "gap")
    shape = [1, c1, 1, 1]
    spread = _calibrate(g, x, None, shape, seed)
    x = qz.activation(x, "gap_out", _pow2(spread / 255), 0, 8, False)
    x = g.node("Flatten", [x], "flatten")
    codes, w_scale, w_zp = _weights(rng, (num_classes, c1), first_last_bits, True, True)
    wd = qz.weight(codes, w_scale, np.asarray(w_zp), "fc", first_last_bits, True, 0)
    b = g.const("fc_bias", (rng.normal(size=num_classes) * 0.1).astype(np.float32))
    logits = g.node("Gemm", [x, wd, b], "fc", transB=1)
    return g.model(logits, TensorProto.FLOAT, [1, num_classes])


def random_input(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every graph input: N(0, 1) floats, or integer codes over the dtype."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.normal(size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[inp.name] = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return feeds


def run_reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Outputs by ``onnx.reference.ReferenceEvaluator`` (the ONNX spec in numpy)."""
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]


def run_onnxruntime(model: onnx.ModelProto, feeds: dict, optimized: bool = False
                    ) -> list[np.ndarray]:
    """Outputs by onnxruntime; graph optimizations off unless ``optimized`` (its fused
    QLinear kernels round some ties differently from the ONNX spec)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
