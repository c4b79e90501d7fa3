# SPDX-License-Identifier: Apache-2.0
"""Quantized conv / linear layers that own their input and weight quantizers.

The forward pass is the compiled kernel's arithmetic, so the two agree bit for bit::

    acc = conv(codes(x), codes(W))          # integer-valued float32: exact below 2^24
    y   = acc * m + b                       # m = s_x * s_w[oc] (float32), then + bias

With ``bn=True`` a ``BatchNorm2d`` follows the conv: training uses its batch statistics on ``y``;
inference folds it into the channel scale and bias (``s_w ← s_w · γ/σ``, ``b ← (b - μ) γ/σ + β``,
each a float32 operation), which is also what :func:`~tvm_qnn.nn.export_onnx` writes, so the
compiled model equals the eval-mode forward exactly, with any step size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import Quantizer


class _QuantizedMixin:
    input_quant: Quantizer
    weight_quant: Quantizer
    bn: nn.BatchNorm2d | nn.BatchNorm1d | None

    def _setup(self, weight_bits: int, act_bits: int, act_kind: str, weight_kind: str,
               pow2: bool, bn: bool, bn_cls):
        channels = self.weight.shape[0]
        self.weight_quant = Quantizer(weight_bits, weight_kind, channels=channels, pow2=pow2)
        self.input_quant = Quantizer(act_bits, act_kind, pow2=pow2)
        self.bn = bn_cls(channels) if bn else None

    def folded_scale_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel weight step and bias with an inference-mode BatchNorm folded in."""
        s_w = self.weight_quant.step().expand(self.weight.shape[0])
        bias = self.bias if self.bias is not None else torch.zeros_like(s_w)
        if self.bn is None:
            return s_w, bias
        g = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        return s_w * g, (bias - self.bn.running_mean) * g + self.bn.bias

    def _channel(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape([1, -1] + [1] * (ndim - 2))

    def _finish(self, acc: torch.Tensor) -> torch.Tensor:
        s_x = self.input_quant.step()
        if self.training and self.bn is not None:
            y = acc * self._channel(s_x * self.weight_quant.step().expand(acc.shape[1]),
                                    acc.dim())
            if self.bias is not None:
                y = y + self._channel(self.bias, acc.dim())
            return self.bn(y)
        s_w, bias = self.folded_scale_bias()
        return acc * self._channel(s_x * s_w, acc.dim()) + self._channel(bias, acc.dim())


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
    pow2 : bool
        Power-of-two steps (then the export is exact for every ONNX runtime too).
    bn : bool
        A BatchNorm after the conv, folded into the layer at inference.
    """

    def __init__(self, *args, weight_bits: int = 2, act_bits: int = 2,
                 act_kind: str = "unsigned", weight_kind: str = "bipolar", pow2: bool = True,
                 bn: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(weight_bits, act_bits, act_kind, weight_kind, pow2, bn, nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        acc = F.conv2d(self.input_quant.codes(x), self.weight_quant.codes(self.weight), None,
                       self.stride, self.padding, self.dilation, self.groups)
        return self._finish(acc)


class QLinear(_QuantizedMixin, nn.Linear):
    """``nn.Linear`` with an M-bit input quantizer and a K-bit per-channel weight quantizer."""

    def __init__(self, *args, weight_bits: int = 2, act_bits: int = 2,
                 act_kind: str = "unsigned", weight_kind: str = "bipolar", pow2: bool = True,
                 bn: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(weight_bits, act_bits, act_kind, weight_kind, pow2, bn, nn.BatchNorm1d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        acc = F.linear(self.input_quant.codes(x), self.weight_quant.codes(self.weight))
        return self._finish(acc)
