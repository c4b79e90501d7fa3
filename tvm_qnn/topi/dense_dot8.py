# SPDX-License-Identifier: Apache-2.0
"""Dense layers on the int8-dot kernel: ``N`` rows as one image, 1 pixel high and ``N`` wide,
of 1×1 convs (:mod:`.dot8_conv`), where the target's cost model sends them there.

``y[n, o] = sum_c x[n, c] w[o, c]`` is the 1×1 conv of the ``[1, C, 1, N]`` image ``x^T``:
the dot kernel reads its input channels-last (``x`` itself) and, writing channels-last, gives
``[1, 1, N, O]`` = ``y``. Measured on Zen 4 running ``x86:haswell`` code (one core, 4096 →
4096, W2A2): 64 rows 1.35× faster than the bit-serial dense, 8 rows 1.06×, 1 row 0.59× (the
byte weights are 4–8 times the bit-planes, and one row reads each once): from 8 rows on.
The table-lookup kernel (:mod:`.lut_conv`) takes them the same way, from one row on where a
layer has several branches (:data:`DENSE_LUT_MIN_BRANCHES`), and at one branch where its few
rows pair the weight nibbles (:func:`~.lut_conv.lut_pairs`).
"""

from __future__ import annotations

from dataclasses import replace

from .layer import LayerPlan, QuantizedLayer, plan_layer
from .layout import Layout
from .lut_conv import lut_pairs
from .thresholds import MAX_THRESHOLDS
from .weights import decompose_weights

#: A dense layer takes the dot kernel (where its branches would) from this many rows on.
DENSE_DOT8_MIN_ROWS = 8
#: A dense layer takes the table-lookup kernel (where the target's lookups take its bit
#: widths) from this many branches on, at any number of rows. Measured (``x86:haswell`` code,
#: one Zen 4 core, 4096 -> 4096, ms, popcounts / lookups): 1 row W1A2 0.087 / 0.075, W2A2
#: 0.174 / 0.144; 4 rows 0.376 / 0.174 and 0.881 / 0.422; 64 rows W1A2 5.78 / 3.22. One
#: branch (W1A1) keeps popcounts: 1 row 0.044 / 0.071, 8 rows 0.343 / 0.450, 64 rows 2.89 /
#: 2.69 (a row reads each weight once, and the lookups' nibble weights are twice the bytes),
#: unless the nibbles pair (up to ``LUT_PAIRED_MAX_POSITIONS`` rows, as many bytes as the
#: bit-planes; measured in :mod:`.lut_conv`: 1 row 0.056 / 0.048, 4 rows 0.231 / 0.139).
DENSE_LUT_MIN_BRANCHES = 2


def dense_as_conv(layer: QuantizedLayer) -> QuantizedLayer:
    """The 1×1 conv over the ``[1, C, 1, N]`` image of a dense layer's ``[N, C]`` rows."""
    rows, features = layer.input_shape
    return replace(layer, kind="conv2d", input_shape=(1, features, 1, rows),
                   weight=layer.weight.reshape(layer.weight.shape + (1, 1)), strides=(1, 1),
                   pads=(0, 0, 0, 0), dilation=(1, 1), groups=1)


def plan_kernel(layer: QuantizedLayer, layout: Layout,
                max_thresholds: int = MAX_THRESHOLDS) -> LayerPlan:
    """:func:`~.layer.plan_layer`, except that a dense layer the dot kernel (from
    :data:`DENSE_DOT8_MIN_ROWS` rows) or the table-lookup kernel (:mod:`.lut_conv`, from
    :data:`DENSE_LUT_MIN_BRANCHES` branches, or any where the layout forces lookups) should
    run is planned as :func:`dense_as_conv` (then ``plan.layer.kind`` is ``"conv2d"``); one
    branch takes lookups where its rows pair the nibbles (:func:`~.lut_conv.lut_pairs`)."""
    if layer.kind != "dense":
        return plan_layer(layer, layout, max_thresholds)
    rows, wbits = layer.input_shape[0], decompose_weights(layer.weight).bits
    branches = layer.act_bits * wbits
    dot8 = rows >= DENSE_DOT8_MIN_ROWS and layout.uses_dot8_kernel(branches)
    lut = layout.uses_lut_kernel(wbits, layer.act_bits) and (
        branches >= DENSE_LUT_MIN_BRANCHES or layout.lut_max_branches is None
        or lut_pairs(layer.out_channels, rows))
    if dot8 or lut:
        plan = plan_layer(dense_as_conv(layer), layout, max_thresholds)
        # The lookups win where they fit, as for convs; the dot kernel only from 8 rows.
        if plan.kernel == "lut" or (plan.kernel == "int8-dot" and dot8):
            return plan
    return plan_layer(layer, layout, max_thresholds)


__all__ = ["DENSE_DOT8_MIN_ROWS", "DENSE_LUT_MIN_BRANCHES", "dense_as_conv", "plan_kernel"]
