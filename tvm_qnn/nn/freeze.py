# SPDX-License-Identifier: Apache-2.0
"""``freeze``: the inference form of a trained model, with every quantization number fixed.

Each ``QConv2d`` / ``QLinear`` becomes a layer that holds, as buffers computed once by PyTorch,
its input step and code range, its integer weight codes, and its per-channel float32 scale
``m = s_x · s_w`` and bias (BatchNorm folded). Its forward is the eval-mode forward of the
original, operation for operation::

    codes = clamp(round(x / s_x), lo, hi);  y = conv(codes, W_codes) * m + b

so ``torch.export.export(freeze(model), (x,))`` is a small, constant graph that
``tvm_qnn.compile`` turns back into bit-serial layers, without ONNX, bit-exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .layers import QConv2d, QLinear


class FrozenQuantLayer(nn.Module):
    """The frozen inference form of a ``QConv2d`` or ``QLinear``."""

    def __init__(self, layer: QConv2d | QLinear):
        super().__init__()
        if layer.input_quant.kind == "bipolar":
            raise ValueError("bipolar input quantizers have no frozen form yet")
        with torch.no_grad():
            lo, hi = layer.input_quant.code_range
            s_x = layer.input_quant.step().reshape(())
            s_w, bias = layer.folded_scale_bias()
            self.register_buffer("in_step", s_x.clone())
            self.lo, self.hi = float(lo), float(hi)
            self.register_buffer("weight_codes", layer.weight_quant.codes(layer.weight).clone())
            shape = [1, -1, 1, 1] if isinstance(layer, QConv2d) else [1, -1]
            self.register_buffer("scale", (s_x * s_w).reshape(shape).clone())
            self.register_buffer("bias", bias.reshape(shape).clone())
        self.conv = isinstance(layer, QConv2d)
        if self.conv:
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        codes = torch.clamp(torch.round(x / self.in_step), self.lo, self.hi)
        if self.conv:
            acc = F.conv2d(codes, self.weight_codes, None, self.stride, self.padding,
                           self.dilation, self.groups)
        else:
            acc = F.linear(codes, self.weight_codes)
        return acc * self.scale + self.bias


def freeze(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (eval mode): same outputs, constant quantization numbers."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, (QConv2d, QLinear)):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, FrozenQuantLayer(module))
    return model
