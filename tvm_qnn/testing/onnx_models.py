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

Where things are: single layers are described by a :class:`~tvm_qnn.testing.onnx_layer.LayerSpec`
and built in :mod:`~tvm_qnn.testing.onnx_layer`; the graph builder and the quantization emitter
are in :mod:`~tvm_qnn.testing.onnx_graph`; ``random_input`` and the runners are in
:mod:`~tvm_qnn.testing.onnx_run` (all importable from here).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from .onnx_graph import Graph, Quantizer, calibrate, check_bits, pow2_at_least, random_weights
from .onnx_layer import QUANT_FORMS, LayerSpec, build_layer_model
from .onnx_run import random_input, run_onnxruntime, run_reference

__all__ = ["QUANT_FORMS", "make_cnn_model", "make_conv_model", "make_dense_model",
           "random_input", "run_onnxruntime", "run_reference"]


def make_conv_model(form="qdq", *, in_ch=8, out_ch=8, size=(9, 9), kernel=(3, 3), stride=(1, 1),
                    pads=(1, 1, 1, 1), dilation=(1, 1), groups=1, act_bits=8, weight_bits=2,
                    act_signed=False, weight_signed=True, per_channel=True, bias=True,
                    relu=False, out_quant=True, batch=1, seed=0, pow2_scales=True,
                    opset=None) -> onnx.ModelProto:
    """One quantized Conv in the given form (see the module docstring).

    Parameters
    ----------
    form : str
        One of ``QUANT_FORMS``.
    in_ch, out_ch : int
        Input and output channels.
    size : tuple of int
        Input (height, width).
    kernel, stride, pads, dilation, groups
        As the ONNX ``Conv`` attributes (``groups`` must divide both channel counts).
    act_bits, weight_bits : int
        Bit widths, 1..8: ``qdq`` needs ``act_bits=8``, ``qdq_int4`` at most 4 bits;
        ``qoperator`` and ``integer`` keep 8-bit tensors (``act_bits`` only sets the input
        zero-point and scale).
    act_signed, weight_signed : bool
        Signed codes (zero-point 0) or unsigned (mid-range zero-point).
    per_channel : bool
        One weight scale per output channel.
    bias, relu : bool
        Add a bias; apply a ReLU to the output.
    out_quant : bool
        Quantize the output to ``act_bits`` (the ``qdq`` family only).
    batch, seed : int
        Batch size; seed of the weights, scales and bias.
    pow2_scales : bool
        Power-of-two scales (bit-exact references); else arbitrary ones.
    opset : int or None
        ONNX opset; None is 21 for ``qdq_int4``, 19 otherwise.

    Returns
    -------
    onnx.ModelProto
        Input ``x``: float32 NCHW (uint8 codes for ``integer``). Output: float32 (the
        dequantized output codes when ``out_quant``), int32 for ``integer``.

    Raises
    ------
    ValueError
        For an unknown form, bit widths the form cannot hold, or groups that do not divide the
        channels.
    """
    return build_layer_model(LayerSpec(
        kind="conv2d", form=form, batch=batch, in_ch=in_ch, out_ch=out_ch, size=size,
        kernel=kernel, stride=stride, pads=pads, dilation=dilation, groups=groups,
        act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed,
        weight_signed=weight_signed, per_channel=per_channel, bias=bias, relu=relu,
        out_quant=out_quant, seed=seed, pow2_scales=pow2_scales, opset=opset))


def make_dense_model(form="qdq", *, batch=1, in_features=64, out_features=16, act_bits=8,
                     weight_bits=2, act_signed=False, weight_signed=True, per_channel=True,
                     bias=True, relu=False, out_quant=True, seed=0, pow2_scales=True,
                     use_gemm=False, opset=None) -> onnx.ModelProto:
    """One quantized MatMul (or ``Gemm`` with ``transB=1``) in the given form.

    ``qoperator`` is a ``QLinearMatMul`` (no bias); ``integer`` a ``MatMulInteger``. The other
    arguments are those of :func:`make_conv_model`.

    Parameters
    ----------
    form : str
        One of ``QUANT_FORMS``.
    batch, in_features, out_features : int
        Input ``x`` is [batch, in_features], the output [batch, out_features].
    use_gemm : bool
        ``Gemm`` with ``transB=1`` (weights [out, in]) instead of ``MatMul`` ([in, out]); for
        the ``qdq`` family only.

    Returns
    -------
    onnx.ModelProto
        As for :func:`make_conv_model`.
    """
    return build_layer_model(LayerSpec(
        kind="dense", form=form, batch=batch, in_ch=in_features, out_ch=out_features,
        act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed,
        weight_signed=weight_signed, per_channel=per_channel, bias=bias, relu=relu,
        out_quant=out_quant, seed=seed, pow2_scales=pow2_scales, use_gemm=use_gemm,
        opset=opset))


def make_cnn_model(form="qcdq", *, bits=2, first_last_bits=8, channels=(16, 32), num_classes=10,
                   image=(1, 28, 28), seed=0) -> onnx.ModelProto:
    """A small CNN: conv3x3 → conv3x3 → maxpool → conv3x3 → global pool → dense (logits).

    Random weights; output scales calibrated on a random input so codes spread over their range.

    Parameters
    ----------
    form : str
        ``"qcdq"`` or ``"qdq"``.
    bits : int
        Weight bits of the middle convolutions, and activation bits between them (``qcdq``;
        in ``qdq`` activations stay 8-bit).
    first_last_bits : int
        Weight bits of the first convolution and of the classifier.
    channels : tuple of int
        Output channels of the first convolution, then of the other two.
    num_classes : int
        Logits.
    image : tuple of int
        (channels, height, width) of the float input ``image`` (batch 1).
    seed : int
        Seed of the weights and of the calibration input.

    Returns
    -------
    onnx.ModelProto
        Float32 ``image`` in, float32 logits [1, num_classes] out.
    """
    if form not in ("qcdq", "qdq"):
        raise ValueError(f"form={form!r}: make_cnn_model builds 'qcdq' or 'qdq'")
    check_bits("bits", bits)
    check_bits("first_last_bits", first_last_bits)
    rng = np.random.default_rng(seed)
    g = Graph(19)
    qz = Quantizer(g, form)
    c0, c1 = channels
    act_bits = 8 if form == "qdq" else bits
    shape = [1, *image]
    g.input("image", TensorProto.FLOAT, shape)
    x = qz.activation("image", "in", 2.0 ** -5, 128, 8, False)

    def requantize(y, name, shape, bits):
        # Non-negative (after a ReLU): unsigned codes, zero-point 0.
        spread = calibrate(g, y, shape, seed)
        return qz.activation(y, name, pow2_at_least(spread / ((1 << bits) - 1)), 0, bits, False)

    def conv(x, shape, name, cin, cout, wbits, out_bits, pool=False):
        codes, w_scale, w_zp = random_weights(rng, (cout, cin, 3, 3), wbits, True, True)
        wd = qz.weight(codes, w_scale, np.asarray(w_zp), name, wbits, True, 0)
        y = g.node("Conv", [x, wd], name, pads=[1, 1, 1, 1])
        y = g.node("Relu", [y], name + "_relu")
        shape = [1, cout, shape[2], shape[3]]
        y = requantize(y, name + "_out", shape, out_bits)
        if pool:
            y = g.node("MaxPool", [y], name + "_pool", kernel_shape=[2, 2], strides=[2, 2])
            shape = [1, cout, shape[2] // 2, shape[3] // 2]
            y = requantize(y, name + "_pool_out", shape, out_bits)
        return y, shape

    x, shape = conv(x, shape, "conv0", image[0], c0, first_last_bits, act_bits)
    x, shape = conv(x, shape, "conv1", c0, c1, bits, act_bits, pool=True)
    x, shape = conv(x, shape, "conv2", c1, c1, bits, 8)
    x = g.node("GlobalAveragePool", [x], "gap")
    x = requantize(x, "gap_out", [1, c1, 1, 1], 8)
    x = g.node("Flatten", [x], "flatten")
    codes, w_scale, w_zp = random_weights(rng, (num_classes, c1), first_last_bits, True, True)
    wd = qz.weight(codes, w_scale, np.asarray(w_zp), "fc", first_last_bits, True, 0)
    b = g.const("fc_bias", (rng.normal(size=num_classes) * 0.1).astype(np.float32))
    logits = g.node("Gemm", [x, wd, b], "fc", transB=1)
    return g.model(logits, TensorProto.FLOAT, [1, num_classes])
