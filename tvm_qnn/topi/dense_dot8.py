# SPDX-License-Identifier: Apache-2.0
"""Dense layers on the int8-dot kernel: ``N`` rows as one image, 1 pixel high and ``N`` wide,
of 1×1 convs (:mod:`.dot8_conv`), where the target's cost model sends them there.

``y[n, o] = sum_c x[n, c] w[o, c]`` is the 1×1 conv of the ``[1, C, 1, N]`` image ``x^T``:
the dot kernel reads its input channels-last (``x`` itself) and, writing channels-last, gives
``[1, 1, N, O]`` = ``y``. Measured on Zen 4 running ``x86:haswell`` code (one core, 4096 →
4096, W2A2): 64 rows 1.35× faster than the bit-serial dense, 8 rows 1.06×, 1 row 0.59× (the
byte weights are 4–8 times the bit-planes, and one row reads each once): from 8 rows on.
"""

from __future__ import annotations

from dataclasses import replace

from .layer import LayerPlan, QuantizedLayer, plan_layer
from .layout import Layout
from .thresholds import MAX_THRESHOLDS
from .weights import decompose_weights

#: A dense layer takes the dot kernel (where its branches would) from this many rows on.
DENSE_DOT8_MIN_ROWS = 8


def dense_as_conv(layer: QuantizedLayer) -> QuantizedLayer:
    """The 1×1 conv over the ``[1, C, 1, N]`` image of a dense layer's ``[N, C]`` rows."""
    rows, features = layer.input_shape
    return replace(layer, kind="conv2d", input_shape=(1, features, 1, rows),
                   weight=layer.weight.reshape(layer.weight.shape + (1, 1)), strides=(1, 1),
                   pads=(0, 0, 0, 0), dilation=(1, 1), groups=1)


def plan_kernel(layer: QuantizedLayer, layout: Layout,
                max_thresholds: int = MAX_THRESHOLDS) -> LayerPlan:
    """:func:`~.layer.plan_layer`, except that a dense layer the dot kernel should run is
    planned as :func:`dense_as_conv` (then ``plan.layer.kind`` is ``"conv2d"``); where the
    table-lookup kernel takes such a conv (:mod:`.lut_conv`), it runs that."""
    if layer.kind == "dense" and layer.input_shape[0] >= DENSE_DOT8_MIN_ROWS and \
            layout.uses_dot8_kernel(layer.act_bits * decompose_weights(layer.weight).bits):
        plan = plan_layer(dense_as_conv(layer), layout, max_thresholds)
        if plan.kernel in ("int8-dot", "lut"):  # the lookups win where they fit, as for convs
            return plan
    return plan_layer(layer, layout, max_thresholds)


__all__ = ["DENSE_DOT8_MIN_ROWS", "dense_as_conv", "plan_kernel"]
