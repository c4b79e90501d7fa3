# SPDX-License-Identifier: Apache-2.0
"""Export a ``tvm_qnn.nn`` model to QCDQ ONNX with the exact codes training used.

Every quantized layer becomes ``QuantizeLinear → Clip → DequantizeLinear`` on its input (the
Clip bounds carry the bit width), its integer weight codes with per-channel scales (BatchNorm
folded in) through ``DequantizeLinear``, its float bias, then ``Conv`` / ``Gemm``.
``tvm_qnn.compile`` computes such a layer as the layers of :mod:`tvm_qnn.nn.layers` do (exact
integer accumulator, one float32 scale, one bias add), so its outputs equal PyTorch's eval-mode
forward bit for bit; with power-of-two steps and no bias or BatchNorm, every ONNX runtime does
too (its float convolution is then exact).

The model is traced with ``torch.fx`` (quantized layers are leaves). Supported around them:
``InputScale`` (input normalisation), float Conv2d / Linear / BatchNorm2d (float models and
unquantized layers), ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten /
``torch.flatten``, Identity, Dropout (inference: identity). Anything else raises an error
naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from ..errors import UnsupportedModelError
from .layers import QConv2d, QLinear
from .quantizers import Quantizer

OPSET = 19


class InputScale(nn.Module):
    """``x * scale + shift`` in front of a model (e.g. [0, 1] images → [-1, 1]); exported as
    ``Mul`` + ``Add``. Keep ``scale`` a power of two so the product is exact everywhere."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.scale + self.shift


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QConv2d, QLinear, Quantizer, InputScale)) or \
            super().is_leaf_module(m, qualname)


class _Emitter:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def quantize_input(self, x: str, q: Quantizer, name: str) -> str:
        if q.kind == "bipolar":
            raise UnsupportedModelError(
                f"{name}: bipolar activations have no zero level and no QCDQ spelling; use "
                "unsigned or symmetric activation quantizers")
        lo, hi = q.code_range
        dtype = np.uint8 if lo >= 0 else np.int8
        s = self.const(f"{name}_in_scale", q.step().detach().numpy().astype(np.float32)[0])
        z = self.const(f"{name}_in_zp", dtype(0))
        y = self.node("QuantizeLinear", [x, s, z], f"{name}_in_q")
        info = np.iinfo(dtype)
        if (lo, hi) != (info.min, info.max):
            y = self.node("Clip", [y, self.const(f"{name}_in_lo", dtype(lo)),
                                   self.const(f"{name}_in_hi", dtype(hi))], f"{name}_in_clip")
        return self.node("DequantizeLinear", [y, s, z], f"{name}_in_dq")

    def layer(self, x: str, m: nn.Module, name: str) -> str:
        with torch.no_grad():
            xd = self.quantize_input(x, m.input_quant, name)
            codes = m.weight_quant.codes(m.weight).to(torch.int64).numpy()
            s_w, bias = (t.numpy().astype(np.float32) for t in m.folded_scale_bias())
            w = self.const(f"{name}_w_codes", codes.astype(np.int8))
            wd = self.node("DequantizeLinear",
                           [w, self.const(f"{name}_w_scale", s_w),
                            self.const(f"{name}_w_zp", np.zeros(codes.shape[0], np.int8))],
                           f"{name}_w_dq", axis=0)
            inputs = [xd, wd]
            if m.bias is not None or m.bn is not None:
                inputs.append(self.const(f"{name}_bias", bias))
        if isinstance(m, QConv2d):
            return self.node("Conv", inputs, name, **_conv_attrs(m, name))
        return self.node("Gemm", inputs, name, transB=1)

    def float_conv(self, x: str, m: nn.Conv2d, name: str) -> str:
        inputs = [x, self.const(f"{name}_w", m.weight.detach().numpy())]
        if m.bias is not None:
            inputs.append(self.const(f"{name}_b", m.bias.detach().numpy()))
        return self.node("Conv", inputs, name, **_conv_attrs(m, name))


def _conv_attrs(m: nn.Conv2d, name: str) -> dict:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise UnsupportedModelError(f"{name}: padding {m.padding!r}/{m.padding_mode} "
                                    "(explicit zero padding only)")
    ph, pw = m.padding
    return dict(strides=list(m.stride), pads=[ph, pw, ph, pw], dilations=list(m.dilation),
                group=m.groups, kernel_shape=list(m.kernel_size))


def _pool_attrs(m):
    def pair(v):
        return list(v) if isinstance(v, (tuple, list)) else [v, v]

    k, s, p = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
    return dict(kernel_shape=k, strides=s, pads=p + p)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | None = None,
                input_name: str = "input") -> onnx.ModelProto:
    """Export ``model`` (in eval mode, quantizers initialised) as a QCDQ ONNX model.

    Parameters
    ----------
    model : nn.Module
        Built from ``QConv2d`` / ``QLinear`` and the supported float modules.
    example : torch.Tensor
        An input of the shape to export (batch included).
    path : str, optional
        Also save the model there.
    """
    model = model.eval()
    graph = fx.GraphModule(model, _LeafTracer().trace(model))
    em = _Emitter()
    names: dict[fx.Node, str] = {}
    graph_inputs, outputs = [], []
    with torch.no_grad():
        out_shape = list(model(example).shape)
    for node in graph.graph.nodes:
        src = names.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        label = node.name
        if node.op == "placeholder":
            graph_inputs.append(helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                              list(example.shape)))
            names[node] = input_name
            continue
        if node.op == "output":
            outputs.append(names[node.args[0]])
            continue
        target = graph.get_submodule(node.target) if node.op == "call_module" else node.target
        if isinstance(target, (QConv2d, QLinear)):
            kind = "conv" if isinstance(target, QConv2d) else "fc"
            names[node] = em.layer(src, target, f"{kind}_{str(node.target).replace('.', '_')}")
        elif isinstance(target, InputScale):
            y = em.node("Mul", [src, em.const(f"{label}_scale", np.float32(target.scale))],
                        f"{label}_mul")
            names[node] = em.node("Add", [y, em.const(f"{label}_shift",
                                                      np.float32(target.shift))], label)
        elif isinstance(target, nn.Conv2d):
            names[node] = em.float_conv(src, target, label)
        elif isinstance(target, nn.Linear):
            operands = [src, em.const(f"{label}_w", target.weight.detach().numpy())]
            if target.bias is not None:
                operands.append(em.const(f"{label}_b", target.bias.detach().numpy()))
            names[node] = em.node("Gemm", operands, label, transB=1)
        elif isinstance(target, nn.BatchNorm2d):
            names[node] = em.node("BatchNormalization", [src] + [
                em.const(f"{label}_{k}", getattr(target, k).detach().numpy())
                for k in ("weight", "bias", "running_mean", "running_var")], label,
                epsilon=float(target.eps))
        elif isinstance(target, nn.ReLU) or target in (torch.relu, torch.nn.functional.relu):
            names[node] = em.node("Relu", [src], label)
        elif isinstance(target, nn.MaxPool2d):
            names[node] = em.node("MaxPool", [src], label, **_pool_attrs(target))
        elif isinstance(target, nn.AvgPool2d):
            names[node] = em.node("AveragePool", [src], label, **_pool_attrs(target))
        elif isinstance(target, nn.AdaptiveAvgPool2d) and target.output_size in (1, (1, 1)):
            names[node] = em.node("GlobalAveragePool", [src], label)
        elif isinstance(target, nn.Flatten) or target is torch.flatten:
            names[node] = em.node("Flatten", [src], label, axis=1)
        elif isinstance(target, (nn.Identity, nn.Dropout)):
            names[node] = src
        else:
            what = type(target).__name__ if node.op == "call_module" else node.target
            raise UnsupportedModelError(
                f"cannot export node '{node.name}' ({what}): supported are QConv2d, QLinear, "
                "InputScale, float Conv2d / Linear / BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, "
                "AdaptiveAvgPool2d(1), Flatten, Identity, Dropout")
    out = em.node("Identity", [outputs[0]], "output")
    onnx_graph = helper.make_graph(em.nodes, "tvm_qnn_export", graph_inputs,
                                   [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                                  out_shape)], em.inits)
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 9
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save(proto, path)
    return proto
