# SPDX-License-Identifier: Apache-2.0
"""The benchmark layer suite (issue 9): the layers every target is measured on."""

from __future__ import annotations

# name -> (kind, in channels / features, out channels / features, spatial size or batch);
# convs are 3x3, stride 1, pad 1, batch 1.
LAYER_SUITE = {
    "conv56": ("conv2d", 64, 64, 56),
    "conv28": ("conv2d", 128, 128, 28),
    "conv14": ("conv2d", 256, 256, 14),
    "conv7": ("conv2d", 512, 512, 7),
    "dense1": ("dense", 4096, 4096, 1),
    "dense64": ("dense", 4096, 4096, 64),
}


def suite_layer(name: str, weight_bits: int, act_bits: int, seed: int = 0):
    """``(QuantizedLayer, input codes)`` of suite layer ``name``, ``weight_bits`` x
    ``act_bits``.

    Convs output ``act_bits``-bit codes (ReLU, then clipped), as a layer inside a network of
    that bit width feeds the next one; dense layers output uint8 codes.
    """
    from .layers import random_layer

    kind, cin, cout, size = LAYER_SUITE[name]
    if kind == "conv2d":
        return random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                            in_channels=cin, out_channels=cout, size=(size, size), seed=seed,
                            out_bits=act_bits)
    return random_layer("dense", act_bits=act_bits, weight_bits=weight_bits, in_channels=cin,
                        out_channels=cout, batch=size, seed=seed)
