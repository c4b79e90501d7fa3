# SPDX-License-Identifier: Apache-2.0
"""Turn a float ``nn.Module`` into a quantized one, and start low-bit models from high-bit ones."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import QConv2d, QLinear
from .quantizers import Quantizer


def _swap(layer: nn.Module, weight_bits: int, act_bits: int, act_kind: str, pow2: bool,
          bn: bool):
    common = dict(weight_bits=weight_bits, act_bits=act_bits, act_kind=act_kind, pow2=pow2,
                  bn=bn, bias=layer.bias is not None)
    if isinstance(layer, nn.Conv2d):
        new = QConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                      stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                      groups=layer.groups, **common)
    else:
        new = QLinear(layer.in_features, layer.out_features, **common)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def quantize_model(model: nn.Module, weight_bits: int = 2, act_bits: int = 2, *,
                   first_last_bits: int | None = 8, input_kind: str = "symmetric",
                   pow2: bool = True, bn: bool = False) -> nn.Module:
    """A copy of ``model`` with every ``Conv2d`` / ``Linear`` replaced by its quantized twin.

    Parameters
    ----------
    weight_bits, act_bits : int
        K and M of the hidden layers (their inputs are ``unsigned``: they follow a ReLU).
    first_last_bits : int or None
        Bits of weights and inputs of the first and the last layer (the usual policy keeps them
        at higher precision); None treats them like the others.
    input_kind : str
        Quantizer kind of the first layer's input (``symmetric`` for signed images).
    pow2 : bool
        Power-of-two steps (then every ONNX runtime is exact on the export, not only tvm_qnn).
    bn : bool
        Give every layer but the last a BatchNorm (folded at inference). A ``BatchNorm`` that
        directly follows a conv/linear in an ``nn.Sequential`` is always absorbed, statistics
        included.
    """
    model = copy.deepcopy(model)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, (QConv2d, QLinear))]
    if not targets:
        raise ValueError("the model has no Conv2d or Linear layer to quantize")
    for index, (name, layer) in enumerate(targets):
        last = index == len(targets) - 1
        edge = (index == 0 or last) and first_last_bits is not None
        wb = first_last_bits if edge else weight_bits
        ab = first_last_bits if edge else act_bits
        kind = input_kind if index == 0 else "unsigned"
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        follower = _next_in_sequential(parent, attr)
        absorb = isinstance(follower, (nn.BatchNorm2d, nn.BatchNorm1d))
        new = _swap(layer, wb, ab, kind, pow2, bn=absorb or (bn and not last))
        if absorb:
            new.bn.load_state_dict(follower.state_dict())
            setattr(parent, str(int(attr) + 1), nn.Identity())
        setattr(parent, attr, new)
    return model


def _next_in_sequential(parent: nn.Module, attr: str) -> nn.Module | None:
    if isinstance(parent, nn.Sequential) and attr.isdigit() and int(attr) + 1 < len(parent):
        return parent[int(attr) + 1]
    return None


def init_from_higher_bit(model: nn.Module, state_dict: dict) -> nn.Module:
    """Start ``model`` (fewer bits) from a trained higher-bit model's weights.

    The float weights and biases are copied; the quantizer steps are re-initialised from the
    statistics of the first batch, since their bit widths differ (the paper's W4A4 → W2A2 →
    W1A1 schedule).
    """
    own = model.state_dict()
    copied = {k: v for k, v in state_dict.items()
              if k in own and ".log_step" not in k and not k.endswith(".initialized")
              and own[k].shape == v.shape}
    missing = [k for k in own if k not in copied and ".log_step" not in k
               and not k.endswith(".initialized")]
    if missing:
        raise ValueError(f"the higher-bit state has no matching tensors for: {missing}")
    model.load_state_dict(copied, strict=False)
    for m in model.modules():
        if isinstance(m, Quantizer):
            m.initialized.fill_(False)
    return model
