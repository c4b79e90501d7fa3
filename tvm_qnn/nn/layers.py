# SPDX-License-Identifier: Apache-2.0
"""Quantized conv / linear layers that own their input and weight quantizers.

``QConv2d(x) = conv(Qa(x), Qw(W)) + b`` where ``b`` is snapped to the accumulator grid
``s_x s_w`` (an int32 bias, as ONNX QLinearConv has): with power-of-two steps every product and
partial sum is then exact in float32, so the ONNX export of the layer computes exactly what
PyTorch computes, whatever order the convolution adds in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import Quantizer


class _QuantizedMixin:
    input_quant: Quantizer
    weight_quant: Quantizer

    def _setup(self, weight_bits: int, act_bits: int, act_kind: str, weight_kind: str,
               pow2: bool):
        self.weight_quant = Quantizer(weight_bits, weight_kind, channels=self.weight.shape[0],
                                      pow2=pow2)
        self.input_quant = Quantizer(act_bits, act_kind, pow2=pow2)

    def quantized_operands(self, x: torch.Tensor):
        """(fake-quantized input, fake-quantized weight, bias on the s_x·s_w grid or None)."""
        xq = self.input_quant(x)
        wq = self.weight_quant(self.weight)
        bias = self.bias
        if bias is not None:
            grid = self.input_quant.step() * self.weight_quant.step()
            bias = torch.round(bias / grid) * grid
            bias = self.bias + (bias - self.bias).detach()  # straight through
        return xq, wq, bias

    def bits_repr(self) -> str:
        return (f"W{self.weight_quant.bits}{self.weight_quant.kind[0]}"
                f"A{self.input_quant.bits}{self.input_quant.kind[0]}")


class QConv2d(_QuantizedMixin, nn.Conv2d):
    """``nn.Conv2d`` with an M-bit input quantizer and a K-bit per-channel weight quantizer.

    Parameters (beyond ``nn.Conv2d``)
    ----------
    weight_bits, act_bits : int
        K and M.
    act_kind : str
        ``unsigned`` after a ReLU (default), ``symmetric`` for signed inputs.
    weight_kind : str
        ``bipolar`` (the paper's {-1,+1} encoding, default) or ``symmetric``.
    """

    def __init__(self, *args, weight_bits: int = 2, act_bits: int = 2,
                 act_kind: str = "unsigned", weight_kind: str = "bipolar", pow2: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(weight_bits, act_bits, act_kind, weight_kind, pow2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        xq, wq, bias = self.quantized_operands(x)
        return F.conv2d(xq, wq, bias, self.stride, self.padding, self.dilation, self.groups)


class QLinear(_QuantizedMixin, nn.Linear):
    """``nn.Linear`` with an M-bit input quantizer and a K-bit per-channel weight quantizer."""

    def __init__(self, *args, weight_bits: int = 2, act_bits: int = 2,
                 act_kind: str = "unsigned", weight_kind: str = "bipolar", pow2: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(weight_bits, act_bits, act_kind, weight_kind, pow2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        xq, wq, bias = self.quantized_operands(x)
        return F.linear(xq, wq, bias)
