# SPDX-License-Identifier: Apache-2.0
"""Per-layer accelerator reports: run one layer on the simulator, check it, time it.

``tvm-qnn sim`` prints these for the benchmark layer suite or for the layers of a model.
"""

from __future__ import annotations

import numpy as np

from ... import reference
from ...bitserial_accel import AccelConfig
from ...topi.layer import QuantizedLayer, plan_layer
from ...topi.weights import decompose_weights
from .driver import AccelLayer
from .lower import lower_layer


def reference_p(layer: QuantizedLayer, codes: np.ndarray, pad_code: int) -> np.ndarray:
    """The branch sums ``P`` of ``layer`` for input ``codes``, from integer arithmetic.

    ``P = sum_taps (c_w u + c_x v - 2 u v)`` (u activation, v weight codes, padded taps
    holding ``pad_code``), since ``a xor b = a + b - 2ab`` bit by bit (DESIGN.md §1). Returns
    ``[N, OC, OH, OW]`` (dense: ``[B, OC]``).
    """
    planes = decompose_weights(layer.weight)
    v = planes.codes
    u = layer.unsigned_codes(codes)
    c_x, c_w = (1 << layer.act_bits) - 1, (1 << planes.bits) - 1
    zero = np.zeros(layer.out_channels, np.int64)
    if layer.kind == "dense":
        uv = reference.dense_accumulate(u, v, 0, zero)
        return c_w * u.sum(axis=1)[:, None] + c_x * v.sum(axis=1)[None, :] - 2 * uv

    def window_sums(w):  # sum over each window of (u - pad) * w, plus pad * sum(w)
        acc = reference.conv2d_accumulate(u, w, pad_code, np.zeros(w.shape[0], np.int64),
                                          layer.strides, layer.pads, layer.dilation, 1)
        return acc + pad_code * w.reshape(w.shape[0], -1).sum(axis=1)[None, :, None, None]

    su = window_sums(np.ones((1,) + v.shape[1:], np.int64))
    uw = v.reshape(v.shape[0], -1).sum(axis=1)[None, :, None, None]
    return c_w * su + c_x * uw - 2 * window_sums(v)


def simulate_layer(layer: QuantizedLayer, codes: np.ndarray,
                   config: AccelConfig | None = None) -> dict:
    """Lower ``layer`` for ``config``, run it once on ``codes`` and report.

    The :meth:`~tvm_qnn.target.accel.driver.AccelLayer.profile` dict plus ``exact``: whether
    the accelerator's P equals :func:`reference_p`. Raises ``NotOffloadable`` with the
    reason when the layer does not fit the accelerator.
    """
    config = config or AccelConfig.load()
    plan = plan_layer(layer)
    lowered = lower_layer(plan, config)
    acc = AccelLayer(layer.name, layer.kind, f"W{plan.weight_bits}A{layer.act_bits}", lowered)
    p = acc(codes)
    oc = layer.out_channels
    if layer.kind == "dense":
        got = p.reshape(p.shape[0], -1)[:, :oc]
    else:
        got = p.reshape(p.shape[:3] + (-1,))[..., :oc].transpose(0, 3, 1, 2)
    row = acc.profile()
    row["exact"] = bool(np.array_equal(got, reference_p(layer, codes, plan.pad_code)))
    return row
