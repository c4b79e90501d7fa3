# SPDX-License-Identifier: Apache-2.0
"""One quantized Conv or dense layer as an ONNX model, described by a :class:`LayerSpec`.

:func:`build_layer_model` draws everything random from one generator seeded by ``spec.seed``,
in the order the graph is built, so a spec always gives the same model (byte for byte); drawing
in another order changes the models.
The public entry points are ``make_conv_model`` and ``make_dense_model`` in
:mod:`tvm_qnn.testing.onnx_models`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from .onnx_graph import (
    Graph,
    Quantizer,
    calibrate,
    check_bits,
    code_range,
    pow2_at_least,
    random_weights,
)

QUANT_FORMS = ("qdq", "qcdq", "qdq_int4", "qoperator", "integer")


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """What one test layer computes and how it is quantized (checked on construction).

    Attributes
    ----------
    kind : str
        ``"conv2d"`` or ``"dense"``.
    form : str
        How the quantization is written, one of ``QUANT_FORMS``.
    batch, in_ch, out_ch : int
        Batch size, input channels (features), output channels (features).
    act_bits, weight_bits : int
        Bit widths of the activation and weight codes, 1..8.
    act_signed, weight_signed : bool
        Whether those codes are signed (zero-point 0) or unsigned (mid-range zero-point).
    per_channel : bool
        One weight scale per output channel rather than one for the tensor.
    bias, relu, out_quant : bool
        Add a bias (not in ``integer``, nor in ``qoperator`` dense: ``QLinearMatMul`` takes
        none); apply a ReLU; quantize the output (``qoperator`` always does, ``integer`` never:
        its output is the int32 accumulators).
    seed : int
        Seed of everything random: weights, scales, bias, the calibration input.
    pow2_scales : bool
        Power-of-two scales (every reference then agrees bit for bit); else arbitrary ones.
    opset : int or None
        ONNX opset; None is 21 for ``qdq_int4`` (INT4 tensors), 19 otherwise.
    size, kernel, stride, pads, dilation, groups
        Conv2d geometry: input (height, width), then as the ONNX ``Conv`` attributes.
        The defaults are those of a dense layer, which has none.
    use_gemm : bool
        Dense as ``Gemm`` with ``transB=1`` (weights [N, K]) instead of ``MatMul`` ([K, N]).
    """

    kind: str
    form: str
    batch: int
    in_ch: int
    out_ch: int
    act_bits: int
    weight_bits: int
    act_signed: bool
    weight_signed: bool
    per_channel: bool
    bias: bool
    relu: bool
    out_quant: bool
    seed: int
    pow2_scales: bool
    opset: int | None
    size: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = (1, 1)
    pads: tuple[int, ...] = (0, 0, 0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1
    use_gemm: bool = False

    def __post_init__(self):
        if self.kind not in ("conv2d", "dense"):
            raise ValueError(f"kind={self.kind!r}: 'conv2d' or 'dense'")
        if self.form not in QUANT_FORMS:
            raise ValueError(f"form={self.form!r}: one of {QUANT_FORMS}")
        check_bits("act_bits", self.act_bits)
        check_bits("weight_bits", self.weight_bits)
        if self.form == "qdq" and self.act_bits != 8:
            raise ValueError("act_bits must be 8 in form 'qdq' (8-bit tensors, no Clip); use "
                             "'qcdq' or 'qdq_int4' for fewer bits")
        if self.form == "qdq_int4" and (self.act_bits > 4 or self.weight_bits > 4):
            raise ValueError("form 'qdq_int4' holds at most 4 bits (act_bits, weight_bits <= 4)")
        if self.kind == "conv2d" and (self.in_ch % self.groups or self.out_ch % self.groups):
            raise ValueError(f"groups={self.groups} must divide in_ch={self.in_ch} and "
                             f"out_ch={self.out_ch}")

    @property
    def onnx_opset(self) -> int:
        return self.opset or (21 if self.form == "qdq_int4" else 19)

    @property
    def in_shape(self) -> list[int]:
        if self.kind == "conv2d":
            return [self.batch, self.in_ch, *self.size]
        return [self.batch, self.in_ch]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """[OC, C / groups, KH, KW] or [OC, K]: the layout weights are drawn in."""
        if self.kind == "conv2d":
            return (self.out_ch, self.in_ch // self.groups, *self.kernel)
        return (self.out_ch, self.in_ch)

    @property
    def out_shape(self) -> list[int]:
        if self.kind == "dense":
            return [self.batch, self.out_ch]
        (h, w), (kh, kw), pads = self.size, self.kernel, self.pads
        oh = (h + pads[0] + pads[2] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + pads[1] + pads[3] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return [self.batch, self.out_ch, oh, ow]

    @property
    def conv_attrs(self) -> dict:
        """Attributes of the Conv / ConvInteger / QLinearConv node ({} for dense)."""
        if self.kind != "conv2d":
            return {}
        return dict(strides=list(self.stride), pads=list(self.pads),
                    dilations=list(self.dilation), group=self.groups)


@dataclass(frozen=True)
class _Weights:
    """The drawn weights, laid out as the layer's node takes them."""

    codes: np.ndarray  # [OC, C / groups, KH, KW], [OC, K] (Gemm) or [K, OC] (MatMul)
    scale: np.ndarray  # float32, one per output channel
    zero_point: int
    axis: int  # the output-channel axis of ``codes``


def build_layer_model(spec: LayerSpec) -> onnx.ModelProto:
    """The ONNX model of ``spec`` (checked by ``onnx.checker``).

    Parameters
    ----------
    spec : LayerSpec
        The layer.

    Returns
    -------
    onnx.ModelProto
        Input ``x``: float32 (uint8 codes for ``integer``); output float32 (int32 for
        ``integer``).
    """
    rng = np.random.default_rng(spec.seed)
    g = Graph(spec.onnx_opset)
    weights = _draw_weights(spec, rng)
    _, a_hi = code_range(spec.act_bits, spec.act_signed)
    x_zp = 0 if spec.act_signed else (a_hi + 1) // 2
    # The input is N(0, 1): ±3 covers it.
    x_scale = _scale(rng, spec, pow2_at_least(3.0 / max(a_hi - x_zp, 1)))
    g.input("x", TensorProto.UINT8 if spec.form == "integer" else TensorProto.FLOAT,
            spec.in_shape)
    if spec.form == "integer":
        return _integer_layer(g, spec, weights, x_zp)
    if spec.form == "qoperator":
        return _qoperator_layer(g, spec, rng, weights, x_scale, x_zp)
    return _qdq_layer(g, spec, rng, weights, x_scale, x_zp)


def _scale(rng: np.random.Generator, spec: LayerSpec, pow2: float) -> float:
    """``pow2`` itself, or (``pow2_scales=False``) shrunk by a random factor in [0.55, 0.95)."""
    return pow2 if spec.pow2_scales else float(pow2 * rng.uniform(0.55, 0.95))


def _draw_weights(spec: LayerSpec, rng: np.random.Generator) -> _Weights:
    codes, scale, zp = random_weights(rng, spec.weight_shape, spec.weight_bits,
                                      spec.weight_signed, spec.per_channel)
    if not spec.pow2_scales:
        scale = (scale * rng.uniform(0.55, 0.95, size=scale.shape)).astype(np.float32)
    if spec.kind == "dense" and not spec.use_gemm:
        return _Weights(codes.T, scale, zp, axis=1)  # MatMul wants [K, N]
    return _Weights(codes, scale, zp, axis=0)


def _integer_layer(g: Graph, spec: LayerSpec, weights: _Weights, x_zp: int) -> onnx.ModelProto:
    """ConvInteger / MatMulInteger: codes in, int32 accumulators out (no scales at all)."""
    dt = np.int8 if spec.weight_signed else np.uint8
    w = g.const("w_codes", weights.codes, dt)
    xz = g.const("x_zp", np.uint8(x_zp))
    wz = g.const("w_zp", np.asarray(weights.zero_point, dt))
    op = "ConvInteger" if spec.kind == "conv2d" else "MatMulInteger"
    out = g.node(op, ["x", w, xz, wz], "layer", **spec.conv_attrs)
    return g.model(out, TensorProto.INT32, spec.out_shape)


def _qoperator_layer(g: Graph, spec: LayerSpec, rng: np.random.Generator, weights: _Weights,
                     x_scale: float, x_zp: int) -> onnx.ModelProto:
    """QuantizeLinear → QLinearConv / QLinearMatMul → DequantizeLinear (8-bit codes).

    QLinearMatMul takes no bias; the output is always quantized (uint8, zero-point 128).
    """
    xs = g.const("x_scale", np.float32(x_scale))
    xz = g.const("x_zp", np.asarray(x_zp, np.int8 if spec.act_signed else np.uint8))
    xq = g.node("QuantizeLinear", ["x", xs, xz], "x_q")
    wdt = np.int8 if spec.weight_signed else np.uint8
    w = g.const("w_codes", weights.codes, wdt)
    # One scale and zero-point per output channel: rows of a conv weight, columns of [K, N].
    ws = g.const("w_scale", weights.scale)
    wz = g.const("w_zp", np.full(spec.out_ch, weights.zero_point, wdt))
    # The output scale needs the output's range: calibrate the float version of the same layer.
    probe = Graph(g.opset)
    probe.inputs = list(g.inputs)
    pw = probe.node("DequantizeLinear",
                    [probe.const("w_codes", weights.codes, wdt),
                     probe.const("w_scale", weights.scale),
                     probe.const("w_zp", np.full(spec.out_ch, weights.zero_point, wdt))],
                    "w_dq", axis=weights.axis)
    pout = probe.node("Conv" if spec.kind == "conv2d" else "MatMul", ["x", pw], "probe",
                      **spec.conv_attrs)
    spread = calibrate(probe, pout, spec.out_shape, spec.seed)
    # 127 codes either side of the zero-point 128, with a quarter of headroom.
    ys = g.const("y_scale", np.float32(_scale(rng, spec, pow2_at_least(spread / 127 * 0.75))))
    yz = g.const("y_zp", np.uint8(128))
    inputs = [xq, xs, xz, w, ws, wz, ys, yz]
    if spec.kind == "conv2d":
        if spec.bias:
            inputs.append(g.const("b_codes", rng.integers(-64, 64, size=spec.out_ch)
                                  .astype(np.int32)))
        y = g.node("QLinearConv", inputs, "layer", **spec.conv_attrs)
    else:
        y = g.node("QLinearMatMul", inputs, "layer")
    y = g.node("DequantizeLinear", [y, ys, yz], "y_dq")
    if spec.relu:
        y = g.node("Relu", [y], "relu")
    return g.model(y, TensorProto.FLOAT, spec.out_shape)


def _qdq_layer(g: Graph, spec: LayerSpec, rng: np.random.Generator, weights: _Weights,
               x_scale: float, x_zp: int) -> onnx.ModelProto:
    """Float Conv / MatMul / Gemm between the (de)quantization nodes of ``qdq``, ``qcdq`` or
    ``qdq_int4``."""
    qz = Quantizer(g, spec.form)
    xd = qz.activation("x", "x", x_scale, x_zp, spec.act_bits, spec.act_signed)
    wd = qz.weight(weights.codes, weights.scale, np.asarray(weights.zero_point), "w",
                   spec.weight_bits, spec.weight_signed, weights.axis)
    if spec.kind == "conv2d":
        inputs = [xd, wd]
        if spec.bias:
            # int32 codes at scale x_scale * w_scale, as quantizers export a conv bias.
            b = rng.integers(-64, 64, size=spec.out_ch).astype(np.int32)
            bs = g.const("b_scale", (np.float32(x_scale) * weights.scale).astype(np.float32))
            inputs.append(g.node("DequantizeLinear",
                                 [g.const("b_codes", b), bs,
                                  g.const("b_zp", np.zeros(spec.out_ch, np.int32))],
                                 "b_dq", axis=0))
        y = g.node("Conv", inputs, "layer", **spec.conv_attrs)
    else:
        b = None
        if spec.bias:
            b = g.const("b_float", (rng.integers(-64, 64, size=spec.out_ch) * np.float32(x_scale)
                                    * weights.scale).astype(np.float32))
        if spec.use_gemm:
            y = g.node("Gemm", [xd, wd] + ([b] if b else []), "layer", transB=1)
        else:
            y = g.node("MatMul", [xd, wd], "layer")
            if b:
                y = g.node("Add", [y, b], "layer_bias")
    if spec.relu:
        y = g.node("Relu", [y], "relu")
    if spec.out_quant:
        # Signed codes unless a ReLU made the output non-negative; 3/4 of the range is used.
        out_signed = not spec.relu
        _, o_hi = code_range(spec.act_bits, out_signed)
        spread = calibrate(g, y, spec.out_shape, spec.seed)
        y_scale = _scale(rng, spec, pow2_at_least(spread / max(o_hi, 1) * 0.75))
        y = qz.activation(y, "y", y_scale, 0, spec.act_bits, out_signed)
    return g.model(y, TensorProto.FLOAT, spec.out_shape)
