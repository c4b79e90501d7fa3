# SPDX-License-Identifier: Apache-2.0
"""The pieces the test model builders assemble graphs from.

A tiny graph builder (:class:`Graph`), the quantization emitter of the QDQ-style forms
(:class:`Quantizer`), random weight codes and output-scale calibration. Internal to
:mod:`tvm_qnn.testing.onnx_models` and :mod:`tvm_qnn.testing.onnx_layer`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx_run import random_input, run_onnxruntime


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest code of a ``bits``-bit integer (two's complement when signed)."""
    lo = -(1 << (bits - 1)) if signed else 0
    return lo, lo + (1 << bits) - 1


def pow2_at_least(x: float) -> float:
    """The smallest power of two >= ``x`` (the default scales, so every reference is exact)."""
    return float(2.0 ** np.ceil(np.log2(max(x, 1e-12))))


def check_bits(name: str, bits: int):
    """Raise ValueError unless ``bits`` is an integer in 1..8."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"{name}={bits!r}: must be an integer in 1..8")


class Graph:
    """A tiny ONNX graph builder: nodes and initializers are named, and named by their output."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []

    def input(self, name: str, elem_type: int, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def const(self, name: str, value, dtype=None) -> str:
        arr = np.asarray(value, dtype) if dtype is not None else np.asarray(value)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const_int4(self, name: str, value, signed: bool) -> str:
        # numpy has no 4-bit dtype: INT4/UINT4 initializers are made from a list of ints.
        arr = np.asarray(value, np.int64)
        kind = TensorProto.INT4 if signed else TensorProto.UINT4
        self.inits.append(helper.make_tensor(name, kind, list(arr.shape),
                                             arr.reshape(-1).tolist()))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def model(self, output: str, out_type: int, out_shape) -> onnx.ModelProto:
        """The graph as built so far, with ``output`` as its only output (checked)."""
        graph = helper.make_graph(self.nodes, "tvm_qnn_test", self.inputs,
                                  [helper.make_tensor_value_info(output, out_type, out_shape)],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        # INT4 tensors (opset 21) need IR version 10.
        model.ir_version = 10 if self.opset >= 21 else 9
        onnx.checker.check_model(model, full_check=True)
        return model


class Quantizer:
    """Emits activation and weight quantization in one of ``qdq``, ``qcdq``, ``qdq_int4``."""

    def __init__(self, g: Graph, form: str):
        self.g, self.form = g, form

    def zero_point(self, name: str, value: int, signed: bool) -> str:
        if self.form == "qdq_int4":
            return self.g.const_int4(name, value, signed)
        return self.g.const(name, value, np.int8 if signed else np.uint8)

    def activation(self, x: str, name: str, scale: float, zp: int, bits: int,
                   signed: bool) -> str:
        """float → codes → float; returns the dequantized tensor's name."""
        g = self.g
        s = g.const(f"{name}_scale", np.float32(scale))
        z = self.zero_point(f"{name}_zp", zp, signed)
        q = g.node("QuantizeLinear", [x, s, z], f"{name}_q")
        q = self._clip(q, name, bits, signed)
        return g.node("DequantizeLinear", [q, s, z], f"{name}_dq")

    def _clip(self, q: str, name: str, bits: int, signed: bool) -> str:
        # The bit width narrower than the tensor type is carried by a Clip (Brevitas style);
        # 'qdq' has none, so its activations are always 8-bit.
        full = 4 if self.form == "qdq_int4" else 8
        if self.form == "qdq" or bits == full:
            return q
        lo, hi = code_range(bits, signed)
        if self.form == "qdq_int4":
            lo_c = self.g.const_int4(f"{name}_lo", lo, signed)
            hi_c = self.g.const_int4(f"{name}_hi", hi, signed)
        else:
            dt = np.int8 if signed else np.uint8
            lo_c, hi_c = self.g.const(f"{name}_lo", lo, dt), self.g.const(f"{name}_hi", hi, dt)
        return self.g.node("Clip", [q, lo_c, hi_c], f"{name}_clip")

    def weight(self, codes: np.ndarray, scale: np.ndarray, zp: np.ndarray, name: str,
               bits: int, signed: bool, axis: int) -> str:
        """Weight codes as an initializer → DequantizeLinear (per-``axis`` scales)."""
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


def random_weights(rng: np.random.Generator, shape, bits: int, signed: bool,
                   per_channel: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Random weight codes over the whole ``bits``-bit range, and their scales.

    Returns ``(codes, scale, zero_point)``: ``scale`` has one power of two per output channel
    (``shape[0]``), all equal unless ``per_channel``. Signed 1-bit weights are ±1 (binary
    networks), not the two's-complement {-1, 0}.
    """
    if bits == 1 and signed:
        codes = rng.choice([-1, 1], size=shape)
        zp = 0
    else:
        lo, hi = code_range(bits, signed)
        codes = rng.integers(lo, hi + 1, size=shape)
        zp = 0 if signed else (lo + hi + 1) // 2
    oc = shape[0]
    scale = 2.0 ** -rng.integers(3, 7, size=oc) if per_channel else \
        np.full(oc, 2.0 ** -rng.integers(3, 7))
    return codes, scale.astype(np.float32), zp


def calibrate(g: Graph, out: str, out_shape, seed: int) -> float:
    """Largest |value| of ``out`` on a random input (onnxruntime, the graph as built so far).

    Output scales are chosen from it so the output codes spread over their range.
    """
    probe = g.model(out, TensorProto.FLOAT, out_shape)
    feeds = random_input(probe, seed=seed + 1000)
    return float(np.abs(run_onnxruntime(probe, feeds)[0]).max())
