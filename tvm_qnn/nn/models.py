# SPDX-License-Identifier: Apache-2.0
"""Model definitions used by the training script and the accuracy table."""

from __future__ import annotations

import re

from torch import nn

from ..errors import InvalidArgumentError
from .convert import quantize_model

DEFAULT_CNV_CHANNELS = (32, 32, 64, 64, 128, 128)


def cnv(channels=DEFAULT_CNV_CHANNELS, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A small VGG-like CNN in the spirit of Brevitas' CNV (float).

    Three blocks of two 3×3 conv + BatchNorm + ReLU (max-pool after the first two), global
    average pooling and a linear classifier. Works for 28×28 (Fashion-MNIST) and 8×8 inputs.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for i, cout in enumerate(channels):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU()]
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def parse_precision(precision: str) -> tuple[int, int] | None:
    """``"w2a2"`` → (2, 2); ``"fp32"`` → None."""
    if precision.lower() == "fp32":
        return None
    m = re.fullmatch(r"w([1-8])a([1-8])", precision.lower())
    if not m:
        raise InvalidArgumentError(f"precision {precision!r}: fp32 or wKaM with 1..8 bits, "
                                   "e.g. w2a2")
    return int(m.group(1)), int(m.group(2))


def model_name(precision: str) -> str:
    """Brevitas-style name: ``CNV_2W2A`` (``CNV_FP32`` for the float model)."""
    bits = parse_precision(precision)
    return "CNV_FP32" if bits is None else f"CNV_{bits[0]}W{bits[1]}A"


def build(precision: str, channels=DEFAULT_CNV_CHANNELS, num_classes: int = 10,
          in_channels: int = 1, first_last_bits: int = 8) -> nn.Module:
    """The CNV at ``precision``: float, or quantized with first/last layers at 8 bits."""
    model = cnv(channels, num_classes, in_channels)
    bits = parse_precision(precision)
    if bits is None:
        return model
    return quantize_model(model, weight_bits=bits[0], act_bits=bits[1],
                          first_last_bits=first_last_bits)
